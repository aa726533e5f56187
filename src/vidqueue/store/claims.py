"""The claim statements: fair across organisations (fewest processing first), then priority, then age.

One statement per claim, for PostgreSQL and SQLite alike in shape: the organisations with queued rows come from a
loose index scan of the partial index of queued rows (one probe per organisation, however long its queue), each
organisation's first claimable row from the same index, and the busy counts from the few rows processing. No
claim sorts the whole queue, and none depends on the planner's statistics to avoid it.
"""

from __future__ import annotations

import sqlalchemy as sa

from vidqueue.store.schema import requests

_ORGS = """
orgs(org_id) AS (
    SELECT (SELECT org_id FROM requests {queued} WHERE status = 'queued' ORDER BY org_id LIMIT 1)
  UNION ALL
    SELECT (SELECT r.org_id FROM requests r {queued}
            WHERE r.status = 'queued' AND r.org_id > orgs.org_id ORDER BY r.org_id LIMIT 1)
    FROM orgs WHERE orgs.org_id IS NOT NULL
),
busy AS (
    SELECT org_id, count(*) AS n FROM requests {by_status} WHERE status = 'processing' GROUP BY org_id
)"""

# What a claim writes, on either database.
_CLAIMED = """
    status = 'processing', lease_owner = :worker, qworker_id = :worker, lease_expires_at = :expires,
    attempts = attempts + 1, processing_at = :now, updated_at = :now, progress = 0"""

_CAP = "WHERE (SELECT count(*) FROM requests p {by_status} WHERE p.status = 'processing' AND p.model {models}) < :limit"

# PostgreSQL: each organisation's first row is locked with SKIP LOCKED, so concurrent claims never wait on each
# other and never take the same row.
_PG = f"""
WITH RECURSIVE {_ORGS},
pick AS (
    SELECT c.request_id FROM orgs
    CROSS JOIN LATERAL (
        SELECT q.request_id, q.priority, q.seq FROM requests q
        WHERE q.status = 'queued' AND q.org_id = orgs.org_id AND q.model = ANY(:models)
        ORDER BY q.priority DESC, q.seq
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    ) c
    LEFT JOIN busy ON busy.org_id = orgs.org_id
    {{cap}}
    ORDER BY coalesce(busy.n, 0), c.priority DESC, c.seq
    LIMIT 1
)
UPDATE requests SET {_CLAIMED}
FROM pick
WHERE requests.request_id = pick.request_id AND requests.status = 'queued'
RETURNING requests.*
"""

# SQLite runs one writer at a time (the store begins IMMEDIATE), so no row locks are needed.
_SQLITE = f"""
WITH RECURSIVE {_ORGS},
cand AS (
    SELECT orgs.org_id AS org_id,
        (SELECT q.seq FROM requests q {{queued}}
         WHERE q.status = 'queued' AND q.org_id = orgs.org_id AND q.model IN :models
         ORDER BY q.priority DESC, q.seq LIMIT 1) AS seq
    FROM orgs WHERE orgs.org_id IS NOT NULL
),
pick AS (
    SELECT c.seq FROM cand JOIN requests c ON c.seq = cand.seq
    LEFT JOIN busy ON busy.org_id = cand.org_id
    {{cap}}
    ORDER BY coalesce(busy.n, 0), c.priority DESC, c.seq
    LIMIT 1
)
UPDATE requests SET {_CLAIMED}
WHERE seq = (SELECT seq FROM pick) AND status = 'queued'
RETURNING *
"""

_MODELS: sa.BindParameter[list[str]] = sa.bindparam("models", expanding=True)


def _statement(template: str, models_in: str, capped: bool, sqlite: bool) -> sa.TextualSelect:
    # SQLite plans from statistics that are often stale for a queue (taken when every row was queued, say), and
    # then scans the table; INDEXED BY pins each lookup to its index.
    indexes = {
        "queued": "INDEXED BY ix_requests_queued" if sqlite else "",
        "by_status": "INDEXED BY ix_requests_claim" if sqlite else "",
    }
    cap = _CAP.format(models=models_in, **indexes) if capped else ""
    text = sa.text(template.format(cap=cap, **indexes))
    if sqlite:
        text = text.bindparams(_MODELS)
    # Typed result columns: JSON comes back decoded, as from the store's other statements.
    return text.columns(*requests.c)


_STATEMENTS = {
    ("postgresql", False): _statement(_PG, "= ANY(:models)", False, sqlite=False),
    ("postgresql", True): _statement(_PG, "= ANY(:models)", True, sqlite=False),
    ("sqlite", False): _statement(_SQLITE, "IN :models", False, sqlite=True),
    ("sqlite", True): _statement(_SQLITE, "IN :models", True, sqlite=True),
}

#: Capped claims of one set of models (an upstream's lane) take turns on PostgreSQL, so the count they check is
#: exact (SQLite needs none: it has one writer at a time).
CAP_LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtext('vidqueue-cap:' || :lane))")


def claim_statement(dialect: str, *, capped: bool) -> sa.TextualSelect:
    """The claim for this database; parameters: models, worker, expires, now (and limit when ``capped``)."""
    return _STATEMENTS[(dialect, capped)]
