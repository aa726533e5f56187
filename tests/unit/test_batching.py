"""Submits inserted together: ``store.enqueue_many`` on every store, and the API's batcher that feeds it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from tests.unit.conftest import Clock
from vidqueue.api.batching import SubmitBatcher
from vidqueue.api.limits import admit_rule
from vidqueue.config import LimitsSettings
from vidqueue.errors import RateLimited
from vidqueue.store import Idempotency, MemoryStore, NewRequest, RequestRecord, Status, Store
from vidqueue.store.sql import SqlStore


def _new(i: int, org: str = "a", priority: int = 0) -> NewRequest:
    return NewRequest(request_id=f"r{i}", org_id=org, model="m", payload={"i": i}, priority=priority)


def test_enqueue_many_answers_each_request_in_its_place(store: Store) -> None:
    """Limits hold row by row inside the batch: the fourth active request of 'a' is refused, the others go in."""
    rule = admit_rule(LimitsSettings(max_active_per_org=3), "a")
    news = [replace(_new(i), admit=rule) for i in range(5)]
    news.insert(2, _new(10, org="b", priority=5))
    news.insert(4, replace(_new(11), idempotency=Idempotency("k", "f" * 64)))  # no rule: not counted against 'a'
    answers = store.enqueue_many(news)
    assert len(answers) == len(news)
    ids = [a.request_id if isinstance(a, RequestRecord) else type(a).__name__ for a in answers]
    assert ids == ["r0", "r1", "r10", "r2", "r11", "RateLimited", "RateLimited"]
    refused = answers[-1]
    assert isinstance(refused, RateLimited) and "max_active_per_org" in refused.message
    assert store.list("a").total == 4 and store.list("b").total == 1
    # Positions as of each insert: r10 (priority 5) was first in the queue when it went in; the rest by age.
    positions = {a.request_id: a.queue_position for a in answers if isinstance(a, RequestRecord)}
    assert positions == {"r0": 1, "r1": 2, "r10": 1, "r2": 4, "r11": 5}
    for request_id in ("r0", "r2", "r11"):
        row = store.get(request_id)
        assert row is not None and row.status is Status.QUEUED


def test_a_row_sqlite_cannot_write_fails_alone(tmp_path: Path, clock: Clock) -> None:
    """The batch's transaction is rolled back, and each request is tried alone: only the bad one gets an error."""
    store = SqlStore.open(f"sqlite:///{tmp_path}/q.db", clock)
    try:
        news = [_new(0), replace(_new(1), payload={"n": 2**70}), _new(2)]  # orjson writes 64-bit integers at most
        answers = store.enqueue_many(news)
        assert isinstance(answers[0], RequestRecord) and isinstance(answers[2], RequestRecord)
        assert isinstance(answers[1], TypeError)
        assert store.list("a").total == 2 and store.get("r1") is None
    finally:
        store.close()


class _Counting(MemoryStore):
    """The in-memory store, counting the batches it is given."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.batches: list[int] = []

    def enqueue_many(self, news: Sequence[NewRequest]) -> list[RequestRecord | Exception]:
        self.batches.append(len(news))
        return super().enqueue_many(news)


def test_the_batcher_inserts_one_turns_submits_together(clock: Clock) -> None:
    store = _Counting(clock)
    batcher = SubmitBatcher(store)
    rule = admit_rule(LimitsSettings(max_active_per_org=6), "a")

    async def burst() -> list[RequestRecord | BaseException]:
        first = await batcher.enqueue(_new(100))  # alone: answered after one turn of the loop
        assert first.request_id == "r100"
        together = [batcher.enqueue(replace(_new(i), admit=rule)) for i in range(8)]
        return await asyncio.gather(*together, return_exceptions=True)

    answers = asyncio.run(burst())
    assert store.batches == [1, 8]
    # Each caller gets its own answer: five records in order, then the refusals (six active for 'a' with r100).
    assert [a.request_id for a in answers if isinstance(a, RequestRecord)] == [f"r{i}" for i in range(5)]
    assert [type(a).__name__ for a in answers[5:]] == ["RateLimited"] * 3
    assert store.list("a").total == 6


def test_a_large_burst_is_inserted_a_hundred_at_a_time(clock: Clock) -> None:
    store = _Counting(clock)
    batcher = SubmitBatcher(store)

    async def burst() -> list[RequestRecord]:
        return await asyncio.gather(*(batcher.enqueue(_new(i)) for i in range(250)))

    answers = asyncio.run(burst())
    assert store.batches == [100, 100, 50]
    assert [a.request_id for a in answers] == [f"r{i}" for i in range(250)]
    assert [a.queue_position for a in answers] == list(range(1, 251))
