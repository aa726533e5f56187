"""A worker process: `python -m vidqueue.worker.main` (started by `vidqueue serve` or `vidqueue worker`)."""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

from vidqueue.bootstrap import catalog_for, open_storage, prepare_data_dir, store_for
from vidqueue.config import Settings, load_settings
from vidqueue.errors import ConfigError, Unavailable
from vidqueue.logs import setup_logging
from vidqueue.worker.engines import build_engines
from vidqueue.worker.loop import Worker
from vidqueue.worker.supervisor import SETTINGS_ENV, worker_id_for

log = logging.getLogger("vidqueue.worker")


def _die_with_parent() -> None:
    # If `serve` is killed, its workers must not linger as orphans holding leases.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _relay_stop_signals(stop: Callable[[], None], now: Callable[[], None], *, again_is_now: bool) -> None:
    """Call ``stop`` from a thread when SIGTERM or SIGINT arrives, and ``now`` on SIGUSR1 (or a second one).

    A Python signal handler runs between bytecodes of the main thread, which may be inside ``Event.wait`` holding
    the event's lock: calling ``Event.set`` there deadlocks. The C-level wake-up fd carries the signal to a
    thread instead, and the handlers themselves do nothing.

    A supervised worker takes a second SIGTERM or SIGINT as the same request again: one Ctrl-C, or one systemd
    stop, reaches it from the terminal or service manager and once more from its supervisor. Its supervisor says
    "hand back now" with SIGUSR1.
    """
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(sig, _ignore)

    def relay() -> None:
        stopping = False
        while True:
            signum = os.read(read_fd, 1)[0]
            if signum == signal.SIGUSR1 or (stopping and again_is_now):
                now()
            else:
                stop()
                stopping = True

    threading.Thread(target=relay, name="signals", daemon=True).start()


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A handler that only keeps the default action (death) away; the wake-up fd does the work."""


def run_worker(settings: Settings, *, supervised: bool = False) -> None:
    """Run one worker process until SIGTERM/SIGINT."""
    if supervised:
        _die_with_parent()
    parent = os.getppid()
    prepare_data_dir(settings)
    store = store_for(settings)
    engines = build_engines(settings, catalog_for(settings))
    if not engines:
        raise ConfigError("This worker has no models to serve: no model is routed to the engines it runs.")
    worker = Worker(
        store,
        engines,
        open_storage(settings),
        settings.worker,
        worker_id_for(os.getpid()),
        workdir=settings.data_dir.resolve() / "work",
    )

    # The first signal lets running requests finish within the grace; SIGUSR1 hands them back at once.
    _relay_stop_signals(worker.stop, worker.abandon, again_is_now=not supervised)
    if supervised:

        def _watch_parent() -> None:
            while not worker.stopping.wait(1.0):
                if os.getppid() != parent:
                    worker.stop()

        threading.Thread(target=_watch_parent, daemon=True).start()
    worker.setup()
    log.info("worker %s ready for %s", worker.worker_id, ", ".join(sorted(engines)))
    try:
        worker.run()
    finally:
        store.close()
        log.info("worker %s stopped", worker.worker_id)


def main(argv: list[str] | None = None) -> None:
    """Entry point of a supervised worker process."""
    parser = argparse.ArgumentParser(prog="vidqueue.worker.main")
    parser.add_argument("--slot", type=int, default=0)
    parser.parse_args(argv)
    raw = os.environ.get(SETTINGS_ENV)
    settings = Settings.model_validate_json(raw) if raw else load_settings()
    setup_logging(settings.log_level)
    try:
        run_worker(settings, supervised=raw is not None)
    except (ConfigError, Unavailable) as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
