"""The JobContext a worker hands an engine: throttled progress, cancel checks, checkpoints, heartbeats."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from vidqueue.errors import LeaseLost, StoreUnavailable
from vidqueue.store import Store

log = logging.getLogger("vidqueue.worker")

T = TypeVar("T")


def through_outages(write: Callable[[], T], patience_s: float, *, sleep: Callable[[float], None] = time.sleep) -> T:
    """Run a store write, retrying with backoff while the store is unavailable, for up to ``patience_s`` seconds.

    A database restart takes seconds; a worker holding a finished video must not drop it for that.
    """
    deadline = time.monotonic() + patience_s
    delay = 0.1
    while True:
        try:
            return write()
        except StoreUnavailable as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("store unavailable, retrying in %.1f s: %s", delay, exc)
            sleep(delay)
            delay = min(delay * 2, 5.0)


class RunContext:
    """One attempt at one request, as the engine sees the worker."""

    def __init__(
        self,
        store: Store,
        request_id: str,
        worker_id: str,
        workdir: Path,
        *,
        lease_s: float,
        heartbeat_s: float,
        progress_interval_s: float,
        resume_state: dict[str, Any] | None = None,
        stopping: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        cancel_check_s: float = 0.5,
        on_stage_done: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._request_id = request_id
        self._worker_id = worker_id
        self._workdir = workdir
        self._lease_s = lease_s
        self._heartbeat_s = heartbeat_s
        self._progress_interval_s = progress_interval_s
        self._resume_state = resume_state
        self._stopping = stopping or threading.Event()
        self._clock = clock
        self._cancel_check_s = cancel_check_s
        self._on_stage_done = on_stage_done
        self._last_progress_write = -float("inf")
        self._last_pct = 0
        self._last_cancel_check = clock()
        self.cancel_requested = False
        self.lease_lost = False
        self._done = threading.Event()
        self._beat = threading.Thread(target=self._heartbeats, name=f"heartbeat-{request_id}", daemon=True)

    # -- JobContext --------------------------------------------------------------------------------------
    @property
    def workdir(self) -> Path:
        """A private, empty folder for this attempt's files."""
        return self._workdir

    @property
    def resume_state(self) -> dict[str, Any] | None:
        """The last checkpoint of an earlier attempt, if any."""
        return self._resume_state

    def progress(self, fraction: float) -> None:
        """Report progress from 0.0 to 1.0; written at most once per progress interval."""
        pct = max(0, min(99, int(fraction * 100)))  # 100 is written only with the result
        now = self._clock()
        if pct <= self._last_pct or now - self._last_progress_write < self._progress_interval_s:
            return
        self._last_progress_write = now
        self._last_pct = pct
        self._guarded(
            lambda: self._note(self._store.set_progress(self._request_id, self._worker_id, pct, self._lease_s))
        )

    def cancelled(self) -> bool:
        """Whether the engine should stop: cancelled by its owner, lease lost, or the worker shutting down."""
        now = self._clock()
        if not (self.cancel_requested or self.lease_lost) and now - self._last_cancel_check >= self._cancel_check_s:
            self._last_cancel_check = now
            try:
                row = self._store.get(self._request_id)
            except StoreUnavailable:
                row = None
            if row is not None:
                self.cancel_requested = row.cancel_requested_at is not None
                self.lease_lost = row.lease_owner != self._worker_id
        return self.cancel_requested or self.lease_lost or self._stopping.is_set()

    def checkpoint(self, state: dict[str, Any]) -> None:
        """Persist state (an upstream task id, say) before waiting on it."""
        # Retried through an outage: an upstream task was paid for, and only this checkpoint lets a later attempt
        # find it. (A lost lease still raises LeaseLost here.)
        through_outages(lambda: self._store.checkpoint(self._request_id, self._worker_id, state), self._lease_s)
        self._resume_state = state

    def stage_done(self) -> None:
        """The engine's device stage ended: tell the worker (once), so it can start the next request."""
        callback, self._on_stage_done = self._on_stage_done, None
        if callback is not None:
            callback()

    # -- heartbeats --------------------------------------------------------------------------------------
    def __enter__(self) -> RunContext:
        self._beat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._beat.join(timeout=5)

    def _heartbeats(self) -> None:
        while not self._done.wait(self._heartbeat_s):
            self._guarded(lambda: self._note(self._store.heartbeat(self._request_id, self._worker_id, self._lease_s)))

    def _note(self, cancel: bool) -> None:
        self.cancel_requested = self.cancel_requested or cancel

    def _guarded(self, write: Callable[[], None]) -> None:
        try:
            write()
        except LeaseLost:
            self.lease_lost = True
            log.warning("worker %s lost its lease on %s", self._worker_id, self._request_id)
        except StoreUnavailable as exc:
            # A store blip must not kill the generation; the lease outlives a few missed beats.
            log.warning("heartbeat for %s failed: %s", self._request_id, exc)
