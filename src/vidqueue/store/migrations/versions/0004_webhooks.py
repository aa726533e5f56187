"""Webhooks: per-organisation signing secrets, a deliveries outbox filled by triggers, and the retention index.

The triggers write a delivery row in the same statement as every status change of a request that has a
callback_url (and at its insert, for "queued"), carrying a snapshot of the row. No code path, present or future,
can change a status without its delivery being stored first, and a crash cannot separate the two.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The columns of the request a webhook shows (see api.present.present_request), snapshotted at the change.
_SNAPSHOT = (
    "seq",
    "request_id",
    "org_id",
    "model",
    "status",
    "priority",
    "payload",
    "outcome",
    "error",
    "error_code",
    "created_at",
    "updated_at",
    "queued_at",
    "processing_at",
    "finished_at",
    "progress",
    "attempts",
    "qworker_id",
)
_JSON_COLUMNS = {"payload", "outcome"}
_COLUMNS = "delivery_id, request_id, org_id, event, url, snapshot, state, created_at, next_attempt_at, attempts"


def _sqlite_values() -> str:
    pairs = ", ".join(f"'{c}', json(NEW.{c})" if c in _JSON_COLUMNS else f"'{c}', NEW.{c}" for c in _SNAPSHOT)
    return (
        "'msg_' || lower(hex(randomblob(16))), NEW.request_id, NEW.org_id, NEW.status, NEW.callback_url, "
        f"json_object({pairs}), 'pending', NEW.updated_at, NEW.updated_at, 0"
    )


def _postgres_values() -> str:
    pairs = ", ".join(f"'{c}', NEW.{c}" for c in _SNAPSHOT)
    return (
        "'msg_' || replace(gen_random_uuid()::text, '-', ''), NEW.request_id, NEW.org_id, NEW.status, "
        f"NEW.callback_url, json_build_object({pairs}), 'pending', NEW.updated_at, NEW.updated_at, 0"
    )


def upgrade() -> None:
    op.create_table(
        "webhook_secrets",
        sa.Column("org_id", sa.String(128), primary_key=True),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("delivery_id", sa.String(64), nullable=False, unique=True),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.String(128), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("snapshot", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_attempt_at", sa.Float, nullable=True),
        sa.Column("last_status_code", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("delivered_at", sa.Float, nullable=True),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", sa.Float, nullable=True),
    )
    op.create_index("ix_webhook_deliveries_request", "webhook_deliveries", ["request_id", "seq"])
    pending = sa.text("state = 'pending'")
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        postgresql_where=pending,
        sqlite_where=pending,
    )
    op.create_index("ix_requests_finished", "requests", ["finished_at"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION vidqueue_webhook_delivery() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"INSERT INTO webhook_deliveries ({_COLUMNS}) VALUES ({_postgres_values()}); RETURN NULL; END $$"
        )
        op.execute(
            "CREATE TRIGGER tr_requests_webhook_insert AFTER INSERT ON requests FOR EACH ROW "
            "WHEN (NEW.callback_url IS NOT NULL) EXECUTE FUNCTION vidqueue_webhook_delivery()"
        )
        op.execute(
            "CREATE TRIGGER tr_requests_webhook_update AFTER UPDATE OF status ON requests FOR EACH ROW "
            "WHEN (NEW.callback_url IS NOT NULL AND NEW.status IS DISTINCT FROM OLD.status) "
            "EXECUTE FUNCTION vidqueue_webhook_delivery()"
        )
    else:
        insert = f"INSERT INTO webhook_deliveries ({_COLUMNS}) VALUES ({_sqlite_values()});"
        op.execute(
            "CREATE TRIGGER tr_requests_webhook_insert AFTER INSERT ON requests "
            f"WHEN NEW.callback_url IS NOT NULL BEGIN {insert} END"
        )
        op.execute(
            "CREATE TRIGGER tr_requests_webhook_update AFTER UPDATE OF status ON requests "
            f"WHEN NEW.callback_url IS NOT NULL AND NEW.status IS NOT OLD.status BEGIN {insert} END"
        )


def downgrade() -> None:
    on = " ON requests" if _pg() else ""
    for name in ("tr_requests_webhook_update", "tr_requests_webhook_insert"):
        op.execute(f"DROP TRIGGER IF EXISTS {name}{on}")
    if _pg():
        op.execute("DROP FUNCTION IF EXISTS vidqueue_webhook_delivery()")
    op.drop_index("ix_requests_finished", table_name="requests")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_secrets")


def _pg() -> bool:
    return op.get_bind().dialect.name == "postgresql"
