"""Retention: a pass deletes old finished requests and then their media, batch by batch; the job runs passes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from vidqueue.config import RetentionSettings, load_settings
from vidqueue.errors import ConfigError, Unavailable
from vidqueue.media.storage import LocalStorage
from vidqueue.store import MemoryStore, NewRequest
from vidqueue.worker.retention import PruneCounts, RetentionJob, prune_once

DAY = 86400.0


class Clock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Report:
    """What the job tells the metrics."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int, int]] = []
        self.passes: list[float] = []

    def pruned(self, requests: int, media: int, media_errors: int) -> None:
        self.batches.append((requests, media, media_errors))

    def pass_done(self, at: float) -> None:
        self.passes.append(at)


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def store(clock: Clock) -> MemoryStore:
    return MemoryStore(clock)


@pytest.fixture()
def media(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "media", "http://127.0.0.1:8000", b"secret")


def _run(store: MemoryStore, media: LocalStorage, rid: str, *, finish: bool = True, image: bool = False) -> None:
    """A request that ran: its input image, video and thumbnail stored, and (with ``finish``) a success."""
    input_key = f"requests/{rid}/input.png" if image else None
    if input_key:
        media.put_bytes(input_key, b"png", "image/png")
    store.enqueue(NewRequest(request_id=rid, org_id="o", model="m", payload={}, input_key=input_key))
    claimed = store.claim("w", ["m"], 3600 * 24 * 365)
    assert claimed is not None and claimed.request_id == rid
    if not finish:
        return
    media.put_bytes(f"requests/{rid}/video.mp4", b"mp4", "video/mp4")
    media.put_bytes(f"requests/{rid}/thumbnail.jpg", b"jpg", "image/jpeg")
    outcome = {
        "media": [{"id": "video", "key": f"requests/{rid}/video.mp4"}],
        "thumbnail_key": f"requests/{rid}/thumbnail.jpg",
    }
    store.finish(rid, "w", outcome)


def test_a_pass_deletes_old_finished_requests_and_all_their_media(
    store: MemoryStore, media: LocalStorage, clock: Clock
) -> None:
    _run(store, media, "old", image=True)
    media.put_bytes("requests/old/video-retry.mp4", b"x", "video/mp4")  # a file no row names (an earlier attempt)
    _run(store, media, "running", finish=False, image=True)
    clock.now += 2 * DAY
    _run(store, media, "recent")
    clock.now += 1

    report = Report()
    counts = prune_once(store, media, 1 * DAY, clock=clock, report=report)

    assert counts == PruneCounts(requests=1, media=3, media_errors=0)
    assert store.get("old") is None and not (media.root / "requests" / "old").exists()
    assert store.get("running") is not None and (media.root / "requests/running/input.png").exists()
    assert store.get("recent") is not None and (media.root / "requests/recent/video.mp4").exists()
    assert report.batches == [(1, 3, 0)] and report.passes == [clock.now]


def test_a_pass_goes_batch_by_batch_until_none_are_left(store: MemoryStore, media: LocalStorage, clock: Clock) -> None:
    for i in range(5):
        _run(store, media, f"r{i}")
    clock.now += 10
    report = Report()
    counts = prune_once(store, media, 5, 2, clock=clock, report=report)
    assert counts == PruneCounts(requests=5, media=10)
    assert report.batches == [(2, 4, 0), (2, 4, 0), (1, 2, 0)] and len(report.passes) == 1
    assert prune_once(store, media, 5, 2, clock=clock) == PruneCounts()
    assert not list((media.root / "requests").iterdir())


def test_a_stopped_pass_ends_after_its_current_batch(store: MemoryStore, media: LocalStorage, clock: Clock) -> None:
    for i in range(5):
        _run(store, media, f"r{i}")
    clock.now += 10
    stop = threading.Event()
    stop.set()
    assert prune_once(store, media, 5, 2, clock=clock, stop=stop).requests == 2
    assert store.list("o").total == 3


class FlakyStorage(LocalStorage):
    """Local storage whose deletes under one request fail, as an S3 outage would."""

    def delete_prefix(self, prefix: str) -> None:
        if prefix.startswith("requests/bad/"):
            raise Unavailable("S3 delete of s3://bucket/requests/bad/ failed: cannot reach it")
        super().delete_prefix(prefix)


def test_media_that_cannot_be_deleted_are_counted_and_the_pass_goes_on(
    store: MemoryStore, tmp_path: Path, clock: Clock
) -> None:
    media = FlakyStorage(tmp_path / "media", "http://127.0.0.1:8000", b"secret")
    _run(store, media, "bad")
    _run(store, media, "good")
    clock.now += 10
    assert prune_once(store, media, 5, clock=clock) == PruneCounts(requests=2, media=2, media_errors=1)
    # Rows go first: neither request answers any more; the objects of "bad" are left (and were logged).
    assert store.get("bad") is None and store.get("good") is None
    assert (media.root / "requests/bad/video.mp4").exists()
    assert not (media.root / "requests/good").exists()


def test_the_job_prunes_at_start_and_stops_promptly(store: MemoryStore, media: LocalStorage) -> None:
    _run(store, media, "r1")  # the real clock: finished just now
    report = Report()
    job = RetentionJob(store, media, RetentionSettings(days=0.1 / DAY, interval_s=0.05), report=report)
    time.sleep(0.2)
    job.start()
    deadline = time.monotonic() + 5
    while store.get("r1") is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.get("r1") is None
    time.sleep(0.2)
    assert len(report.passes) >= 2  # it keeps running passes every interval_s
    started = time.monotonic()
    job.stop()
    assert time.monotonic() - started < 1
    assert report.batches == [(1, 2, 0)]


def test_retention_settings_come_from_the_environment_and_may_be_fractional() -> None:
    default = load_settings(env={}).retention
    assert default.days == 30 and default.max_age_s == 30 * DAY and default.batch == 500
    given = load_settings(env={"VIDQUEUE_RETENTION_DAYS": "0.5", "VIDQUEUE_RETENTION_INTERVAL_S": "60"}).retention
    assert given.max_age_s == 12 * 3600 and given.interval_s == 60
    with pytest.raises(ConfigError, match=r"retention\.days"):
        load_settings(env={"VIDQUEUE_RETENTION_DAYS": "0"})
