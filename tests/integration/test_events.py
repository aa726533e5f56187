"""GET …/requests/{id}/events, the status stream (issue 18, part 2), against the real server on SQLite and PostgreSQL.

The worker runs in its own process, so every event the API streams reached it through the store's wake-ups (the
SQLite file watcher, PostgreSQL's LISTEN/NOTIFY), never through the API's own writes.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests import pg
from tests.support import BASE, SDK_BASE, Server, fast_env, free_port, run_cli, submit, wait_for

pytestmark = pytest.mark.slow

MODEL = "kling-v2-5-turbo"
# Enough emulated time for several progress writes (one per 0.2 s), and keep-alives every 0.5 s.
ENV = {"VIDQUEUE_EMULATOR_LATENCY_S": "2", "VIDQUEUE_SSE_KEEPALIVE_S": "0.5"}


@dataclass
class Stream:
    """What one SSE connection carried."""

    status_code: int
    content_type: str = ""
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (id, request object)
    comments: int = 0
    retry: int | None = None
    ended: bool = False  # the server closed the stream

    @property
    def states(self) -> list[tuple[str, int]]:
        return [(body["status"], body["progress"]) for _, body in self.events]


def read_stream(
    client: httpx.Client, request_id: str, *, last_event_id: str | None = None, stop_after: int | None = None
) -> Stream:
    """Open the stream and read it until the server ends it (or ``stop_after`` events, then hang up)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    with client.stream("GET", f"/requests/{request_id}/events", headers=headers, timeout=60) as resp:
        out = Stream(resp.status_code, resp.headers.get("content-type", ""))
        if resp.status_code != 200:
            resp.read()
            return out
        event: dict[str, str] = {}
        for line in resp.iter_lines():
            if line.startswith(":"):
                out.comments += 1
            elif line.startswith("retry:"):
                out.retry = int(line.split(":", 1)[1])
            elif line.startswith(("id:", "data:")):
                name, _, value = line.partition(":")
                event[name] = value.lstrip(" ")
            elif line == "" and event:
                out.events.append((event["id"], orjson.loads(event["data"])))
                event = {}
                if stop_after is not None and len(out.events) >= stop_after:
                    return out
        out.ended = True
        return out


def queued_behind_another(api: httpx.Client) -> str:
    """A request that waits in the queue behind another on the one worker; its id."""
    submit(api, MODEL, {"prompt": "a request ahead in the queue"})
    target = submit(api, MODEL, {"prompt": "a lighthouse in fog"})["request_id"]
    assert api.get(f"/requests/{target}").json()["status"] == "queued"
    return str(target)


def assert_positions_move_up(stream: Stream) -> None:
    """The queued events count the request's way to the front of the queue, one place at a time, down to 1."""
    queued = [body["queue_position"] for _, body in stream.events if body["status"] == "queued"]
    assert len(queued) >= 2 and queued == list(range(queued[0], 0, -1)), stream.events
    assert stream.states[-1] == ("success", 100)


def assert_a_whole_life(stream: Stream, request_id: str) -> None:
    """queued, processing with progress, success, in order, each state once, then the end of the stream."""
    assert stream.status_code == 200
    assert stream.content_type.startswith("text/event-stream")
    assert stream.ended
    statuses = [status for status, _ in stream.states]
    assert statuses[0] == "queued" and statuses[-1] == "success", stream.states
    assert statuses.count("success") == 1
    assert statuses == sorted(statuses, key=["queued", "processing", "success"].index), stream.states
    running = [progress for status, progress in stream.states if status == "processing"]
    assert len([p for p in running if 0 < p < 100]) >= 2, stream.states
    assert running == sorted(running)
    ids = [event_id for event_id, _ in stream.events]
    assert len(set(ids)) == len(ids)  # every event is a change
    last_id, last = stream.events[-1]
    assert last_id == "1-success-100"
    assert last["request_id"] == request_id and last["outcome"]["video_url"]
    assert all(body["request_id"] == request_id for _, body in stream.events)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(data_dir=tmp_path_factory.mktemp("events") / "data", port=free_port(), env=fast_env(**ENV), workers=1)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_a_stream_follows_a_request_from_queued_to_success_with_progress(server: Server) -> None:
    with server.client() as api:
        target = queued_behind_another(api)
        stream = read_stream(api, target)
        assert_a_whole_life(stream, target)
        assert stream.retry is not None
        # Keep-alive comments came while it waited in the queue (every 0.5 s here; 15 s by default).
        assert stream.comments >= 2
        # Each event carries the request object as GET answers it.
        final = api.get(f"/requests/{target}").json()
        assert stream.events[-1][1] == {**final, "outcome": stream.events[-1][1]["outcome"]}
        assert stream.events[-1][1]["outcome"]["video_url"].split("?")[0] == final["outcome"]["video_url"].split("?")[0]


def test_a_queued_requests_stream_hears_its_position_move_up(server: Server) -> None:
    with server.client() as api:
        for i in range(3):
            submit(api, MODEL, {"prompt": f"a request ahead, {i}"})
        target = submit(api, MODEL, {"prompt": "a lighthouse in fog"})["request_id"]
        stream = read_stream(api, target)
    assert_positions_move_up(stream)
    assert_a_whole_life(stream, target)


def test_a_stream_resumes_after_last_event_id_with_later_events_only(server: Server) -> None:
    with server.client(base=SDK_BASE) as api:
        target = queued_behind_another(api)
        # Hang up after the first progress event ...
        first = read_stream(api, target, stop_after=1)
        assert first.states == [("queued", 0)]
        deadline = time.monotonic() + 30
        while (body := api.get(f"/requests/{target}").json())["progress"] < 20:
            assert time.monotonic() < deadline, body
            time.sleep(0.05)
        part = read_stream(api, target, stop_after=3)
        seen_id = part.events[-1][0]
        assert part.events[-1][1]["status"] == "processing"
        # ... and come back with the last id seen: only later states follow, to the end.
        rest = read_stream(api, target, last_event_id=seen_id)
        assert rest.status_code == 200 and rest.ended
        assert seen_id not in [event_id for event_id, _ in rest.events]
        seen_progress = part.events[-1][1]["progress"]
        assert all(p > seen_progress for s, p in rest.states if s == "processing"), (seen_id, rest.states)
        assert rest.states[-1] == ("success", 100)
        # Resumed after the terminal event: nothing more will come, and 204 says so (an EventSource stops).
        done = read_stream(api, target, last_event_id=rest.events[-1][0])
        assert done.status_code == 204 and done.events == []
        # A finished request's stream without Last-Event-ID is its final state, then the end.
        again = read_stream(api, target)
        assert again.states == [("success", 100)] and again.ended


def test_a_stream_of_a_request_that_is_cancelled_ends_with_cancelled(server: Server) -> None:
    with server.client() as api:
        target = queued_behind_another(api)
        first = read_stream(api, target, stop_after=1)
        assert api.post(f"/requests/{target}/cancel").json()["status"] == "cancelled"
        stream = read_stream(api, target, last_event_id=first.events[0][0])
        assert stream.states == [("cancelled", 0)] and stream.ended


def test_streams_of_unknown_or_foreign_requests_are_404_and_need_a_key(server: Server) -> None:
    with server.client() as api:
        target = submit(api, MODEL, {"prompt": "mine"})["request_id"]
        assert read_stream(api, "no-such-request").status_code == 404
        other = server.create_key("another-org")
        with server.client(key=other) as theirs:
            resp = theirs.get(f"/requests/{target}/events")
            assert resp.status_code == 404 and resp.json()["code"] == "not_found"
        assert httpx.get(f"{server.url}{BASE}/requests/{target}/events").status_code == 401
        wait_for(api, target)


def test_many_streams_of_one_request_all_get_every_state(server: Server) -> None:
    import concurrent.futures

    with server.client() as api:
        target = queued_behind_another(api)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            streams = list(pool.map(lambda _: read_stream(api, target), range(8)))
    # One read of each change served them all: every stream saw the same states once running (while queued, one
    # that joined later may have missed a move up the queue).
    for stream in streams:
        assert_a_whole_life(stream, target)
        assert [s for s in stream.states if s[0] != "queued"] == [s for s in streams[0].states if s[0] != "queued"]


def test_a_draining_server_ends_its_streams_and_refuses_new_ones(tmp_path: Path) -> None:
    env = fast_env(VIDQUEUE_DRAIN_S="3", **ENV)
    srv = Server(data_dir=tmp_path / "data", port=free_port(), env=env, workers=0)  # nothing runs: all stay queued
    srv.start()
    try:
        with srv.client() as api:
            target = submit(api, MODEL, {"prompt": "never run"})["request_id"]
            got: list[Stream] = []
            reader = threading.Thread(target=lambda: got.append(read_stream(api, target)))
            reader.start()
            time.sleep(0.5)
            assert srv.proc is not None
            stopped_at = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            reader.join(5)
            assert got and got[0].ended and got[0].states == [("queued", 0)]
            assert time.monotonic() - stopped_at < 2  # at once, not when the drain is over
            # Meanwhile a new stream is refused (a GET still answers), so nothing holds the server open.
            refused = api.get(f"/requests/{target}/events")
            assert refused.status_code == 503 and refused.json()["code"] == "shutting_down"
            assert api.get(f"/requests/{target}").status_code == 200
        assert srv.proc.wait(15) == 0
    finally:
        srv.stop()


def test_a_stream_on_postgresql_is_fed_by_listen_notify(tmp_path: Path) -> None:
    with pg.database() as url:
        srv = Server(
            data_dir=tmp_path / "data",
            port=free_port(),
            env=fast_env(VIDQUEUE_DATABASE_URL=url, **ENV),
            workers=1,
        )
        srv.start()
        try:
            with srv.client() as api:
                for i in range(2):  # three ahead with the one queued_behind_another adds: two still queued at worst
                    submit(api, MODEL, {"prompt": f"a request ahead, {i}"})
                target = queued_behind_another(api)
                first = read_stream(api, target, stop_after=2)
                assert first.states[0] == ("queued", 0)
                rest = read_stream(api, target, last_event_id=first.events[-1][0])
                assert rest.ended and rest.states[-1] == ("success", 100)
                states = first.states + rest.states
                assert len([p for s, p in states if s == "processing" and 0 < p < 100]) >= 2, states
                # Its position moved up as the requests ahead were claimed (NOTIFY of their changes).
                assert_positions_move_up(Stream(200, events=first.events + rest.events))
        finally:
            srv.stop()


def test_streams_are_capped_per_organisation_and_end_when_their_key_is_revoked(tmp_path: Path) -> None:
    env = fast_env(VIDQUEUE_MAX_STREAMS_PER_ORG="2", **ENV)
    srv = Server(data_dir=tmp_path / "data", port=free_port(), env=env, workers=0)  # nothing runs: all stay queued
    srv.start()
    try:
        created = run_cli("keys", "create", "--org", "temp", "--data-dir", str(srv.data_dir), env=srv.env)
        key_id = created.stdout.split("Created key ", 1)[1].split()[0]
        key = created.stdout.strip().splitlines()[-1]
        with srv.client(key) as api, contextlib.ExitStack() as open_streams:
            target = submit(api, MODEL, {"prompt": "never run"})["request_id"]
            lines = []
            for _ in range(2):  # two streams, each open once its first event has come
                resp = open_streams.enter_context(api.stream("GET", f"/requests/{target}/events", timeout=30))
                assert resp.status_code == 200
                it = resp.iter_lines()
                while not next(it).startswith("data:"):
                    pass
                lines.append(it)
            third = api.get(f"/requests/{target}/events", timeout=5)
            assert third.status_code == 429, third.text
            assert third.json()["code"] == "too_many_streams" and int(third.headers["Retry-After"]) > 0
            assert "limits.max_streams_per_org" in third.json()["error"]
            with srv.client() as other:  # another organisation's streams are counted apart
                own = submit(other, MODEL, {"prompt": "someone else's"})["request_id"]
                assert read_stream(other, own, stop_after=1).states == [("queued", 0)]
            # Revoked: both open streams end within a keep-alive or two (0.5 s) after the key cache lets go (2 s).
            out = run_cli("keys", "revoke", key_id, "--data-dir", str(srv.data_dir), env=srv.env)
            assert out.returncode == 0, out.stderr
            revoked_at = time.monotonic()
            for it in lines:
                rest = list(it)  # until the server ends the stream (keep-alives meanwhile)
                assert not [line for line in rest if line.startswith("data:")], rest
            assert time.monotonic() - revoked_at < 8
            assert api.get(f"/requests/{target}/events").status_code == 401
    finally:
        srv.stop()
