"""The claim loop: take a request, run its engine, store the media, write the result (fenced)."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vidqueue.config import WorkerSettings
from vidqueue.engines.base import Engine, GeneratedMedia, Job
from vidqueue.errors import JobCancelled, JobFailed, LeaseLost, NotFound, StoreUnavailable
from vidqueue.media.storage import Storage
from vidqueue.store import RequestRecord, Store
from vidqueue.store.rules import CANCELLED_MESSAGE
from vidqueue.worker.context import RunContext

log = logging.getLogger("vidqueue.worker")

# How often an idle worker says it is alive (model details list live workers as `qworkers`).
_PRESENCE_S = 5.0


def media_key(request_id: str, name: str) -> str:
    """The storage key of one of a request's files."""
    return f"requests/{request_id}/{name}"


class Worker:
    """Claims requests for the models its engines serve and runs them one at a time."""

    def __init__(
        self,
        store: Store,
        engines: dict[str, Engine],
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
        self.stopping = threading.Event()
        self._last_sweep = -float("inf")
        self._last_presence = -float("inf")

    def setup(self) -> None:
        """Load every engine once (weights, clients)."""
        for engine in {id(e): e for e in self.engines.values()}.values():
            engine.setup()
        self.workdir.mkdir(parents=True, exist_ok=True)

    def run(self, max_jobs: int | None = None) -> None:
        """Claim and run requests until asked to stop (or after ``max_jobs``)."""
        done = 0
        try:
            while not self.stopping.is_set() and (max_jobs is None or done < max_jobs):
                try:
                    self._housekeeping()
                    if self.run_once():
                        done += 1
                    else:
                        self.stopping.wait(self.settings.poll_interval_s)
                except StoreUnavailable as exc:
                    log.warning("store unavailable, retrying: %s", exc)
                    self.stopping.wait(min(5.0, self.settings.poll_interval_s * 4))
        finally:
            with contextlib.suppress(StoreUnavailable):
                self.store.worker_gone(self.worker_id)

    def _housekeeping(self) -> None:
        now = self._clock()
        if now - self._last_presence >= _PRESENCE_S:
            self._last_presence = now
            self.store.worker_seen(self.worker_id, sorted(self.engines))
        if now - self._last_sweep >= self.settings.sweep_interval_s:
            self._last_sweep = now
            self.store.recover(self.settings.max_attempts)

    def run_once(self) -> bool:
        """Claim one request and run it to the end; answer whether there was one."""
        record = self.store.claim(self.worker_id, sorted(self.engines), self.settings.lease_s)
        if record is None:
            return False
        self.process(record)
        return True

    def process(self, record: RequestRecord) -> None:
        """Run one claimed request and write its ending, unless the lease was lost meanwhile."""
        workdir = Path(tempfile.mkdtemp(prefix=f"{record.request_id}.", dir=self.workdir))
        ctx = RunContext(
            self.store,
            record.request_id,
            self.worker_id,
            workdir,
            lease_s=self.settings.lease_s,
            heartbeat_s=self.settings.heartbeat_s,
            progress_interval_s=self.settings.progress_interval_s,
            resume_state=record.engine_state,
            stopping=self.stopping,
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
        except JobCancelled:
            if ctx.lease_lost:
                raise LeaseLost(rid) from None
            if self.stopping.is_set() and not ctx.cancel_requested:
                # Shutting down: hand the request back at once instead of losing the attempt.
                self.store.release(rid, wid)
            else:
                self.store.finish_cancelled(rid, wid, CANCELLED_MESSAGE)
            return
        except JobFailed as exc:
            self.store.fail(rid, wid, exc.code, exc.message)
            return
        except MemoryError:
            self.store.fail(rid, wid, "out_of_memory", "The engine ran out of memory; try a shorter or smaller video.")
            return
        except Exception as exc:
            log.exception("request %s: engine error", rid)
            message = f"The engine failed unexpectedly ({type(exc).__name__}); the failure was logged."
            self.store.fail(rid, wid, "engine_error", message)
            return
        if ctx.lease_lost:
            raise LeaseLost(rid)
        outcome = self._store_media(record, media)
        self.store.finish(rid, wid, outcome)

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
        return engine.generate(job, ctx)

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
        if media.thumbnail is not None:
            key = media_key(record.request_id, "thumbnail.jpg")
            self.storage.put_file(key, media.thumbnail, "image/jpeg")
            outcome["thumbnail_key"] = key
        return outcome
