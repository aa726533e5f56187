"""What only PostgreSQL does for the store: the driver URL, the fair SKIP LOCKED claim, and LISTEN/NOTIFY wake-ups."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import sqlalchemy as sa

log = logging.getLogger("vidqueue.store")

#: The channel a submit (or a requeue) notifies, with the model id as payload.
CHANNEL = "vidqueue_queued"

# One claim, fair across organisations, in one statement:
# - `orgs` lists the organisations with queued rows by a loose index scan (one index probe per organisation,
#   however long its queue);
# - for each, the lateral subquery locks its first claimable row (priority, then age), skipping rows another
#   claim holds, so concurrent claims never wait on each other;
# - the organisation with the fewest requests processing wins, then priority, then age.
_CLAIM = """
WITH RECURSIVE orgs(org_id) AS (
    (SELECT org_id FROM requests WHERE status = 'queued' ORDER BY org_id LIMIT 1)
  UNION ALL
    SELECT (SELECT r.org_id FROM requests r
            WHERE r.status = 'queued' AND r.org_id > orgs.org_id ORDER BY r.org_id LIMIT 1)
    FROM orgs WHERE orgs.org_id IS NOT NULL
),
busy AS (
    SELECT org_id, count(*) AS n FROM requests WHERE status = 'processing' GROUP BY org_id
),
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
    {cap}
    ORDER BY coalesce(busy.n, 0), c.priority DESC, c.seq
    LIMIT 1
)
UPDATE requests SET
    status = 'processing', lease_owner = :worker, qworker_id = :worker, lease_expires_at = :expires,
    attempts = requests.attempts + 1, processing_at = :now, updated_at = :now, progress = 0
FROM pick
WHERE requests.request_id = pick.request_id AND requests.status = 'queued'
RETURNING requests.*
"""
_CAP = "WHERE (SELECT count(*) FROM requests p WHERE p.status = 'processing' AND p.model = ANY(:models)) < :limit"
CLAIM = sa.text(_CLAIM.format(cap=""))
CLAIM_CAPPED = sa.text(_CLAIM.format(cap=_CAP))
NOTIFY = sa.text(f"SELECT pg_notify('{CHANNEL}', :model)")
# Capped claims of one set of models (an upstream's lane) take turns, so the in-flight count they check is exact.
CAP_LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtext('vidqueue-cap:' || :lane))")


def driver_url(url: str) -> str:
    """The SQLAlchemy URL with psycopg 3 as the driver for a plain ``postgresql://`` (or ``postgres://``) URL."""
    parsed = sa.make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """The URL as libpq (psycopg.connect) reads it: no SQLAlchemy driver name."""
    return sa.make_url(driver_url(url)).set(drivername="postgresql").render_as_string(hide_password=False)


class Listener:
    """A thread that LISTENs on the queue's channel and calls back for every notification.

    It keeps its own connection, outside the pool, and reconnects with backoff when the database goes away;
    after every (re)connect it calls back once, since notifications sent meanwhile are lost.
    """

    def __init__(self, url: str, on_notify: Callable[[str], None]) -> None:
        self._url = libpq_url(url)
        self._on_notify = on_notify
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-listen", daemon=True)
        self.connected = threading.Event()

    def start(self) -> None:
        """Start listening in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop listening (within about a second)."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg

        backoff = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    backoff = 0.1
                    self._on_notify("")
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._on_notify(note.payload)
            except psycopg.Error as exc:
                self.connected.clear()
                log.warning("listening for new requests failed (polling meanwhile): %s", exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
