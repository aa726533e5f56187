"""The SDK's wait on a status stream (Server-Sent Events), against httpx.MockTransport; polling when there is none."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from vidqueue import AsyncClient, Client, RequestFailed

BASE = "http://vq.test"
RID = "6fb2b474-fb3a-480f-a142-f200537c6de4"
EVENTS = f"/api/v1/ie/requestqueue/apikey/requests/{RID}/events"
GET = f"/api/v1/ie/requestqueue/apikey/requests/{RID}"
DONE = {"status": "success", "progress": 100, "outcome": {"video_url": "https://x/v.mp4"}}


def event(attempts: int, state: dict[str, Any]) -> bytes:
    body = {"request_id": RID, "model": "m", "attempts": attempts, **state}
    return f"id: {attempts}-{body['status']}-{body.get('progress', 0)}\ndata: {json.dumps(body)}\n\n".encode()


def sse(*chunks: bytes) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=b"".join(chunks))


class Server:
    """Answers the stream with one prepared answer per connection, and GETs with ``state``; records every call."""

    def __init__(self, *streams: httpx.Response, state: dict[str, Any] | None = None) -> None:
        self.streams = list(streams)
        self.state = state or DONE
        self.calls: list[tuple[str, str | None]] = []  # (path, Last-Event-ID)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append((request.url.path, request.headers.get("last-event-id")))
        if request.url.path == EVENTS:
            assert request.headers["accept"] == "text/event-stream"
            return self.streams.pop(0)
        return httpx.Response(200, json={"request_id": RID, **self.state})


def test_wait_follows_the_stream_to_success_without_polling() -> None:
    server = Server(
        sse(
            b"retry: 2000\n\n",
            event(0, {"status": "queued", "queue_position": 1}),
            b": keep-alive\n\n",
            event(1, {"status": "processing", "progress": 40}),
            event(1, DONE),
        )
    )
    seen: list[tuple[str, int]] = []
    with Client(BASE, "key", transport=httpx.MockTransport(server)) as client:
        done = client.wait(RID, on_progress=lambda r: seen.append((r.status, r.progress)))
    assert done.status == "success" and done.outcome is not None
    assert seen == [("queued", None), ("processing", 40), ("success", 100)]
    assert server.calls == [(EVENTS, None)]


def test_a_stream_that_breaks_is_reopened_from_its_last_event() -> None:
    server = Server(
        sse(event(1, {"status": "processing", "progress": 40})),  # ends without a terminal event
        sse(event(1, {"status": "processing", "progress": 80}), event(1, DONE)),
    )
    with Client(BASE, "key", transport=httpx.MockTransport(server)) as client:
        assert client.wait(RID).status == "success"
    assert server.calls == [(EVENTS, None), (EVENTS, "1-processing-40")]


def test_a_stream_that_ends_for_good_leaves_the_outcome_to_a_get() -> None:
    failed = {"status": "failed", "error": "boom", "outcome": {"error": {"code": "engine_error", "message": "boom"}}}
    server = Server(sse(event(1, {"status": "processing", "progress": 10})), httpx.Response(204), state=failed)
    with Client(BASE, "key", transport=httpx.MockTransport(server)) as client, pytest.raises(RequestFailed):
        client.wait(RID)
    assert server.calls == [(EVENTS, None), (EVENTS, "1-processing-10"), (GET, None)]


def test_a_server_without_streams_is_polled() -> None:
    server = Server(httpx.Response(404, json={"message": "not found"}))
    with Client(BASE, "key", transport=httpx.MockTransport(server)) as client:
        assert client.wait(RID).status == "success"
    assert server.calls == [(EVENTS, None), (GET, None)]


def test_an_answer_that_is_not_a_stream_falls_back_to_polling() -> None:
    server = Server(httpx.Response(503, json={"error": "draining", "code": "shutting_down"}))
    with Client(BASE, "key", transport=httpx.MockTransport(server)) as client:
        assert client.wait(RID).status == "success"
    assert server.calls == [(EVENTS, None), (GET, None)]


def test_wait_without_stream_only_polls() -> None:
    server = Server()
    with Client(BASE, "key", transport=httpx.MockTransport(server)) as client:
        assert client.wait(RID, stream=False).status == "success"
    assert server.calls == [(GET, None)]


def test_the_async_client_follows_the_stream_too() -> None:
    server = Server(sse(event(0, {"status": "queued"}), event(1, {"status": "processing", "progress": 50})))
    server.streams.append(sse(event(1, DONE)))

    async def run() -> list[str]:
        seen: list[str] = []
        async with AsyncClient(BASE, "key", transport=httpx.MockTransport(server)) as client:
            done = await client.wait(RID, on_progress=lambda r: seen.append(r.status))
        assert done.status == "success"
        return seen

    assert asyncio.run(run()) == ["queued", "processing", "success"]
    assert server.calls == [(EVENTS, None), (EVENTS, "1-processing-50")]
