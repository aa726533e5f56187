"""What only PostgreSQL does for the store: the driver URL and LISTEN/NOTIFY wake-ups."""

from __future__ import annotations

import logging
from collections.abc import Callable

import sqlalchemy as sa

from vidqueue.store.wakeups import WakeThread

log = logging.getLogger("vidqueue.store")

#: The channel a submit (or a requeue) notifies, with the model id as payload.
CHANNEL = "vidqueue_queued"

NOTIFY = sa.text(f"SELECT pg_notify('{CHANNEL}', :model)")


def driver_url(url: str) -> str:
    """The SQLAlchemy URL with psycopg 3 as the driver for a plain ``postgresql://`` (or ``postgres://``) URL."""
    parsed = sa.make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """The URL as libpq (psycopg.connect) reads it: no SQLAlchemy driver name."""
    return sa.make_url(driver_url(url)).set(drivername="postgresql").render_as_string(hide_password=False)


class Listener(WakeThread):
    """LISTENs on a channel (by default the queue's) and calls back for every notification.

    It keeps its own connection, outside the pool, and reconnects with backoff when the database goes away;
    after every (re)connect it calls back once with "", since notifications sent meanwhile are lost.
    """

    name = "pg-listen"

    def __init__(self, url: str, on_notify: Callable[[str], None], channel: str = CHANNEL) -> None:
        super().__init__(on_notify)
        self._url = libpq_url(url)
        self._channel = channel

    def _run(self) -> None:
        import psycopg

        backoff = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {self._channel}")
                    backoff = 0.1
                    self._on_new("")
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._on_new(note.payload)
            except psycopg.Error as exc:
                log.warning("listening on %s failed (retrying): %s", self._channel, exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
