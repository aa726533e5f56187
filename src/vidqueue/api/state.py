"""What the routes need, built once by the app factory and passed in (no module-level singletons)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from anyio import CapacityLimiter
from fastapi import Request
from prometheus_client import CollectorRegistry
from starlette.concurrency import run_in_threadpool

from vidqueue.api.batching import SubmitBatcher
from vidqueue.catalog import Catalog
from vidqueue.config import Settings
from vidqueue.media.storage import LocalStorage, Storage
from vidqueue.store import ApiKey, NewRequest, RequestRecord, Store

if TYPE_CHECKING:
    from vidqueue.api.streams import StatusHub

P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class KeyCache:
    """Recently seen keys, so each call need not read the keys table; revocations apply within ``ttl_s``."""

    ttl_s: float = 2.0
    _items: dict[str, tuple[ApiKey | None, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key_hash: str) -> tuple[bool, ApiKey | None]:
        """(hit, key) for a hash."""
        with self._lock:
            item = self._items.get(key_hash)
        if item is None or item[1] < time.monotonic():
            return False, None
        return True, item[0]

    def put(self, key_hash: str, key: ApiKey | None) -> None:
        """Remember a lookup (a miss too, so bad keys cannot hammer the store)."""
        with self._lock:
            if len(self._items) > 10_000:
                self._items.clear()
            self._items[key_hash] = (key, time.monotonic() + self.ttl_s)


@dataclass
class AppState:
    """Collaborators of the API."""

    settings: Settings
    store: Store
    storage: Storage
    catalog: Catalog
    keys: KeyCache = field(default_factory=KeyCache)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    draining: bool = False  # set on SIGTERM: submits and /readyz answer 503 until the server closes
    # Large bodies are parsed and checked in a thread, one at a time: parsing one of a million keys is a single
    # C call that holds the GIL for a few tenths of a second, and several at once would hold the loop for their sum.
    large_bodies: CapacityLimiter = field(default_factory=lambda: CapacityLimiter(1))
    # The status streams' watch on the store (api/streams.py), made by the first stream.
    streams: StatusHub | None = None
    submits: SubmitBatcher = field(init=False)

    def __post_init__(self) -> None:
        self.submits = SubmitBatcher(self.store)

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a store call: inline when the store's calls are local and quick, else in a thread.

        On one core a thread hop per call costs more than the SQLite call itself, and threads that hold the
        write lock get preempted by the GIL; the event loop doing SQLite's work serially is both faster and fairer.
        """
        if self.store.inline_calls:
            return fn(*args, **kwargs)
        return await run_in_threadpool(fn, *args, **kwargs)

    async def enqueue(self, new: NewRequest) -> RequestRecord:
        """Queue a request: on a store called inline, with the other submits of this turn of the loop."""
        if self.store.inline_calls:
            return await self.submits.enqueue(new)
        return await run_in_threadpool(self.store.enqueue, new)

    @property
    def local_storage(self) -> LocalStorage | None:
        """The storage, when it is a local folder the API serves itself."""
        return self.storage if isinstance(self.storage, LocalStorage) else None


async def get_state(request: Request) -> AppState:
    """The app's collaborators, for a route (async: no thread hop for a dict lookup)."""
    state: AppState = request.app.state.vq
    return state
