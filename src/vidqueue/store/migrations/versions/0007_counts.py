"""Counts the store keeps as it goes: requests per (organisation, model, status), and queued rows per priority in
buckets of sequence numbers at two sizes (256 and 16,384).

A list's `total` was a count over the organisation's index (1.2 ms at 0 rows, 4.3 ms at 100k on SQLite), and queue
positions came from a snapshot of the whole queue re-read every few seconds (68 ms at 50k queued rows, and reads
that met a refresh waited on it). Now triggers keep both counts in the same statement as every insert, status change
and delete, so a total is a sum over a handful of rows, and a position is a sum over the large buckets ahead, the
small ones ahead within its large bucket (at most 64), and a count of at most 256 index entries in its own small
bucket: exact, and nearly the same cost at any size (store/positions.py).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Level 0: 256 sequence numbers a bucket; level 1: 16,384 (64 of level 0). store/positions.py reads the same.
LEVEL_BITS = (8, 14)

_COUNT_UP = (
    "INSERT INTO request_counts (org_id, model, status, n) VALUES ({r}.org_id, {r}.model, {r}.status, 1) "
    "ON CONFLICT (org_id, model, status) DO UPDATE SET n = request_counts.n + 1;"
)
_COUNT_DOWN = (
    "UPDATE request_counts SET n = n - 1 WHERE org_id = {r}.org_id AND model = {r}.model AND status = {r}.status;"
)
# SQLite needs a WHERE in an INSERT … SELECT that has an upsert clause (a parsing ambiguity); it is the condition.
_BUCKET_UP = (
    "INSERT INTO queue_buckets (level, priority, bucket, n) SELECT {level}, {r}.priority, {r}.seq >> {bits}, 1 "
    "WHERE {r}.status = 'queued' ON CONFLICT (level, priority, bucket) DO UPDATE SET n = queue_buckets.n + 1;"
)
_BUCKET_DOWN = (
    "UPDATE queue_buckets SET n = n - 1 WHERE {r}.status = 'queued' AND level = {level} "
    "AND priority = {r}.priority AND bucket = {r}.seq >> {bits};"
    "DELETE FROM queue_buckets WHERE {r}.status = 'queued' AND level = {level} "
    "AND priority = {r}.priority AND bucket = {r}.seq >> {bits} AND n <= 0;"
)


def _buckets(template: str, row: str) -> str:
    return "".join(template.format(r=row, level=level, bits=bits) for level, bits in enumerate(LEVEL_BITS))


def _up(row: str) -> str:
    return _COUNT_UP.format(r=row) + _buckets(_BUCKET_UP, row)


def _down(row: str) -> str:
    return _COUNT_DOWN.format(r=row) + _buckets(_BUCKET_DOWN, row)


def upgrade() -> None:
    op.create_table(
        "request_counts",
        sa.Column("org_id", sa.String(128), primary_key=True),
        sa.Column("model", sa.String(128), primary_key=True),
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "queue_buckets",
        sa.Column("level", sa.Integer, primary_key=True),
        sa.Column("priority", sa.Integer, primary_key=True),
        sa.Column("bucket", sa.BigInteger, primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
    )
    op.execute(
        "INSERT INTO request_counts (org_id, model, status, n) "
        "SELECT org_id, model, status, count(*) FROM requests GROUP BY org_id, model, status"
    )
    for level, bits in enumerate(LEVEL_BITS):
        op.execute(
            f"INSERT INTO queue_buckets (level, priority, bucket, n) SELECT {level}, priority, seq >> {bits}, "
            f"count(*) FROM requests WHERE status = 'queued' GROUP BY priority, seq >> {bits}"
        )
    if op.get_bind().dialect.name == "postgresql":
        for table in ("request_counts", "queue_buckets"):
            # A few rows updated on every submit and claim: room on each page for updates in place (HOT), and a
            # vacuum after a few hundred dead versions rather than a fifth of a table this small.
            op.execute(
                f"ALTER TABLE {table} SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0, "
                "autovacuum_vacuum_threshold = 200, autovacuum_analyze_scale_factor = 0, "
                "autovacuum_analyze_threshold = 200)"
            )
        op.execute(
            "CREATE FUNCTION vidqueue_count_requests() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF TG_OP = 'INSERT' THEN {_up('NEW')} "
            f"ELSIF TG_OP = 'DELETE' THEN {_down('OLD')} "
            f"ELSE {_down('OLD')} {_up('NEW')} END IF; RETURN NULL; END $$"
        )
        op.execute(
            "CREATE TRIGGER tr_requests_count_insert AFTER INSERT ON requests FOR EACH ROW "
            "EXECUTE FUNCTION vidqueue_count_requests()"
        )
        op.execute(
            "CREATE TRIGGER tr_requests_count_update AFTER UPDATE OF status ON requests FOR EACH ROW "
            "WHEN (NEW.status IS DISTINCT FROM OLD.status) EXECUTE FUNCTION vidqueue_count_requests()"
        )
        op.execute(
            "CREATE TRIGGER tr_requests_count_delete AFTER DELETE ON requests FOR EACH ROW "
            "EXECUTE FUNCTION vidqueue_count_requests()"
        )
    else:
        op.execute(f"CREATE TRIGGER tr_requests_count_insert AFTER INSERT ON requests BEGIN {_up('NEW')} END")
        op.execute(
            "CREATE TRIGGER tr_requests_count_update AFTER UPDATE OF status ON requests "
            f"WHEN NEW.status IS NOT OLD.status BEGIN {_down('OLD')} {_up('NEW')} END"
        )
        op.execute(f"CREATE TRIGGER tr_requests_count_delete AFTER DELETE ON requests BEGIN {_down('OLD')} END")


def downgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    on = " ON requests" if pg else ""
    for name in ("tr_requests_count_delete", "tr_requests_count_update", "tr_requests_count_insert"):
        op.execute(f"DROP TRIGGER IF EXISTS {name}{on}")
    if pg:
        op.execute("DROP FUNCTION IF EXISTS vidqueue_count_requests()")
    op.drop_table("queue_buckets")
    op.drop_table("request_counts")
