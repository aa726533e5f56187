"""Wake-ups for status streams: a request's status or progress changed, in any process sharing the store.

One feed per store, started by the first ``watch_changes``; it calls every watcher back from its own thread:

- PostgreSQL: a trigger (migration 0006) sends ``pg_notify('vidqueue_changed', request_id)`` when an UPDATE changes a
  row's status or progress; the feed LISTENs on its own connection, and says "" after every (re)connect, since
  notifications sent meanwhile are lost.
- SQLite: no notifications. ``PRAGMA data_version`` changes whenever another connection commits to the file, and
  reading it costs microseconds; when it has moved, one query reads the status, progress, attempt and queue position
  of the watched requests only, and the feed calls back for those that changed.
- The in-memory twin calls ``notify`` itself as it writes.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable

from sqlalchemy.engine import Engine

from vidqueue.store import postgres
from vidqueue.store.positions import row_position_sql
from vidqueue.store.wakeups import WakeThread

Changed = Callable[[str], None]
Watching = Callable[[], Collection[str]]

#: The channel the PostgreSQL trigger notifies, with the request id as payload.
CHANNEL = "vidqueue_changed"

_State = tuple[str, int, int, int | None]  # status, progress, attempts, queue position
_CHUNK = 500  # request ids per query, well under SQLite's limit on bound parameters


class ChangeFeed:
    """The store's watchers, and the thread (if any) that tells them of changes made by other processes."""

    def __init__(self, listener: Callable[[Changed, Watching], WakeThread | None] | None = None) -> None:
        self._listener = listener
        self._watches: list[tuple[Changed, Watching]] = []
        self._thread: WakeThread | None = None
        self._lock = threading.Lock()

    def add(self, changed: Changed, watching: Watching) -> None:
        """Call ``changed(request_id)`` on every change ("" for any), starting the listener on first use."""
        with self._lock:
            self._watches.append((changed, watching))
            if self._thread is None and self._listener is not None:
                self._thread = self._listener(self.notify, self.watched)
                if self._thread is not None:
                    self._thread.start()

    def notify(self, request_id: str) -> None:
        """Tell every watcher that ``request_id`` changed ("" for: any may have)."""
        for changed, _ in list(self._watches):
            changed(request_id)

    def watched(self) -> set[str]:
        """Every request some watcher wants to hear about."""
        out: set[str] = set()
        for _, watching in list(self._watches):
            out.update(watching())
        return out

    def stop(self) -> None:
        """Stop the listener thread."""
        with self._lock:
            if self._thread is not None:
                self._thread.stop()
                self._thread = None


class SqliteChangeWatcher(WakeThread):
    """Tells of status and progress changes of the watched requests in an SQLite file, by any connection."""

    name = "sqlite-changes"

    def __init__(self, path: str, on_change: Changed, watching: Watching, every_s: float = 0.02) -> None:
        super().__init__(on_change)
        self._path = path
        self._watching = watching
        self._every_s = every_s

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, timeout=5, isolation_level=None, check_same_thread=False)
        try:
            known: dict[str, _State] = {}
            version: int | None = None
            while not self._stop.wait(self._every_s):
                try:
                    version = self._look(conn, known, version)
                except sqlite3.Error:
                    version = None  # busy or briefly unreadable: look at everything again next time
        finally:
            conn.close()

    def _look(self, conn: sqlite3.Connection, known: dict[str, _State], version: int | None) -> int | None:
        """Read the watched requests if the file changed (or new ones are watched); answer the version seen."""
        ids = self._watching()
        for gone in known.keys() - ids:
            del known[gone]
        if not ids:
            return version
        (now,) = conn.execute("PRAGMA data_version").fetchone()
        fresh = [rid for rid in ids if rid not in known]
        if now == version and not fresh:
            return version
        for rid, state in _states(conn, ids if now != version else fresh):
            if known.get(rid) != state:
                known[rid] = state
                self._on_new(rid)
        return int(now)


def _states(conn: sqlite3.Connection, ids: Iterable[str]) -> Iterable[tuple[str, _State]]:
    items = list(ids)
    for start in range(0, len(items), _CHUNK):
        chunk = items[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT r.request_id, r.status, r.progress, r.attempts, {row_position_sql('r')} "
            f"FROM requests r WHERE r.request_id IN ({marks})",
            chunk,
        ).fetchall()
        for rid, status, progress, attempts, position in rows:
            yield rid, (status, int(progress), int(attempts), position)


def listener_for(engine: Engine) -> Callable[[Changed, Watching], WakeThread | None] | None:
    """The feed's listener for a database: LISTEN on PostgreSQL, the file watcher on SQLite (none in memory)."""
    if engine.dialect.name == "postgresql":
        url = engine.url.render_as_string(hide_password=False)
        return lambda on_change, _watching: postgres.Listener(url, on_change, channel=CHANNEL)
    path = engine.url.database
    if engine.dialect.name == "sqlite" and path and path != ":memory:":
        return lambda on_change, watching: SqliteChangeWatcher(path, on_change, watching)
    return None
