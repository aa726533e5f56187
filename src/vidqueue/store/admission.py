"""The admission read: what a submit's limits are checked against, in one statement on SQLite and PostgreSQL.

Every part walks an index and stops early: the organisation's newest rows from ``ix_requests_org_seq`` (as many as
its per-minute limit), its queued rows from the partial index of queued rows and its processing ones from the
claim index, and the queue's queued rows from the partial index; each count stops at its cap, so a long history
or a huge queue costs no more than the limit it is checked against.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from vidqueue.store.records import Admission

_TEMPLATE = """
SELECT
    (SELECT count(*) FROM (SELECT 1 FROM requests {queued}
                           WHERE status = 'queued' AND org_id = :org LIMIT :active_cap) qa)
  + (SELECT count(*) FROM (SELECT 1 FROM requests {by_status}
                           WHERE status = 'processing' AND org_id = :org LIMIT :active_cap) pa) AS active,
    (SELECT count(*) FROM (SELECT 1 FROM requests {queued} WHERE status = 'queued' LIMIT :queued_cap) qq) AS queued,
    r.created_at
FROM (SELECT 1 AS one) base
LEFT JOIN (SELECT created_at FROM requests {by_org}
           WHERE org_id = :org ORDER BY seq DESC LIMIT :recent) r ON 1 = 1
"""


def _statement(sqlite: bool) -> sa.TextClause:
    # As for the claim: INDEXED BY keeps SQLite on these indexes whatever its (often stale) statistics say.
    return sa.text(
        _TEMPLATE.format(
            queued="INDEXED BY ix_requests_queued" if sqlite else "",
            by_status="INDEXED BY ix_requests_claim" if sqlite else "",
            by_org="INDEXED BY ix_requests_org_seq" if sqlite else "",
        )
    )


_STATEMENTS = {"sqlite": _statement(sqlite=True), "postgresql": _statement(sqlite=False)}


def admission_statement(dialect: str) -> sa.TextClause:
    """The admission read for this database; parameters: org, recent, active_cap, queued_cap.

    One row per recent submit (its ``created_at``), or one row with a null ``created_at`` when none is asked for
    or there is none; ``active`` and ``queued`` are the same on every row.
    """
    return _STATEMENTS[dialect]


def admission_from(rows: Sequence[Any], now: float, active_cap: int) -> Admission:
    """The Admission the admission read's rows (attribute or mapping access) say, at the store's ``now``."""
    first = rows[0]
    created = [r["created_at"] if isinstance(r, dict) else r.created_at for r in rows]
    active = first["active"] if isinstance(first, dict) else first.active
    queued = first["queued"] if isinstance(first, dict) else first.queued
    # Queued and processing are each counted up to the cap; their sum is capped here.
    return Admission(
        now=now,
        recent=tuple(sorted((t for t in created if t is not None), reverse=True)),
        active=min(active, active_cap),
        queued=queued,
    )


# Submits of one organisation take turns on PostgreSQL (SQLite runs one writer at a time anyway): its limits are
# read and its request inserted in one transaction holding the lock. A cap across organisations (max_queued) makes
# every submit take one lock instead, and only then, so organisations never wait on each other otherwise.
_ORG_LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtext('vidqueue-admit:' || :org))")
_QUEUE_LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtext('vidqueue-admit-queue'))")


def admission_lock(queue_wide: bool) -> sa.TextClause:
    """The PostgreSQL lock a limited submit holds from its admission read to its commit; parameter: org."""
    return _QUEUE_LOCK if queue_wide else _ORG_LOCK
