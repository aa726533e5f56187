"""Store.watch_changes, the wake-ups of status streams: memory, SQLite (file watcher) and PostgreSQL (NOTIFY)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vidqueue.store import MemoryStore, NewRequest, Store
from vidqueue.store.sql import SqlStore


class Heard:
    """The request ids a watcher was told of ("" left out: "some may be missed", as after a connect)."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, request_id: str) -> None:
        with self._cond:
            if request_id:
                self.ids.append(request_id)
                self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 5) -> list[str]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.ids) >= count, timeout), self.ids
            return list(self.ids)


@contextmanager
def writer_beside(store: Store) -> Iterator[Store]:
    """A second store on the same database, writing as another process would (the same one in memory)."""
    if isinstance(store, MemoryStore):
        yield store
        return
    assert isinstance(store, SqlStore)
    other = SqlStore.open(store._engine.url.render_as_string(hide_password=False))
    try:
        yield other
    finally:
        other.close()


def test_a_watcher_hears_each_status_and_progress_change_made_elsewhere(store: Store) -> None:
    heard = Heard()
    store.enqueue(NewRequest(request_id="r1", org_id="o", model="m", payload={}))
    store.enqueue(NewRequest(request_id="r2", org_id="o", model="m", payload={}))
    store.watch_changes(heard, lambda: {"r1"})
    time.sleep(0.3)  # the listener is up (PostgreSQL) and has read the watched request once (SQLite)
    heard.ids.clear()
    with writer_beside(store) as other:
        claimed = other.claim("w", ["m"], 60)
        assert claimed is not None and claimed.request_id == "r1"
        assert heard.wait_for(1) == ["r1"]
        other.heartbeat("r1", "w", 60)  # no change a stream shows
        other.set_progress("r1", "w", 40, 60)
        assert heard.wait_for(2) == ["r1", "r1"]
        other.finish("r1", "w", {"media": []})
        assert heard.wait_for(3) == ["r1", "r1", "r1"]
    time.sleep(0.2)
    assert heard.ids == ["r1", "r1", "r1"]  # nothing for the heartbeat


def test_a_sqlite_watcher_reads_only_what_is_watched(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/q.db"
    store, other = SqlStore.open(url), SqlStore.open(url)
    try:
        heard = Heard()
        watched: set[str] = set()
        store.watch_changes(heard, lambda: watched)
        other.enqueue(NewRequest(request_id="r1", org_id="o", model="m", payload={}))
        other.claim("w", ["m"], 60)
        time.sleep(0.1)
        assert heard.ids == []  # nothing watched: nothing read
        watched.add("r1")
        assert heard.wait_for(1) == ["r1"]  # a newly watched request is read at once
        other.set_progress("r1", "w", 10, 60)
        assert heard.wait_for(2) == ["r1", "r1"]
    finally:
        store.close()
        other.close()
