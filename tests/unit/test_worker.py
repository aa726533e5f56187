"""The worker's claim loop with the in-memory store and tiny engines that succeed, fail or stall on purpose."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from vidqueue.config import WorkerSettings
from vidqueue.engines.base import GeneratedMedia, Job, JobContext
from vidqueue.errors import JobCancelled, JobFailed, StoreUnavailable
from vidqueue.media.storage import LocalStorage
from vidqueue.media.types import VideoInfo
from vidqueue.store import MemoryStore, NewRequest, RequestRecord, Status
from vidqueue.worker.loop import Worker

INFO = VideoInfo(duration=1.0, width=2, height=2, fps=24, frames=24, codec="h264", bytes=4)


class Engine:
    """A fake engine: steps with progress and cancel checks, then succeeds, fails or raises."""

    kind = "fake"
    concurrency = 1
    shared_limit = None

    def __init__(self, outcome: str = "ok", steps: int = 5, step_s: float = 0.0) -> None:
        self.outcome = outcome
        self.steps = steps
        self.step_s = step_s
        self.started = threading.Event()
        self.jobs: list[Job] = []

    def models(self) -> set[str]:
        return {"m"}

    def setup(self) -> None:
        pass

    def generate(self, job: Job, ctx: JobContext) -> GeneratedMedia:
        self.jobs.append(job)
        self.started.set()
        for i in range(self.steps):
            if ctx.cancelled():
                raise JobCancelled()
            time.sleep(self.step_s)
            ctx.progress((i + 1) / self.steps)
        if self.outcome == "fail":
            raise JobFailed("upstream said no", code="upstream_rejected")
        if self.outcome == "crash":
            raise RuntimeError("secret internal detail")
        video = ctx.workdir / "video.mp4"
        video.write_bytes(b"mp4!")
        thumb = ctx.workdir / "thumbnail.jpg"
        thumb.write_bytes(b"jpg!")
        return GeneratedMedia(videos=[video], info=INFO, thumbnail=thumb)


def _worker(tmp_path: Path, engine: Engine, store: MemoryStore | None = None) -> tuple[Worker, MemoryStore]:
    store = store or MemoryStore()
    storage = LocalStorage(tmp_path / "media", "http://127.0.0.1:1", b"k" * 32)
    settings = WorkerSettings(lease_s=30, heartbeat_s=0.05, poll_interval_s=0.01, progress_interval_s=0)
    worker = Worker(store, {"m": engine}, storage, settings, "w1", workdir=tmp_path / "work")  # type: ignore[dict-item]
    worker.setup()
    return worker, store


def _run_in_background(worker: Worker, engine: Engine) -> threading.Thread:
    """Run one claim in a thread and return once the engine has started on it."""
    t = threading.Thread(target=worker.run_once)
    t.start()
    assert engine.started.wait(5)
    return t


def _enqueue(store: MemoryStore, rid: str = "r1") -> None:
    store.enqueue(NewRequest(request_id=rid, org_id="o", model="m", payload={"prompt": "x"}))


def test_success_stores_media_and_records_the_outcome(tmp_path: Path) -> None:
    worker, store = _worker(tmp_path, Engine())
    _enqueue(store)
    assert worker.run_once() is True
    row = store.get("r1")
    assert row is not None and row.status is Status.SUCCESS and row.progress == 100
    assert row.outcome == {
        "media": [{"id": "0", "key": "requests/r1/video.mp4"}],
        "video": INFO.as_dict(),
        "engine": "fake",
        "thumbnail_key": "requests/r1/thumbnail.jpg",
    }
    assert worker.storage.get_bytes("requests/r1/video.mp4") == b"mp4!"
    assert list((tmp_path / "work").iterdir()) == []  # the attempt's folder is cleaned up


def test_engine_failure_ends_failed_with_its_code(tmp_path: Path) -> None:
    worker, store = _worker(tmp_path, Engine("fail"))
    _enqueue(store)
    worker.run_once()
    row = store.get("r1")
    assert row is not None and row.status is Status.FAILED
    assert row.outcome == {"error": {"code": "upstream_rejected", "message": "upstream said no"}}


def test_unexpected_engine_error_fails_without_leaking_details(tmp_path: Path) -> None:
    worker, store = _worker(tmp_path, Engine("crash"))
    _enqueue(store)
    worker.run_once()
    row = store.get("r1")
    assert row is not None and row.status is Status.FAILED and row.error_code == "engine_error"
    assert row.error is not None and "secret internal detail" not in row.error and "Traceback" not in row.error


def test_cancel_is_honoured_between_steps(tmp_path: Path) -> None:
    engine = Engine(steps=200, step_s=0.01)
    worker, store = _worker(tmp_path, engine)
    _enqueue(store)
    t = _run_in_background(worker, engine)
    store.cancel("r1", "o")
    t.join(10)
    row = store.get("r1")
    assert row is not None and row.status is Status.CANCELLED and row.error_code == "cancelled"


def test_abandoning_hands_the_running_request_back_to_the_queue(tmp_path: Path) -> None:
    engine = Engine(steps=200, step_s=0.01)
    worker, store = _worker(tmp_path, engine)
    _enqueue(store)
    t = _run_in_background(worker, engine)
    worker.abandon()
    t.join(10)
    row = store.get("r1")
    assert row is not None and row.status is Status.QUEUED and row.attempts == 0


def _run_loop(worker: Worker, engine: Engine, grace_s: float) -> threading.Thread:
    """Run the claim loop in a thread with this shutdown grace; return once the engine has started a request."""
    worker.settings = worker.settings.model_copy(update={"shutdown_grace_s": grace_s})
    t = threading.Thread(target=worker.run)
    t.start()
    assert engine.started.wait(5)
    return t


def test_stop_lets_the_running_request_finish_within_the_grace_and_claims_no_more(tmp_path: Path) -> None:
    engine = Engine(steps=50, step_s=0.01)
    worker, store = _worker(tmp_path, engine)
    _enqueue(store, "r1")
    _enqueue(store, "r2")
    t = _run_loop(worker, engine, grace_s=10)
    worker.stop()
    t.join(10)
    assert not t.is_alive()
    first, second = store.get("r1"), store.get("r2")
    assert first is not None and first.status is Status.SUCCESS
    assert second is not None and second.status is Status.QUEUED and second.attempts == 0


def test_a_request_still_running_when_the_grace_ends_is_handed_back(tmp_path: Path) -> None:
    engine = Engine(steps=1000, step_s=0.01)
    worker, store = _worker(tmp_path, engine)
    _enqueue(store)
    t = _run_loop(worker, engine, grace_s=0.3)
    stopped = time.monotonic()
    worker.stop()
    t.join(10)
    assert time.monotonic() - stopped < 3  # the grace and a step, not the 10 s of work
    row = store.get("r1")
    assert row is not None and row.status is Status.QUEUED and row.attempts == 0 and row.lease_owner is None


def test_result_of_a_worker_that_lost_its_lease_is_dropped(tmp_path: Path) -> None:
    engine = Engine(steps=100, step_s=0.01)
    worker, store = _worker(tmp_path, engine)
    _enqueue(store)
    t = _run_in_background(worker, engine)
    store.expire_leases("w1")
    store.recover(max_attempts=3)
    taken = store.claim("w2", ["m"], 30)
    assert taken is not None
    t.join(10)
    row = store.get("r1")
    assert row is not None and row.status is Status.PROCESSING and row.lease_owner == "w2"


def test_progress_is_reported_while_running(tmp_path: Path) -> None:
    engine = Engine(steps=50, step_s=0.01)
    worker, store = _worker(tmp_path, engine)
    _enqueue(store)
    seen: list[int] = []
    t = threading.Thread(target=worker.run_once)
    t.start()
    while t.is_alive():
        row = store.get("r1")
        assert row is not None
        seen.append(row.progress)
        time.sleep(0.005)
    t.join()
    assert seen == sorted(seen)
    assert any(0 < p < 100 for p in seen)


def test_job_sees_its_attempt_number(tmp_path: Path) -> None:
    engine = Engine()
    worker, store = _worker(tmp_path, engine)
    _enqueue(store)
    worker.run_once()
    assert engine.jobs[0].attempt == 1


class FlakyStore(MemoryStore):
    """A store whose `finish` fails the first ``outages`` times: before writing, or (``lost_reply``) after it."""

    def __init__(self, outages: int, *, lost_reply: bool = False) -> None:
        super().__init__()
        self.outages = outages
        self.lost_reply = lost_reply
        self.finish_calls = 0

    def finish(self, request_id: str, worker_id: str, outcome: dict[str, Any]) -> RequestRecord:
        self.finish_calls += 1
        if self.outages > 0:
            self.outages -= 1
            if self.lost_reply:
                super().finish(request_id, worker_id, outcome)  # committed, but the answer never came back
            raise StoreUnavailable("The store is unavailable: server closed the connection unexpectedly")
        return super().finish(request_id, worker_id, outcome)


def test_an_ending_is_written_through_a_store_outage(tmp_path: Path) -> None:
    store = FlakyStore(outages=3)
    worker, _ = _worker(tmp_path, Engine(), store)
    _enqueue(store)
    worker.run_once()
    row = store.get("r1")
    assert row is not None and row.status is Status.SUCCESS
    assert store.finish_calls == 4


def test_an_ending_whose_commit_answer_was_lost_is_not_written_twice_or_dropped(tmp_path: Path) -> None:
    store = FlakyStore(outages=1, lost_reply=True)
    worker, _ = _worker(tmp_path, Engine(), store)
    _enqueue(store)
    worker.run_once()  # the retry meets LeaseLost (the row already ended) and reads back its own ending
    row = store.get("r1")
    assert row is not None and row.status is Status.SUCCESS and row.qworker_id == "w1"
    assert store.finish_calls == 2


def test_store_wake_ups_start_a_claim_without_waiting_out_the_poll(tmp_path: Path) -> None:
    store = MemoryStore()
    engine = Engine()
    storage = LocalStorage(tmp_path / "media", "http://127.0.0.1:1", b"k" * 32)
    settings = WorkerSettings(poll_interval_s=30, heartbeat_s=0.05, progress_interval_s=0)
    worker = Worker(store, {"m": engine}, storage, settings, "w1", workdir=tmp_path / "work")  # type: ignore[dict-item]
    worker.setup()
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        time.sleep(0.2)  # the worker is idle, waiting out a 30 s poll
        sent = time.monotonic()
        _enqueue(store)
        assert engine.started.wait(5)
        assert time.monotonic() - sent < 2.0  # woken by the store, not by the 30 s poll
    finally:
        worker.stopping.set()
        thread.join(10)
