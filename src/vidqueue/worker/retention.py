"""Retention: finished requests older than ``[retention] days`` are deleted, then their media, a batch at a time.

Rows go first, media after. A client then never sees a request whose video is gone: it is either whole or 404.
And each row is handed out to one pruner only (the store deletes it and answers it in one transaction), so
several API machines can prune side by side without doing the work twice. The price: a crash, or a storage
error, between the two leaves objects no row names any more; they are logged, counted, and left in storage.
The other order would leave rows pointing at deleted media instead, and make every pruner delete every object.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from vidqueue.config import RetentionSettings
from vidqueue.errors import StoreUnavailable
from vidqueue.media.storage import Storage, request_prefix
from vidqueue.store import Store
from vidqueue.store.records import Pruned

log = logging.getLogger("vidqueue.retention")


@dataclass(frozen=True)
class PruneCounts:
    """What a batch or a pass deleted: requests, media objects, and requests whose media could not be deleted."""

    requests: int = 0
    media: int = 0
    media_errors: int = 0

    def __add__(self, other: PruneCounts) -> PruneCounts:
        return PruneCounts(
            self.requests + other.requests, self.media + other.media, self.media_errors + other.media_errors
        )


class PruneReport(Protocol):
    """Where counts go (the API's metrics): told after every batch and at the end of every whole pass."""

    def pruned(self, requests: int, media: int, media_errors: int) -> None:
        """Count one batch."""
        ...

    def pass_done(self, at: float) -> None:
        """Note that a whole pass ended at ``at``."""
        ...


def delete_media(storage: Storage, pruned: Sequence[Pruned]) -> PruneCounts:
    """Delete the stored objects of pruned requests; a request whose media fail is logged and counted, not raised."""
    media = errors = 0
    for p in pruned:
        prefix = request_prefix(p.request_id)
        keys = p.media_keys()
        try:
            # The whole folder: it also holds what no row names (a half-written attempt's files).
            storage.delete_prefix(prefix)
            for key in keys:
                if not key.startswith(prefix):
                    storage.delete_prefix(key)
        except Exception as exc:  # one bad object (or S3 hiccup) must not stop the pass
            errors += 1
            log.warning("retention: the media of request %s were not deleted: %s", p.request_id, exc)
        else:
            media += len(keys)
    return PruneCounts(len(pruned), media, errors)


def prune_once(
    store: Store,
    storage: Storage,
    max_age_s: float,
    batch: int = 500,
    *,
    clock: Callable[[], float] = time.time,
    report: PruneReport | None = None,
    stop: threading.Event | None = None,
) -> PruneCounts:
    """Delete every request that finished more than ``max_age_s`` ago, and its media, ``batch`` rows at a time."""
    # One cutoff for the whole pass: requests that finish meanwhile wait for the next one, so a pass always ends.
    cutoff = clock() - max_age_s
    total = PruneCounts()
    while True:
        pruned = store.prune(cutoff, batch)
        counts = delete_media(storage, pruned)
        total += counts
        if report is not None and pruned:
            report.pruned(counts.requests, counts.media, counts.media_errors)
        if len(pruned) < batch or (stop is not None and stop.is_set()):
            break
    if total.requests:
        log.info(
            "retention: pruned %d requests and %d media objects finished before %s",
            total.requests,
            total.media,
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(cutoff)),
        )
    if report is not None:
        report.pass_done(clock())
    return total


class RetentionJob:
    """A thread that runs a pass at start and then every ``interval_s`` seconds, until stopped."""

    def __init__(
        self,
        store: Store,
        storage: Storage,
        settings: RetentionSettings,
        *,
        report: PruneReport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.storage = storage
        self.settings = settings
        self.report = report
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to stop after its current batch, and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                prune_once(
                    self.store,
                    self.storage,
                    self.settings.max_age_s,
                    self.settings.batch,
                    clock=self._clock,
                    report=self.report,
                    stop=self._stop,
                )
            except StoreUnavailable as exc:
                log.warning(
                    "retention: the store is unavailable, trying again in %g s: %s", self.settings.interval_s, exc
                )
            except Exception:  # a bug in one pass must not end retention for the process's life
                log.exception("retention: a pass failed")
            self._stop.wait(self.settings.interval_s)
