"""The claim loop: take requests while engines have free slots, run them, store the media, write results (fenced)."""

from __future__ import annotations

import contextlib
import inspect
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

from vidqueue.config import WorkerSettings
from vidqueue.engines.base import AnyEngine, AsyncEngine, Engine, GeneratedMedia, Job
from vidqueue.errors import JobCancelled, JobFailed, LeaseLost, NotFound, StorageUnavailable, StoreUnavailable
from vidqueue.media.storage import Storage, is_disk_full, media_key
from vidqueue.store import RequestRecord, Status, Store
from vidqueue.worker.aio import LoopThread
from vidqueue.worker.context import RunContext, through_outages

log = logging.getLogger("vidqueue.worker")

# How often an idle worker says it is alive (model details list live workers as `qworkers`).
_PRESENCE_S = 5.0


class _Lane:
    """The requests one engine runs at once: its models, its slots and the threads that run them."""

    def __init__(self, engine: AnyEngine, models: set[str]) -> None:
        self.engine = engine
        self.models = sorted(models)
        self.slots = max(1, engine.concurrency)
        self.running = 0
        self.pool = ThreadPoolExecutor(self.slots, thread_name_prefix=f"job-{engine.kind}")
        self.is_async = inspect.iscoroutinefunction(engine.generate)
        # A staged engine (diffusers) runs one request on its device at a time: the next is claimed when that
        # device stage ends (ctx.stage_done()), while the one before it is still encoded and uploaded.
        self.staged = bool(getattr(engine, "staged", False))
        self.on_device = 0

    def can_take(self) -> bool:
        """Whether a request could start now (callers hold the worker's lock)."""
        return self.running < self.slots and not (self.staged and self.on_device)


class Worker:
    """Claims requests for the models its engines serve and runs each engine's share at once, up to its slots."""

    def __init__(
        self,
        store: Store,
        engines: Mapping[str, AnyEngine],
        storage: Storage,
        settings: WorkerSettings,
        worker_id: str,
        *,
        workdir: Path,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.engines = engines
        self.storage = storage
        self.settings = settings
        self.worker_id = worker_id
        self.workdir = workdir
        self._clock = clock
        self.stopping = threading.Event()  # claim nothing more; running requests may finish within the grace
        self.abandoning = threading.Event()  # the grace is over: running requests stop and go back to the queue
        self._wake = threading.Event()  # a job ended: a slot is free, claim again without waiting out the poll
        self._lock = threading.Lock()
        self._last_sweep = -float("inf")
        self._last_presence = -float("inf")
        by_engine: dict[int, tuple[AnyEngine, set[str]]] = {}
        for model_id, engine in engines.items():
            by_engine.setdefault(id(engine), (engine, set()))[1].add(model_id)
        self._lanes = [_Lane(engine, models) for engine, models in by_engine.values()]
        # Out of space: no claims until then (monotonic), the wait doubling while it lasts.
        self._paused_until = -float("inf")
        self._space_backoff = 0.0
        self._loop: LoopThread | None = None
        store.subscribe(self._on_queued)

    def _on_queued(self, model: str) -> None:
        # "" is a listener that reconnected and may have missed some: look once.
        if not model or model in self.engines:
            self._wake.set()

    def setup(self) -> None:
        """Load every engine once (weights, clients); start the event loop if an engine is async."""
        for lane in self._lanes:
            lane.engine.setup()
        if any(lane.is_async for lane in self._lanes):
            self._loop = LoopThread()
        self.workdir.mkdir(parents=True, exist_ok=True)

    def stop(self) -> None:
        """Claim nothing more; running requests get ``shutdown_grace_s`` to finish before they are handed back."""
        self.stopping.set()
        self._wake.set()

    def abandon(self) -> None:
        """Stop now: running requests go back to the queue without counting the attempt."""
        self.abandoning.set()
        self.stop()

    def run(self) -> None:
        """Claim and run requests until asked to stop; then let running ones finish or, after the grace, hand back."""
        try:
            while not self.stopping.is_set():
                try:
                    self._housekeeping()
                    if not self._claim_round():
                        self._wake.wait(self.settings.poll_interval_s)
                        self._wake.clear()
                except StoreUnavailable as exc:
                    log.warning("store unavailable, retrying: %s", exc)
                    self.stopping.wait(min(5.0, self.settings.poll_interval_s * 4))
        finally:
            self._let_running_finish()
            for lane in self._lanes:
                lane.pool.shutdown(wait=True)
            self.close()
            with contextlib.suppress(StoreUnavailable):
                self.store.worker_gone(self.worker_id)

    def _running(self) -> int:
        with self._lock:
            return sum(lane.running for lane in self._lanes)

    def _let_running_finish(self) -> None:
        """Wait up to the shutdown grace for running requests to end; then tell the rest to hand back."""
        # Real time, not the injectable clock: this waits on engines, which run in real time.
        deadline = time.monotonic() + self.settings.shutdown_grace_s
        running = self._running()
        if running and not self.abandoning.is_set():
            log.info("stopping: %d running requests get %.0f s to finish", running, self.settings.shutdown_grace_s)
        while self._running() and not self.abandoning.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("stopping: the grace is over; handing %d requests back to the queue", self._running())
                break
            self._wake.wait(min(left, 0.2))
            self._wake.clear()
        self.abandoning.set()

    def close(self) -> None:
        """Close async engines' clients and stop the event loop."""
        if self._loop is None:
            return
        for lane in self._lanes:
            if lane.is_async:
                with contextlib.suppress(Exception):
                    self._loop.run(cast(AsyncEngine, lane.engine).aclose())
        self._loop.close()
        self._loop = None

    def _claim_round(self) -> bool:
        """Claim one request for every lane with a free slot; answer whether any was claimed."""
        claimed = False
        if time.monotonic() < self._paused_until:
            return False
        for lane in self._lanes:
            with self._lock:
                free = lane.can_take()
            if not free or self.stopping.is_set():
                continue
            record = self.store.claim(self.worker_id, lane.models, self.settings.lease_s, lane.engine.shared_limit)
            if record is None:
                continue
            claimed = True
            with self._lock:
                lane.running += 1
                lane.on_device += 1
            lane.pool.submit(self._run_in_lane, lane, record)
        return claimed

    def _run_in_lane(self, lane: _Lane, record: RequestRecord) -> None:
        released = False

        def off_device() -> None:
            nonlocal released
            with self._lock:
                if not released:
                    released = True
                    lane.on_device -= 1
            self._wake.set()

        try:
            self.process(record, on_stage_done=off_device)
        except Exception:
            # process() writes every ending itself; what escapes is a store outage, and the lease expiry recovers it.
            log.exception("request %s: could not record its ending", record.request_id)
        finally:
            off_device()
            with self._lock:
                lane.running -= 1
            self._wake.set()

    def _housekeeping(self) -> None:
        now = self._clock()
        if now - self._last_presence >= _PRESENCE_S:
            self._last_presence = now
            self.store.worker_seen(self.worker_id, sorted(self.engines), self._facts())
        if now - self._last_sweep >= self.settings.sweep_interval_s:
            self._last_sweep = now
            self.store.recover(self.settings.max_attempts)

    def _facts(self) -> dict[str, dict[str, float]] | None:
        """What engines report about themselves (load and compile seconds per model), for /metrics."""
        facts: dict[str, dict[str, float]] = {}
        for lane in self._lanes:
            report = getattr(lane.engine, "facts", None)
            for name, per_model in (report() if report is not None else {}).items():
                facts.setdefault(name, {}).update(per_model)
        return facts or None

    def run_once(self) -> bool:
        """Claim one request (any model, no slots) and run it to the end here; answer whether there was one."""
        record = self.store.claim(self.worker_id, sorted(self.engines), self.settings.lease_s)
        if record is None:
            return False
        self.process(record)
        return True

    def process(self, record: RequestRecord, *, on_stage_done: Callable[[], None] | None = None) -> None:
        """Run one claimed request and write its ending, unless the lease was lost meanwhile."""
        try:
            workdir = Path(tempfile.mkdtemp(prefix=f"{record.request_id}.", dir=self.workdir))
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            self._out_of_space(record.request_id, exc)
            return
        ctx = RunContext(
            self.store,
            record.request_id,
            self.worker_id,
            workdir,
            lease_s=self.settings.lease_s,
            heartbeat_s=self.settings.heartbeat_s,
            progress_interval_s=self.settings.progress_interval_s,
            resume_state=record.engine_state,
            stopping=self.abandoning,
            on_stage_done=on_stage_done,
        )
        try:
            with ctx:
                self._end(record, ctx)
        except LeaseLost:
            log.warning("request %s: lease lost, result dropped", record.request_id)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _end(self, record: RequestRecord, ctx: RunContext) -> None:
        rid, wid = record.request_id, self.worker_id
        try:
            media = self._generate(record, ctx)
            if ctx.lease_lost:
                raise LeaseLost(rid)
            outcome = self._store_through_outages(record, media, ctx)
        except LeaseLost:
            raise
        except JobCancelled as exc:
            if ctx.lease_lost:
                raise LeaseLost(rid) from None
            if self.abandoning.is_set() and not ctx.cancel_requested:
                # Shutting down past the grace: hand the request back at once instead of losing the attempt.
                self._write_ending(rid, Status.QUEUED, lambda: self.store.release(rid, wid))
            else:
                message = exc.message
                self._write_ending(rid, Status.CANCELLED, lambda: self.store.finish_cancelled(rid, wid, message))
            return
        except JobFailed as exc:
            # An engine that reported a full disk as its own failure; not a store of media that ran out of patience
            # (that one already waited for space, and a storage failure never costs a second generation).
            if exc.code != StorageUnavailable.code and is_disk_full(exc):
                self._out_of_space(rid, exc)
                return
            self._fail(rid, exc.code, exc.message)
            return
        except MemoryError:
            self._fail(rid, "out_of_memory", "The engine ran out of memory; try a shorter or smaller video.")
            return
        except Exception as exc:
            if is_disk_full(exc):
                self._out_of_space(rid, exc)
                return
            log.exception("request %s: engine error", rid)
            self._fail(rid, "engine_error", f"The engine failed unexpectedly ({type(exc).__name__}); it was logged.")
            return
        self._write_ending(rid, Status.SUCCESS, lambda: self.store.finish(rid, wid, outcome))
        self._space_backoff = 0.0

    def _out_of_space(self, rid: str, exc: BaseException) -> None:
        """The disk filled up while generating: hand the request back (not an attempt) and pause claims a while.

        Space comes back when someone frees it; until then every claim here would fail the same way. The request
        is queued again, for this worker after the pause or for another worker with room.
        """
        self._space_backoff = min(max(1.0, self._space_backoff * 2), self.settings.disk_full_backoff_max_s)
        self._paused_until = time.monotonic() + self._space_backoff
        log.warning(
            "request %s: out of disk space (%s); handed back to the queue, claiming again in %.0f s",
            rid,
            exc,
            self._space_backoff,
        )
        self._write_ending(rid, Status.QUEUED, lambda: self.store.release(rid, self.worker_id))

    def _store_through_outages(self, record: RequestRecord, media: GeneratedMedia, ctx: RunContext) -> dict[str, Any]:
        """Store the generated media, retrying with backoff while storage cannot be written.

        The worker keeps its lease (the heartbeats go on) and the generated files, so storage that comes back
        within ``storage_retry_s`` costs a wait, never a second generation. Past it the request fails with
        ``storage_unavailable``. A cancel or a lost lease ends the wait.
        """
        patience = self.settings.storage_retry_s
        deadline = time.monotonic() + patience
        delay = 0.5
        while True:
            try:
                return self._store_media(record, media)
            except StorageUnavailable as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise JobFailed(
                        f"The video was generated, but media storage could not be written for {patience:g} s "
                        f"({exc.message.rstrip('.')}); the request was not run again.",
                        code="storage_unavailable",
                    ) from exc
                wait = min(delay, left)
                log.warning(
                    "request %s: %s Storing again in %.1f s; the generated video is kept.",
                    record.request_id,
                    exc.message,
                    wait,
                )
                self._sleep_unless_stopped(ctx, wait)
                delay = min(delay * 2, 5.0)  # a worker slot waits on it: look often once storage is back

    def _sleep_unless_stopped(self, ctx: RunContext, seconds: float) -> None:
        """Wait ``seconds``, raising JobCancelled as soon as the request is cancelled or the lease is lost."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if ctx.cancelled():
                raise JobCancelled()
            self.abandoning.wait(min(left, 0.25))

    def _fail(self, rid: str, code: str, message: str) -> None:
        self._write_ending(rid, Status.FAILED, lambda: self.store.fail(rid, self.worker_id, code, message))

    def _write_ending(self, rid: str, status: Status, write: Callable[[], object]) -> None:
        """Write a request's ending through store outages (up to a few leases long).

        When the connection drops during the commit, the write may have landed: the retry then finds the row no
        longer processing (LeaseLost), and reading it back tells whether it was this worker's own ending.
        """
        retried = False

        def attempt() -> object:
            nonlocal retried
            try:
                return write()
            except StoreUnavailable:
                retried = True
                raise

        try:
            through_outages(attempt, 5 * self.settings.lease_s)
        except LeaseLost:
            if not retried:
                raise
            row = through_outages(lambda: self.store.get(rid), self.settings.lease_s)
            if row is None or row.status is not status or row.qworker_id != self.worker_id:
                raise

    def _generate(self, record: RequestRecord, ctx: RunContext) -> GeneratedMedia:
        engine = self.engines[record.model]
        image: bytes | None = None
        if record.input_key:
            try:
                image = self.storage.get_bytes(record.input_key)
            except NotFound as exc:
                raise JobFailed("The request's stored input image is missing.", code="invalid_input") from exc
        job = Job(
            request_id=record.request_id,
            org_id=record.org_id,
            model=record.model,
            payload=record.payload,
            attempt=record.attempts,
            input_image=image,
        )
        if ctx.cancelled():
            raise JobCancelled()
        if inspect.iscoroutinefunction(engine.generate):
            if self._loop is None:
                raise RuntimeError("Worker.setup() starts the event loop async engines need")
            return self._loop.run(cast(AsyncEngine, engine).generate(job, ctx))
        return cast(Engine, engine).generate(job, ctx)

    def _store_media(self, record: RequestRecord, media: GeneratedMedia) -> dict[str, Any]:
        items = []
        for i, path in enumerate(media.videos):
            key = media_key(record.request_id, "video.mp4" if i == 0 else f"video-{i}.mp4")
            self.storage.put_file(key, path, "video/mp4")
            items.append({"id": str(i), "key": key})
        outcome: dict[str, Any] = {
            "media": items,
            "video": media.info.as_dict(),
            "engine": self.engines[record.model].kind,
        }
        # What an engine reports that a client can use: the upstream task, or the settings to repeat a generation.
        for key in ("upstream", "generation"):
            if key in media.extra:
                outcome[key] = media.extra[key]
        if media.thumbnail is not None:
            key = media_key(record.request_id, "thumbnail.jpg")
            self.storage.put_file(key, media.thumbnail, "image/jpeg")
            outcome["thumbnail_key"] = key
        return outcome
