"""Starts worker processes beside the API, restarts any that die, and hands their requests back at once."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from vidqueue.config import Settings
from vidqueue.errors import StoreUnavailable
from vidqueue.store import Store

log = logging.getLogger("vidqueue.supervisor")

SETTINGS_ENV = "VIDQUEUE_SETTINGS_JSON"


def host_tag() -> str:
    """A short, stable tag for this machine, so worker ids are unique across machines."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


def worker_id_for(pid: int) -> str:
    """The id a worker process with this pid uses on this machine."""
    return f"worker-{host_tag()}-{pid}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (and is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except (FileNotFoundError, IndexError, PermissionError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


@dataclass
class _Slot:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    not_before: float = 0.0  # restart no sooner than this (back-off for workers that die at once)
    quick_deaths: int = 0

    @property
    def worker_id(self) -> str | None:
        return worker_id_for(self.proc.pid) if self.proc else None


class Supervisor:
    """Keeps N worker processes running against the same store."""

    def __init__(self, settings: Settings, store: Store, count: int) -> None:
        self.settings = settings
        self.store = store
        self.slots = [_Slot(i) for i in range(count)]
        self._stop = threading.Event()
        self._stop_lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def start(self) -> None:
        """Hand back requests of this machine's dead workers, then start the worker processes."""
        self.reclaim_dead_workers()
        for slot in self.slots:
            self._spawn(slot)
        self._thread.start()

    def reclaim_dead_workers(self) -> int:
        """Expire the leases of workers on this machine whose processes are gone (a crash or kill -9 of serve)."""
        prefix = f"worker-{host_tag()}-"
        count = 0
        for worker_id in self.store.live_workers(within_s=10 * 365 * 86400):
            if not worker_id.startswith(prefix):
                continue
            try:
                pid = int(worker_id[len(prefix) :])
            except ValueError:
                continue
            if not pid_alive(pid):
                count += self.store.expire_leases(worker_id)
                self.store.worker_gone(worker_id)
        if count:
            self.store.recover(self.settings.worker.max_attempts)
        return count

    def _spawn(self, slot: _Slot) -> None:
        env = dict(os.environ)
        env[SETTINGS_ENV] = self.settings.model_dump_json()
        slot.started_at = time.monotonic()
        slot.proc = subprocess.Popen(
            [sys.executable, "-m", "vidqueue.worker.main", "--slot", str(slot.index)],
            env=env,
        )
        log.info("started worker %s (slot %d)", slot.worker_id, slot.index)

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            for slot in self.slots:
                proc = slot.proc
                if proc is None or proc.poll() is None:
                    if proc is None and time.monotonic() >= slot.not_before and not self._stop.is_set():
                        self._spawn(slot)
                    continue
                dead = worker_id_for(proc.pid)
                slot.proc = None
                # A worker that dies within seconds of starting (a bad setting, a broken install) is restarted
                # with growing pauses, up to a minute, instead of in a tight loop.
                slot.quick_deaths = slot.quick_deaths + 1 if time.monotonic() - slot.started_at < 10 else 0
                pause = min(60.0, 0.5 * 2 ** (slot.quick_deaths - 1)) if slot.quick_deaths > 1 else 0.0
                slot.not_before = time.monotonic() + pause
                log.warning("worker %s exited with %s; restarting it in %.1f s", dead, proc.returncode, pause)
                self._hand_back(dead)
                if self._stop.is_set():
                    return
                if pause == 0.0:
                    self._spawn(slot)

    def pids(self) -> list[int]:
        """The pids of the running worker processes."""
        return [s.proc.pid for s in self.slots if s.proc is not None and s.proc.poll() is None]

    def request_stop(self) -> None:
        """Restart no worker again and SIGTERM each: they claim nothing more and finish within the grace.

        A second call sends SIGUSR1, which makes them hand back what they still run at once.
        """
        with self._stop_lock:
            sig = signal.SIGUSR1 if self._stop.is_set() else signal.SIGTERM
            self._stop.set()
            if self._thread.is_alive() and self._thread is not threading.current_thread():
                self._thread.join(timeout=2)
            for proc in self._procs():
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(sig)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every worker to exit; answer whether they all did."""
        deadline = time.monotonic() + timeout
        for proc in self._procs():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return False
        return True

    def stop(self, timeout: float | None = None) -> None:
        """Ask every worker to stop (unless asked already) and wait for them; kill any still there after ``timeout``.

        The default waits out the shutdown grace and a margin, so a worker is killed only when its engine ignored
        the hand-back; its lease is expired then, so the request goes on elsewhere at once.
        """
        if not self._stop.is_set():
            self.request_stop()
        if self.wait(self.stop_timeout_s if timeout is None else timeout):
            return
        for proc in self._procs():
            if proc.poll() is None:
                log.warning("worker %s did not stop in time; killing it", worker_id_for(proc.pid))
                proc.kill()
                proc.wait()
                self._hand_back(worker_id_for(proc.pid))

    @property
    def stop_timeout_s(self) -> float:
        """How long a stop waits for the workers: their shutdown grace and a margin to hand back."""
        return self.settings.worker.shutdown_grace_s + 15.0

    def _hand_back(self, worker_id: str) -> None:
        """Requeue the requests of a worker that is gone, at once rather than when its lease would expire."""
        try:
            self.store.expire_leases(worker_id)
            self.store.recover(self.settings.worker.max_attempts)
            self.store.worker_gone(worker_id)
        except StoreUnavailable as exc:
            log.warning("could not hand back %s's requests yet: %s", worker_id, exc)

    def _procs(self) -> list[subprocess.Popen[bytes]]:
        return [s.proc for s in self.slots if s.proc is not None]
