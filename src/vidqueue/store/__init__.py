"""The durable request table and the queue operations on it."""

from __future__ import annotations

import time
from collections.abc import Callable

from vidqueue.store.base import Store
from vidqueue.store.memory import MemoryStore
from vidqueue.store.records import (
    Admission,
    AdmitRule,
    ApiKey,
    Attempt,
    Delivery,
    Idempotency,
    NewRequest,
    Page,
    QueueStats,
    Recovered,
    RequestRecord,
    Status,
)


def open_store(url: str, clock: Callable[[], float] = time.time) -> Store:
    """Open the store a URL names (``memory://`` for the in-memory twin), migrating it to the newest schema."""
    if url.startswith("memory:"):
        return MemoryStore(clock)
    from vidqueue.store.sql import SqlStore

    return SqlStore.open(url, clock)


__all__ = [
    "Admission",
    "AdmitRule",
    "ApiKey",
    "Attempt",
    "Delivery",
    "Idempotency",
    "MemoryStore",
    "NewRequest",
    "Page",
    "QueueStats",
    "Recovered",
    "RequestRecord",
    "Status",
    "Store",
    "open_store",
]
