"""The admission read: what a submit's limits are checked against, in one statement on SQLite and PostgreSQL.

Every part walks an index and stops early: the organisation's newest rows from ``ix_requests_org_seq`` (as many as
its per-minute limit), its queued rows from the partial index of queued rows and its processing ones from the
claim index, and the queue's queued rows from the partial index; each count stops at its cap, so a long history
or a huge queue costs no more than the limit it is checked against.
"""

from __future__ import annotations

import sqlalchemy as sa

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
