"""Threads that tell a worker of requests queued by other processes: the base, and SQLite's file watcher."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable


class WakeThread:
    """A daemon thread that calls ``on_new(model)`` ("" when the model is unknown) until stopped."""

    name = "wake"

    def __init__(self, on_new: Callable[[str], None]) -> None:
        self._on_new = on_new
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def start(self) -> None:
        """Start in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop (within about a second)."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        raise NotImplementedError


class SqliteWatcher(WakeThread):
    """Tells of requests queued by other processes on the same SQLite file.

    SQLite has no notifications; reading the highest ``seq`` is one B-tree lookup that never waits on writers (WAL),
    so looking every 10 ms costs an idle worker a fraction of a percent of a core and starts new work within about
    10 ms instead of a poll interval.
    """

    name = "sqlite-watch"

    def __init__(self, path: str, on_new: Callable[[str], None], every_s: float = 0.01) -> None:
        super().__init__(on_new)
        self._path = path
        self._every_s = every_s

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            last: int | None = None
            while not self._stop.wait(self._every_s):
                try:
                    (top,) = conn.execute("SELECT coalesce(max(seq), 0) FROM requests").fetchone()
                except sqlite3.Error:
                    continue  # busy or briefly unreadable: the worker's own poll covers the gap
                if last is not None and top > last:
                    self._on_new("")
                last = top
        finally:
            conn.close()
