"""The tables, as SQLAlchemy Core metadata; migrations create the same schema."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

requests = sa.Table(
    "requests",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(36), nullable=False, unique=True),
    sa.Column("org_id", sa.String(128), nullable=False),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("outcome", sa.JSON, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("error_code", sa.String(64), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("queued_at", sa.Float, nullable=False),
    sa.Column("processing_at", sa.Float, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Column("progress", sa.Integer, nullable=False, server_default="0"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("qworker_id", sa.String(128), nullable=True),
    sa.Column("lease_owner", sa.String(128), nullable=True),
    sa.Column("lease_expires_at", sa.Float, nullable=True),
    sa.Column("cancel_requested_at", sa.Float, nullable=True),
    sa.Column("engine_state", sa.JSON, nullable=True),
    sa.Column("callback_url", sa.Text, nullable=True),
    sa.Column("input_key", sa.Text, nullable=True),
    # Few indexes: each one is written on every submit. The claim index also serves the recovery sweep and the
    # fairness count (both look at the few rows in processing).
    sa.Index("ix_requests_claim", "status", "priority", "seq"),
    sa.Index("ix_requests_org_seq", "org_id", "seq"),
)
# The fair claim on PostgreSQL: organisations with queued rows by a loose index scan, then each one's first row in
# claim order (priority descending, then age) straight from the index. Partial: it holds only the queued rows, so
# neither a long history of finished rows nor stale planner statistics slow a claim.
_QUEUED = requests.c.status == "queued"
sa.Index(
    "ix_requests_queued",
    requests.c.org_id,
    requests.c.priority.desc(),
    requests.c.seq,
    postgresql_where=_QUEUED,
    sqlite_where=_QUEUED,
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("org_id", sa.String(128), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
)

workers = sa.Table(
    "workers",
    metadata,
    sa.Column("worker_id", sa.String(128), primary_key=True),
    sa.Column("models", sa.JSON, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("seen_at", sa.Float, nullable=False),
    sa.Column("facts", sa.JSON, nullable=True),  # {"compile_seconds": {"model-id": 12.3}, …}, published by the worker
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("org_id", sa.String(128), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("request_id", sa.String(36), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# Webhooks. A delivery row is written by a trigger in the same statement as the status change it reports (see
# migration 0004), so no code path can change a status without its delivery being stored first.
webhook_secrets = sa.Table(
    "webhook_secrets",
    metadata,
    sa.Column("org_id", sa.String(128), primary_key=True),
    # Kept as written: signing needs the secret itself (a hash would not do); the API never answers it.
    sa.Column("secret", sa.String(128), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", sa.String(64), nullable=False, unique=True),
    sa.Column("request_id", sa.String(36), nullable=False),
    sa.Column("org_id", sa.String(128), nullable=False),
    sa.Column("event", sa.String(16), nullable=False),  # the status the request changed to
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("snapshot", sa.JSON, nullable=False),  # the request row as it was at the change
    sa.Column("state", sa.String(16), nullable=False, server_default="pending"),  # pending | delivered | failed
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("next_attempt_at", sa.Float, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_attempt_at", sa.Float, nullable=True),
    sa.Column("last_status_code", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("delivered_at", sa.Float, nullable=True),
    sa.Column("lease_owner", sa.String(128), nullable=True),
    sa.Column("lease_expires_at", sa.Float, nullable=True),
    sa.Index("ix_webhook_deliveries_request", "request_id", "seq"),
)
_PENDING = webhook_deliveries.c.state == "pending"
sa.Index(
    "ix_webhook_deliveries_due",
    webhook_deliveries.c.next_attempt_at,
    postgresql_where=_PENDING,
    sqlite_where=_PENDING,
)
# Retention finds old finished requests by when they finished.
sa.Index("ix_requests_finished", requests.c.finished_at)

# Kept by triggers in the same statement as each insert, status change and delete (migration 0007): a list's total
# is a sum over a few rows, however many requests there are.
request_counts = sa.Table(
    "request_counts",
    metadata,
    sa.Column("org_id", sa.String(128), primary_key=True),
    sa.Column("model", sa.String(128), primary_key=True),
    sa.Column("status", sa.String(16), primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
)
# Queued rows per priority and bucket of sequence numbers, at two sizes (level 0: seq >> 8, level 1: seq >> 14), kept
# by the same triggers: a position is a sum over the buckets ahead plus a count within the request's own bucket.
queue_buckets = sa.Table(
    "queue_buckets",
    metadata,
    sa.Column("level", sa.Integer, primary_key=True),
    sa.Column("priority", sa.Integer, primary_key=True),
    sa.Column("bucket", sa.BigInteger, primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
)
