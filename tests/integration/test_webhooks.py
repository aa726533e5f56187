"""Webhooks against the real server: signed, ordered, retried, durable across a restart, and never in a worker's way."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from tests.support import Server, decode_video, free_port, run_cli, running_server, submit, wait_for
from vidqueue import Client

pytestmark = pytest.mark.slow

MODEL = "kling-v2-5-turbo"


@dataclass
class Received:
    """One POST the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)  # when it arrived

    @property
    def obj(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """A webhook receiver on loopback: records every POST and answers per path as a test scripts it."""

    port: int
    received: list[Received] = field(default_factory=list)
    # path → statuses to answer, in turn (200 once the list is used up); "slow" paths sleep first.
    script: dict[str, list[int]] = field(default_factory=dict)
    slow_s: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Receiver:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    answers = outer.script.get(self.path, [])
                    status = answers.pop(0) if answers else 200
                time.sleep(outer.slow_s.get(self.path, 0))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()

    def posts(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    rec = Receiver(free_port()).start()
    yield rec
    rec.stop()


HOOK_ENV = {
    "VIDQUEUE_EMULATOR_LATENCY_S": "0.5",
    "VIDQUEUE_WEBHOOK_RETRY_BASE_S": "0.3",
    "VIDQUEUE_WEBHOOK_POLL_INTERVAL_S": "0.1",
    "VIDQUEUE_WEBHOOK_TIMEOUT_S": "1",
    "VIDQUEUE_WEBHOOK_MAX_AGE_S": "6",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("webhooks"), workers=2, **HOOK_ENV) as srv:
        yield srv


def secret_of(server: Server, org: str) -> str:
    """The organisation's signing secret, as an operator gets it."""
    out = run_cli("webhooks", "secret", "--org", org, "--data-dir", str(server.data_dir))
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def until(check: Any, timeout: float = 30, what: str = "it") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def submit_with_hook(api: httpx.Client, url: str, prompt: str = "a heron at dawn") -> dict[str, Any]:
    resp = api.post("/requests", json={"model": MODEL, "payload": {"prompt": prompt}, "callback_url": url})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def deliveries(api: httpx.Client, request_id: str) -> list[dict[str, Any]]:
    resp = api.get(f"/requests/{request_id}/deliveries")
    assert resp.status_code == 200, resp.text
    found: list[dict[str, Any]] = resp.json()["deliveries"]
    return found


def test_every_status_change_is_posted_in_order_and_signed(server: Server, receiver: Receiver) -> None:
    secret = secret_of(server, "default")
    assert secret.startswith("whsec_") and secret == secret_of(server, "default")
    assert secret_of(server, "another-org") != secret
    with server.client() as api:
        created = submit_with_hook(api, receiver.url("/hooks/a"))
        rid = created["request_id"]
        done = wait_for(api, rid)
        posts = until(lambda: len(receiver.posts("/hooks/a")) >= 3 and receiver.posts("/hooks/a"), what="3 posts")
        assert [p.obj["status"] for p in posts] == ["queued", "processing", "success"]
        verifier = Webhook(secret)
        for post in posts:
            # Standard Webhooks' own library accepts the signature, id and timestamp.
            assert verifier.verify(post.body, post.headers) == post.obj
            assert post.headers["content-type"] == "application/json"
            assert abs(int(post.headers["webhook-timestamp"]) - time.time()) < 60
            assert post.obj["request_id"] == rid and post.obj["payload"] == created["payload"]
        # A forged body fails the same check.
        with pytest.raises(Exception, match="No matching signature"):
            verifier.verify(posts[0].body.replace(b"queued", b"success"), posts[0].headers)
        final = posts[-1].obj
        # The same video as GET answers (its URL freshly signed at sending time).
        assert final["outcome"]["video_url"].split("?")[0] == done["outcome"]["video_url"].split("?")[0]
        video = httpx.get(final["outcome"]["video_url"], timeout=30)
        assert video.status_code == 200 and decode_video(video.content)[0] > 0
        listed = until(
            lambda: all(d["state"] == "delivered" for d in deliveries(api, rid)) and deliveries(api, rid),
            what="delivered",
        )
        assert [d["event"] for d in listed] == ["queued", "processing", "success"]
        assert [d["delivery_id"] for d in listed] == [p.headers["webhook-id"] for p in posts]
        assert all(d["attempts"] == 1 and d["last_status_code"] == 200 for d in listed)
    # The SDK reads the same list.
    with Client(server.url, api_key=server.key) as sdk:
        typed = sdk.deliveries(rid)
    assert [(d.event, d.state, d.attempts) for d in typed] == [(d["event"], "delivered", 1) for d in listed]


def test_a_failing_receiver_gets_retries_with_the_same_id_until_it_answers(server: Server, receiver: Receiver) -> None:
    receiver.script["/hooks/flaky"] = [500, 503]  # the first delivery fails twice, then 200s
    with server.client() as api:
        rid = submit_with_hook(api, receiver.url("/hooks/flaky"))["request_id"]
        wait_for(api, rid)
        listed = until(
            lambda: (
                len(deliveries(api, rid)) == 3
                and all(d["state"] == "delivered" for d in deliveries(api, rid))
                and deliveries(api, rid)
            ),
            what="all delivered",
        )
    first = listed[0]
    assert (first["event"], first["attempts"], first["last_status_code"]) == ("queued", 3, 200)
    ids = [p.headers["webhook-id"] for p in receiver.posts("/hooks/flaky")]
    assert ids[:3] == [first["delivery_id"]] * 3
    # The later changes waited for the first: the receiver saw the statuses in order.
    statuses = [p.obj["status"] for p in receiver.posts("/hooks/flaky")]
    assert statuses == ["queued", "queued", "queued", "processing", "success"]
    # /metrics counts the attempts by how they went (the module's server: other tests' attempts count too).
    metrics = httpx.get(server.url + "/metrics").text
    counts = {
        result: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        for result in ("delivered", "retrying", "failed")
        if line.startswith(f'vidqueue_webhook_attempts_total{{result="{result}"}}')
    }
    assert counts["delivered"] >= 3 and counts["retrying"] >= 2, counts


def test_a_dead_or_slow_receiver_never_holds_up_the_request_and_is_given_up(server: Server, receiver: Receiver) -> None:
    receiver.script["/hooks/down"] = [503] * 1000
    receiver.slow_s["/hooks/slow"] = 3.0  # three times the webhook timeout
    with server.client() as api:
        start = time.monotonic()
        down = submit_with_hook(api, receiver.url("/hooks/down"))["request_id"]
        slow = submit_with_hook(api, receiver.url("/hooks/slow"))["request_id"]
        assert wait_for(api, down)["status"] == "success"
        assert wait_for(api, slow)["status"] == "success"
        took = time.monotonic() - start
        # The requests ran at the emulator's pace, not the receivers'.
        assert took < 5, took
        given_up = until(
            lambda: deliveries(api, down)[0]["state"] == "failed" and deliveries(api, down), timeout=30, what="give up"
        )
    first = given_up[0]
    assert first["attempts"] >= 3 and first["last_status_code"] == 503
    assert "503" in first["last_error"]
    assert first["next_attempt_at"] is None


def test_pending_deliveries_survive_a_restart(tmp_path: Path, receiver: Receiver) -> None:
    # The receiver is down (nothing listens on its port) while the request runs; the outbox keeps the changes.
    gone = free_port()
    env = {**HOOK_ENV, "VIDQUEUE_WEBHOOK_MAX_AGE_S": "600", "VIDQUEUE_WEBHOOK_RETRY_BASE_S": "0.2"}
    with running_server(tmp_path, workers=1, **env) as srv, srv.client() as api:
        rid = submit_with_hook(api, f"http://127.0.0.1:{gone}/late")["request_id"]
        wait_for(api, rid)
        pending = until(lambda: deliveries(api, rid)[0]["attempts"] >= 1 and deliveries(api, rid), what="an attempt")
        assert all(d["state"] == "pending" for d in pending)
        assert "could not be reached" in pending[0]["last_error"]
        key = srv.key
    late = Receiver(gone).start()
    try:
        with running_server(tmp_path, workers=1, **env) as srv, srv.client(key=key) as api:
            listed = until(
                lambda: all(d["state"] == "delivered" for d in deliveries(api, rid)) and deliveries(api, rid),
                timeout=30,
                what="delivery after the restart",
            )
        assert [d["event"] for d in listed] == ["queued", "processing", "success"]
        assert [p.obj["status"] for p in late.posts("/late")] == ["queued", "processing", "success"]
    finally:
        late.stop()


def test_callback_urls_to_private_addresses_are_refused(tmp_path: Path) -> None:
    with running_server(tmp_path, workers=0, VIDQUEUE_ALLOW_PRIVATE_URLS="0") as srv, srv.client() as api:
        cases = {
            "http://127.0.0.1:9/hook": "loopback",
            "http://localhost:9/hook": "resolves to 127.0.0.1",
            "http://169.254.169.254/latest/meta-data": "link-local",
            "http://10.1.2.3/hook": "private",
            "ftp://example.com/hook": "must use http or https",
        }
        for url, rule in cases.items():
            resp = api.post("/requests", json={"model": MODEL, "payload": {"prompt": "x"}, "callback_url": url})
            assert resp.status_code == 400, (url, resp.text)
            body = resp.json()
            assert body["details"][0]["field"] == "callback_url", body
            assert rule in body["details"][0]["message"], (rule, body)
        resp = api.post("/requests", json={"model": MODEL, "payload": {"prompt": "x"}, "callback_url": "x" * 2049})
        assert resp.status_code == 400 and resp.json()["details"][0]["field"] == "callback_url"
        assert api.get("/requests").json()["total"] == 0  # nothing refused was queued


def test_deliveries_are_per_organisation(server: Server, receiver: Receiver) -> None:
    other = server.create_key("other-org")
    with server.client() as api, server.client(key=other) as stranger:
        rid = submit(api, MODEL, {"prompt": "no hook"})["request_id"]
        assert deliveries(api, rid) == []
        assert stranger.get(f"/requests/{rid}/deliveries").status_code == 404
