"""The status streams' hub (api/streams.py) on the in-memory store: one read per change, whatever the streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from starlette.requests import ClientDisconnect
from starlette.types import Message, Scope

from vidqueue.api import streams
from vidqueue.api.state import AppState
from vidqueue.api.streams import Subscription, event_id, hub_of, parse_last_event_id
from vidqueue.catalog import Catalog
from vidqueue.config import Settings
from vidqueue.errors import RateLimited
from vidqueue.media.storage import LocalStorage
from vidqueue.store import MemoryStore, NewRequest, RequestRecord


class CountingStore(MemoryStore):
    """The in-memory store, counting reads of one request."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    def get(self, request_id: str, org_id: str | None = None) -> RequestRecord | None:
        self.gets += 1
        return super().get(request_id, org_id)


def app_state(store: MemoryStore, tmp_path: Path) -> AppState:
    storage = LocalStorage(tmp_path, "http://127.0.0.1:8000", b"secret")
    return AppState(settings=Settings(), store=store, storage=storage, catalog=Catalog())


def enqueue(store: MemoryStore, request_id: str = "r1") -> None:
    store.enqueue(NewRequest(request_id=request_id, org_id="o", model="kling-v2-5-turbo", payload={"prompt": "x"}))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def states(sub: Subscription) -> list[str]:
    out = []
    while await sub.wait(0.01):
        assert sub.latest is not None
        out.append(event_id(sub.latest))
    return out


def test_one_read_per_change_serves_every_stream_of_a_request(tmp_path: Path) -> None:
    store = CountingStore()
    enqueue(store)

    async def run() -> None:
        hub = hub_of(app_state(store, tmp_path))
        subs = [hub.subscribe("r1", "a") for _ in range(50)]
        await settle()
        assert store.gets == 1  # fifty streams joined: their first state was read once
        assert [await states(s) for s in subs[:2]] == [["0-queued-0-1"]] * 2
        store.gets = 0
        store.claim("w", ["kling-v2-5-turbo"], lease_s=30)
        await settle()
        store.set_progress("r1", "w", 40, lease_s=30)
        await settle()
        store.heartbeat("r1", "w", lease_s=30)  # no status or progress change: nothing to read
        await settle()
        assert store.gets == 2
        for sub in subs:
            assert await states(sub) in (["1-processing-0", "1-processing-40"], ["1-processing-40"])
        for sub in subs:
            hub.unsubscribe(sub)
        store.finish("r1", "w", {"media": []})
        await settle()
        assert store.gets == 2  # nobody watches it any more

    asyncio.run(run())


def test_a_stream_joining_later_ignores_reads_that_started_before_it(tmp_path: Path) -> None:
    store = CountingStore()
    enqueue(store)

    async def run() -> None:
        hub = hub_of(app_state(store, tmp_path))
        early = hub.subscribe("r1", "a")
        late = hub.subscribe("r1", "a")
        await settle()
        # Both joined before the first read ran; a third joining now asks for a read of its own.
        assert await states(early) == ["0-queued-0-1"] and await states(late) == ["0-queued-0-1"]
        third = hub.subscribe("r1", "a")
        await settle()
        assert await states(third) == ["0-queued-0-1"]
        assert await states(early) == ["0-queued-0-1"]  # the same state again: the stream drops it as unchanged

    asyncio.run(run())


def test_closing_the_hub_ends_every_stream(tmp_path: Path) -> None:
    store = CountingStore()
    enqueue(store)

    async def run() -> None:
        hub = hub_of(app_state(store, tmp_path))
        subs = [hub.subscribe("r1", "a") for _ in range(3)]
        hub.close()
        assert all(s.ended for s in subs)
        assert hub.subscribe("r1", "a").ended

    asyncio.run(run())


def test_an_organisation_holds_at_most_its_cap_of_streams(tmp_path: Path) -> None:
    store = CountingStore()
    enqueue(store)
    state = app_state(store, tmp_path)
    state.settings.limits.max_streams_per_org = 3

    async def run() -> None:
        hub = hub_of(state)
        subs = [hub.subscribe("r1", "a") for _ in range(3)]
        with pytest.raises(RateLimited) as refused:
            hub.subscribe("r1", "a")
        assert refused.value.code == "too_many_streams" and refused.value.retry_after > 0
        assert "limits.max_streams_per_org" in refused.value.message
        hub.subscribe("r1", "b")  # another organisation's count is its own
        hub.unsubscribe(subs[0])
        hub.unsubscribe(subs[0])  # twice: counted once
        again = hub.subscribe("r1", "a")  # a closed stream frees its place
        with pytest.raises(RateLimited):
            hub.subscribe("r1", "a")
        for sub in (*subs[1:], again):
            hub.unsubscribe(sub)
        assert [hub.subscribe("r1", "a") for _ in range(3)]

    asyncio.run(run())


def test_a_queued_requests_stream_hears_its_position_move_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "POSITIONS_EVERY_S", 0.01)
    store = CountingStore()
    for rid in ("r1", "r2", "r3"):
        enqueue(store, rid)

    async def run() -> None:
        hub = hub_of(app_state(store, tmp_path))
        sub = hub.subscribe("r3", "o")
        await settle()
        assert await states(sub) == ["0-queued-0-3"]
        store.claim("w", ["kling-v2-5-turbo"], lease_s=30)  # r1 leaves the queue
        store.set_progress("r1", "w", 40, lease_s=30)  # and moves again: one read for both
        await asyncio.sleep(0.05)
        assert await states(sub) == ["0-queued-0-2"]
        assert store.gets == 2
        store.cancel("r2", "o")
        await asyncio.sleep(0.05)
        assert await states(sub) == ["0-queued-0-1"]
        hub.unsubscribe(sub)

    asyncio.run(run())


def test_a_stream_whose_client_is_gone_before_its_first_byte_still_lets_go() -> None:
    started: list[bool] = []
    done: list[bool] = []

    async def events() -> AsyncIterator[bytes]:
        started.append(True)
        yield b"retry: 2000\n\n"

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        raise OSError("the client went away")

    response = streams.EventStream(events(), lambda: done.append(True), media_type="text/event-stream")
    scope: Scope = {"type": "http", "asgi": {"spec_version": "2.4"}}
    with pytest.raises(ClientDisconnect):  # Starlette's word for the OSError
        asyncio.run(response(scope, receive, send))
    assert done == [True] and started == []


def test_last_event_ids_are_read_only_in_the_shape_the_server_writes() -> None:
    assert parse_last_event_id(" 1-processing-40 ") == "1-processing-40"
    assert parse_last_event_id("0-queued-0-12") == "0-queued-0-12"
    for junk in (None, "", "x", "1-processing", "1-processing-40-extra", "9" * 20 + "-queued-0", "0-queued-0-1-2"):
        assert parse_last_event_id(junk) is None
