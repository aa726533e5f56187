"""Queue positions from the counts the store keeps (migration 0007), exact and the same cost at any queue length.

A queued request's position is one plus the queued rows claimed before it in priority order: every row of a higher
priority, and those of its own priority with a lower ``seq``. The triggers keep ``queue_buckets``: queued rows per
priority in buckets of 256 sequence numbers (level 0) and of 16,384 (level 1, 64 small ones). The rows ahead are
the large buckets ahead (61 rows at a million sequence numbers), the small ones ahead within the request's large
bucket (at most 64), and a count, from the claim index, of at most 256 entries in its own small bucket. Nothing
scans the queue, and no read waits on a refresh.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import sqlalchemy as sa

SMALL_BITS, LARGE_BITS = 8, 14  # as in migration 0007 (levels 0 and 1)
_BY_STATUS = "INDEXED BY ix_requests_claim"  # SQLite: count a small bucket from the claim index

_ONE = """SELECT {i} AS i,
    (SELECT coalesce(sum(n), 0) FROM queue_buckets
     WHERE level = 1 AND (priority > :p{i} OR (priority = :p{i} AND bucket < :B{i})))
  + (SELECT coalesce(sum(n), 0) FROM queue_buckets
     WHERE level = 0 AND priority = :p{i} AND bucket >= :b0{i} AND bucket < :b{i})
  + (SELECT count(*) FROM requests {by_status}
     WHERE status = 'queued' AND priority = :p{i} AND seq >= :lo{i} AND seq < :s{i})
  + 1 AS position"""


def row_position_sql(row: str, dialect: str = "sqlite") -> str:
    """The position of row ``row`` of an enclosing ``SELECT … FROM requests``, or NULL when it is not queued: a read
    of requests answers their positions in the same statement."""
    # SQLite is told which index counts the small bucket; PostgreSQL's planner finds it.
    return _ROW_POSITION.format(row=row, by_status=_BY_STATUS if dialect == "sqlite" else "")


_ROW_POSITION = f"""CASE WHEN {{row}}.status = 'queued' THEN
    (SELECT coalesce(sum(b.n), 0) FROM queue_buckets b
     WHERE b.level = 1
       AND (b.priority > {{row}}.priority
            OR (b.priority = {{row}}.priority AND b.bucket < ({{row}}.seq >> {LARGE_BITS}))))
  + (SELECT coalesce(sum(b.n), 0) FROM queue_buckets b
     WHERE b.level = 0 AND b.priority = {{row}}.priority
       AND b.bucket >= (({{row}}.seq >> {LARGE_BITS}) << {LARGE_BITS - SMALL_BITS})
       AND b.bucket < ({{row}}.seq >> {SMALL_BITS}))
  + (SELECT count(*) FROM requests q {{by_status}}
     WHERE q.status = 'queued' AND q.priority = {{row}}.priority
       AND q.seq >= (({{row}}.seq >> {SMALL_BITS}) << {SMALL_BITS}) AND q.seq < {{row}}.seq)
  + 1 END"""

#: The position of a row just inserted (SQLite, inside the insert's transaction; one ``?``: its priority).
NEWEST_POSITION_SQL = "SELECT coalesce(sum(n), 0) FROM queue_buckets WHERE level = 1 AND priority >= ?"

# PostgreSQL: one text for any number of rows (arrays in, one row out per element), so the driver prepares it once
# per connection and no read pays for planning; a UNION of N parts took longer to plan than to run.
_PG = f"""SELECT q.i - 1 AS i,
    (SELECT coalesce(sum(b.n), 0) FROM queue_buckets b
     WHERE b.level = 1 AND (b.priority > q.p OR (b.priority = q.p AND b.bucket < (q.s >> {LARGE_BITS}))))
  + (SELECT coalesce(sum(b.n), 0) FROM queue_buckets b
     WHERE b.level = 0 AND b.priority = q.p AND b.bucket >= ((q.s >> {LARGE_BITS}) << {LARGE_BITS - SMALL_BITS})
       AND b.bucket < (q.s >> {SMALL_BITS}))
  + (SELECT count(*) FROM requests r
     WHERE r.status = 'queued' AND r.priority = q.p
       AND r.seq >= ((q.s >> {SMALL_BITS}) << {SMALL_BITS}) AND r.seq < q.s)
  + 1 AS position
FROM unnest(CAST(:ps AS integer[]), CAST(:ss AS bigint[])) WITH ORDINALITY AS q(p, s, i)"""


@cache
def _sql(sqlite: bool, n: int) -> str:
    if not sqlite:
        return _PG
    # SQLite plans in microseconds: a UNION of one part per row, each pinned to the claim index.
    return "\nUNION ALL\n".join(_ONE.format(i=i, by_status=_BY_STATUS) for i in range(n))


def position_sql(dialect: str, n: int) -> str:
    """The text of one statement answering (i, position) for ``n`` queued rows; parameters from ``position_params``.

    Named ``:name`` parameters, which both SQLAlchemy's ``text`` and the sqlite3 driver bind as they are.
    """
    return _sql(dialect == "sqlite", n)


def position_statement(dialect: str, n: int) -> sa.TextClause:
    """``position_sql`` as an SQLAlchemy statement."""
    return sa.text(position_sql(dialect, n))


def position_params(dialect: str, rows: list[tuple[int, int]]) -> dict[str, Any]:
    """The parameters of ``position_sql`` for (priority, seq) rows, in order."""
    if dialect != "sqlite":
        return {"ps": [priority for priority, _ in rows], "ss": [seq for _, seq in rows]}
    params: dict[str, Any] = {}
    for i, (priority, seq) in enumerate(rows):
        large, small = seq >> LARGE_BITS, seq >> SMALL_BITS
        first_small = large << (LARGE_BITS - SMALL_BITS)  # the first small bucket of the large one
        params.update(
            {
                f"p{i}": priority,
                f"B{i}": large,
                f"b0{i}": first_small,
                f"b{i}": small,
                f"lo{i}": small << SMALL_BITS,
                f"s{i}": seq,
            }
        )
    return params
