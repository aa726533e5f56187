"""Serving the API under uvicorn with a drain: on SIGTERM, refuse new work for a while, then close."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import FrameType

import uvicorn

from vidqueue.api.state import AppState

log = logging.getLogger("vidqueue.api")


class DrainingServer(uvicorn.Server):
    """A uvicorn server that drains before it closes.

    uvicorn stops listening at the first signal, so a load balancer that has not yet seen the instance go gets
    refused connections. Here the first SIGTERM (or SIGINT) marks the app draining instead: submits and /readyz
    answer 503 with Retry-After while reads, cancels and in-flight calls go on. ``on_stop`` runs at once (the
    workers stop claiming), and uvicorn closes once ``drain_s`` has passed and ``wait`` has returned (the workers
    have finished, so their last results can still be read). A second signal closes at once, and runs ``on_stop``
    again (the workers hand back what they still run).
    """

    def __init__(
        self,
        config: uvicorn.Config,
        state: AppState,
        *,
        drain_s: float,
        on_stop: Callable[[], None] = lambda: None,
        wait: Callable[[], object] = lambda: None,
    ) -> None:
        super().__init__(config)
        self._state = state
        self._drain_s = drain_s
        self._on_stop = on_stop
        self._wait = wait
        self._signals = 0
        self._cut_short = threading.Event()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """The first stop signal starts the drain; a second closes now."""
        self._signals += 1
        # Work leaves the signal handler: it runs between bytecodes of the event loop's thread, which must not block.
        threading.Thread(target=self._on_stop, name="stop-workers", daemon=True).start()
        if self._signals == 1:
            self._state.draining = True
            threading.Thread(target=self._drain, name="drain", daemon=True).start()
            return
        self._cut_short.set()
        super().handle_exit(sig, frame)

    def _drain(self) -> None:
        log.info("stopping: draining for %.1f s (new submits get 503, reads go on)", self._drain_s)
        if not self._cut_short.wait(self._drain_s):
            self._wait()
        self.should_exit = True
