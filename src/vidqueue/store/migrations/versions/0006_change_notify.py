"""Status streams on PostgreSQL: a trigger notifies channel ``vidqueue_changed`` with the request id whenever an
UPDATE changes a request's status or progress, whoever makes it (API, worker, recovery sweep, any machine).

API processes LISTEN on that channel to feed their SSE streams (store/changes.py). SQLite has no notifications; its
file watcher needs no schema. The notification goes out at commit, so a listener never reads an uncommitted row.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE FUNCTION vidqueue_request_changed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "PERFORM pg_notify('vidqueue_changed', NEW.request_id); RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER tr_requests_changed AFTER UPDATE OF status, progress ON requests FOR EACH ROW "
        "WHEN (NEW.status IS DISTINCT FROM OLD.status OR NEW.progress IS DISTINCT FROM OLD.progress) "
        "EXECUTE FUNCTION vidqueue_request_changed()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS tr_requests_changed ON requests")
    op.execute("DROP FUNCTION IF EXISTS vidqueue_request_changed()")
