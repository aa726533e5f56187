"""The kling and gmi engines through the real server, against fake Kling and GMI servers on loopback.

Each scenario runs against both upstreams. The fakes count the tasks they create: whatever fails or crashes, a
request never makes a second paid task.
"""

from __future__ import annotations

import base64
import io
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from PIL import Image

from tests.cases import MASTER, PROMPT, TURBO
from tests.fakes import Fault, GmiFake, KlingFake
from tests.fakes.base import VIDEO_FRAMES, VIDEO_HEIGHT, VIDEO_WIDTH
from tests.support import Server, running_server, submit, wait_for

ACCESS_KEY = "ak-vidqueue-test"
SECRET_KEY = "sk-vidqueue-test-0123456789abcdef0123"  # 32+ bytes, as Kling's are
GMI_KEY = "gmi-test-key"

# Fast polls and retries, a 1 s call timeout (so a 2 s answer is "slow") and a short retry deadline.
UPSTREAM_TOML = """
poll_interval_s = 0.1
max_poll_interval_s = 0.3
retry_backoff_s = 0.05
retry_deadline_s = 8
request_timeout_s = 1.0
max_wait_s = 60
download_timeout_s = 10
"""


@dataclass
class Upstream:
    """A fake upstream and a vidqueue server routed to it."""

    kind: str
    fake: KlingFake | GmiFake
    server: Server
    api: httpx.Client

    def task_of(self, request: dict[str, Any]) -> dict[str, Any]:
        """The fake's record of the task a finished request used."""
        task_id = request["outcome"]["upstream"]["task_id"]
        return self.fake.tasks[task_id]

    def sent_payload(self, task: dict[str, Any]) -> dict[str, Any]:
        """What vidqueue sent upstream, in vidqueue's payload terms (Kling's body is flat, GMI's nests it)."""
        body: dict[str, Any] = task["body"]
        return body if self.kind == "kling" else body["payload"]


def _server_for(kind: str, fake: KlingFake | GmiFake, tmp: Path, **extra: str) -> Iterator[Server]:
    config = tmp / "vidqueue.toml"
    config.write_text(f"[engines.{kind}]\n{UPSTREAM_TOML}")
    env = {"VIDQUEUE_CONFIG": str(config), f"VIDQUEUE_{kind.upper()}_BASE_URL": fake.url}
    if kind == "kling":
        env.update(KLING_ACCESS_KEY=ACCESS_KEY, KLING_SECRET_KEY=SECRET_KEY)
    else:
        env.update(GMI_API_KEY=GMI_KEY)
    with running_server(tmp, workers=2, **{**env, **extra}) as server:
        yield server


@pytest.fixture(scope="module", params=["kling", "gmi"])
def running(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """One fake and one server per upstream kind, shared by the module's scenarios."""
    kind = request.param
    fake: KlingFake | GmiFake = KlingFake(ACCESS_KEY, SECRET_KEY) if kind == "kling" else GmiFake(GMI_KEY)
    with fake:
        for server in _server_for(kind, fake, tmp_path_factory.mktemp(kind)):
            with server.client() as api:
                yield Upstream(kind, fake, server, api)


@pytest.fixture
def up(running: Upstream) -> Iterator[Upstream]:
    """The shared upstream, its knobs reset for this test; every injected fault must have been used."""
    fake = running.fake
    fake.polls_to_finish = 2
    fake.finish_as = "succeed" if running.kind == "kling" else "success"
    fake.missing_results = False
    yield running
    for route in ("create", "query", "list", "download"):
        assert fake.faults_left(route) == 0, f"unused {route} faults"  # type: ignore[arg-type]
    assert fake.errors == []


def _png(width: int = 400, height: int = 320) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 90)).save(out, format="PNG")
    return out.getvalue()


def _prompt(tag: str = "") -> str:
    """A prompt no other test uses: GMI's engine finds a lost create by its payload, as a real client's twin would."""
    return f"{PROMPT} {tag}#{uuid.uuid4().hex[:8]}"


def _finish(up: Upstream, payload: dict[str, Any], model: str = MASTER, timeout: float = 60) -> dict[str, Any]:
    created = submit(up.api, model, payload)
    return wait_for(up.api, created["request_id"], timeout=timeout)


def _assert_success_once(up: Upstream, done: dict[str, Any], creates_before: int) -> dict[str, Any]:
    assert done["status"] == "success", (done["error"], up.server.log()[-3000:])
    assert up.fake.creates == creates_before + 1
    return up.task_of(done)


def _decoded_frames(data: bytes) -> list[tuple[int, int]]:
    with av.open(io.BytesIO(data)) as container:
        return [(f.width, f.height) for f in container.decode(video=0)]


# -- success --------------------------------------------------------------------------------------------------
def test_text_to_video_result_is_copied_into_vidqueue_storage(up: Upstream) -> None:
    before = up.fake.creates
    done = _finish(up, {"prompt": _prompt(), "duration": "5", "aspect_ratio": "9:16"})
    task = _assert_success_once(up, done, before)
    sent = up.sent_payload(task)
    assert sent["prompt"].startswith(PROMPT) and sent["duration"] == "5" and sent["aspect_ratio"] == "9:16"
    if up.kind == "kling":
        assert task["kind"] == "text2video"
        assert sent["model_name"] == "kling-v2-master" and sent["external_task_id"] == done["request_id"]
    else:
        assert task["body"]["model"] == MASTER
        assert f"vidqueue-{done['request_id']}" in up.fake.idempotency_keys  # type: ignore[union-attr]
    outcome = done["outcome"]
    assert outcome["engine"] == up.kind and outcome["upstream"]["provider"] == up.kind
    url = outcome["media_urls"][0]["url"]
    # The URL is vidqueue's own (it outlives the upstream's), and it serves exactly the upstream's bytes.
    assert url.startswith(up.server.url + "/media/") and not url.startswith(up.fake.url)
    assert outcome["video_url"] == url and outcome["thumbnail_image_url"].startswith(up.server.url + "/media/")
    data = httpx.get(url, timeout=10).content
    assert data == up.fake.video_bytes(outcome["upstream"]["task_id"])
    assert _decoded_frames(data) == [(VIDEO_WIDTH, VIDEO_HEIGHT)] * VIDEO_FRAMES
    assert outcome["video"]["frames"] == VIDEO_FRAMES and outcome["video"]["width"] == VIDEO_WIDTH
    thumb = httpx.get(outcome["thumbnail_image_url"], timeout=10)
    assert Image.open(io.BytesIO(thumb.content)).format == "JPEG"


def test_image_to_video_sends_the_checked_image_as_raw_base64(up: Upstream) -> None:
    before = up.fake.creates
    png = _png()
    done = _finish(up, {"prompt": _prompt(), "image": base64.b64encode(png).decode()}, model=TURBO)
    task = _assert_success_once(up, done, before)
    sent = up.sent_payload(task)
    assert not sent["image"].startswith("data:")
    assert base64.b64decode(sent["image"]) == png
    if up.kind == "kling":
        assert task["kind"] == "image2video" and sent["model_name"] == "kling-v2-5-turbo"
        assert "aspect_ratio" not in sent


def test_every_result_video_is_copied(up: Upstream) -> None:
    up.fake.videos_per_task = 2
    try:
        done = _finish(up, {"prompt": _prompt()})
    finally:
        up.fake.videos_per_task = 1
    assert done["status"] == "success", done
    media = done["outcome"]["media_urls"]
    assert [m["id"] for m in media] == ["0", "1"]
    task_id = done["outcome"]["upstream"]["task_id"]
    for n, item in enumerate(media):
        assert httpx.get(item["url"], timeout=10).content == up.fake.video_bytes(task_id, n)


# -- the upstream says no -------------------------------------------------------------------------------------
def test_failed_task_fails_the_request_with_the_upstream_reason(up: Upstream) -> None:
    up.fake.finish_as = "failed"
    done = _finish(up, {"prompt": _prompt()})
    assert done["status"] == "failed"
    assert done["outcome"]["error"]["code"] == "upstream_error"
    assert up.fake.fail_message in done["error"]


def test_content_policy_rejection_is_final_and_not_retried(up: Upstream) -> None:
    before, calls = up.fake.creates, len(up.fake.calls)
    done = _finish(up, {"prompt": _prompt("a forbidden scene")})
    assert done["status"] == "failed" and done["outcome"]["error"]["code"] == "upstream_rejected", done
    assert up.fake.creates == before
    creates = [c for c in up.fake.calls[calls:] if c[0] == "POST"]
    assert len(creates) == 1  # no retry


# -- transient failures ---------------------------------------------------------------------------------------
def _status(up: Upstream, http_status: int, kling_code: int | None) -> Fault:
    code = kling_code if up.kind == "kling" else (http_status if kling_code is not None else None)
    return Fault("status", http_status=http_status, code=code, message="injected")


def test_rate_limited_twice_then_success(up: Upstream) -> None:
    before = up.fake.creates
    up.fake.inject("create", _status(up, 429, 1302), _status(up, 429, 1303))
    done = _finish(up, {"prompt": _prompt()})
    _assert_success_once(up, done, before)


def test_server_errors_twice_then_success(up: Upstream) -> None:
    before = up.fake.creates
    up.fake.inject("create", _status(up, 500, 5000), Fault("status", http_status=500))
    up.fake.inject("query", _status(up, 503, 5001), Fault("status", http_status=502))
    done = _finish(up, {"prompt": _prompt()})
    _assert_success_once(up, done, before)


def test_connection_reset_after_the_create_does_not_create_twice(up: Upstream) -> None:
    before = up.fake.creates
    up.fake.inject("create", Fault("reset", after=True))
    up.fake.inject("query", Fault("reset"))
    up.fake.inject("download", Fault("reset"))
    done = _finish(up, {"prompt": _prompt()})
    _assert_success_once(up, done, before)


def test_slow_upstream_answers_are_retried_without_a_second_task(up: Upstream) -> None:
    before = up.fake.creates
    up.fake.polls_to_finish = 6  # a slow task, too
    up.fake.inject("create", Fault("delay", seconds=2.0))  # past the 1 s call timeout: the create lands late
    up.fake.inject("query", Fault("delay", seconds=2.0))
    created = submit(up.api, MASTER, {"prompt": _prompt()})
    seen = set()
    deadline = time.monotonic() + 60
    while (body := up.api.get(f"/requests/{created['request_id']}").json())["status"] not in ("success", "failed"):
        seen.add(body["progress"])
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
    _assert_success_once(up, body, before)
    assert any(0 < p < 100 for p in seen), seen  # progress moved while the upstream worked
    time.sleep(1.5)  # the late create has surely been answered by now: still one task
    assert up.fake.creates == before + 1


def test_malformed_json_is_retried(up: Upstream) -> None:
    before = up.fake.creates
    up.fake.inject("create", Fault("malformed"))
    up.fake.inject("query", Fault("malformed"))
    done = _finish(up, {"prompt": _prompt()})
    _assert_success_once(up, done, before)


def test_result_url_that_answers_404_fails_with_a_clear_message(up: Upstream) -> None:
    up.fake.missing_results = True
    done = _finish(up, {"prompt": _prompt()})
    assert done["status"] == "failed" and done["outcome"]["error"]["code"] == "upstream_error", done
    message = done["error"]
    assert "result video" in message and "HTTP 404" in message and "?" not in message


# -- cancel ---------------------------------------------------------------------------------------------------
def test_cancel_while_waiting_ends_cancelled_and_says_the_task_may_be_billed(up: Upstream) -> None:
    before = up.fake.creates
    up.fake.polls_to_finish = 10_000
    created = submit(up.api, MASTER, {"prompt": _prompt()})
    rid = created["request_id"]
    deadline = time.monotonic() + 30
    while up.fake.creates == before:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    wait_for(up.api, rid, {"processing"})
    resp = up.api.post(f"/requests/{rid}/cancel")
    assert resp.status_code == 200
    done = wait_for(up.api, rid, timeout=30)
    assert done["status"] == "cancelled", done
    assert "billed" in done["error"] and "no cancel call" in done["error"]
    assert up.fake.creates == before + 1


# -- crashes --------------------------------------------------------------------------------------------------
def _kill_worker_of(up: Upstream, rid: str) -> str:
    body = wait_for(up.api, rid, {"processing"})
    worker = body["qworker_id"]
    os.kill(int(worker.rsplit("-", 1)[1]), signal.SIGKILL)
    return str(worker)


@pytest.mark.parametrize("when", ["create in flight", "waiting"])
def test_worker_killed_after_its_upstream_submit_makes_one_task(up: Upstream, when: str) -> None:
    before = up.fake.creates
    if when == "create in flight":
        # The fake makes the task, then holds its answer: the worker dies before it learns the task id.
        up.fake.inject("create", Fault("hold", seconds=3.0))
    else:
        up.fake.polls_to_finish = 8
    created = submit(up.api, MASTER, {"prompt": _prompt()})
    rid = created["request_id"]
    deadline = time.monotonic() + 30
    while up.fake.creates == before or (when == "waiting" and not _queried(up)):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    victim = _kill_worker_of(up, rid)
    done = wait_for(up.api, rid, timeout=60)
    assert done["status"] == "success", done
    assert done["attempts"] == 2 and done["qworker_id"] != victim
    assert up.fake.creates == before + 1
    time.sleep(3.5 if when == "create in flight" else 0)  # the held answer went nowhere; still one task
    assert up.fake.creates == before + 1


def _queried(up: Upstream) -> bool:
    return any(m == "GET" and "/results/" not in p and p.count("/") >= 4 for m, p in up.fake.calls[-3:])


# -- routing --------------------------------------------------------------------------------------------------
def test_routing_is_printed_at_start_and_shown_in_model_details(up: Upstream) -> None:
    for model in (TURBO, MASTER):
        details = up.api.get(f"/models/{model}").json()
        assert details["engine"] == up.kind
        assert details["host_type"] == "external" and details["external_provider"] == up.kind
        assert up.server.wait_for_log(f"model {model} → {up.kind} ({up.fake.url}, at most 4 in flight)")


# -- credentials and concurrency (their own fake and server) --------------------------------------------------
def test_kling_credentials_it_does_not_accept_fail_the_request_with_a_hint(tmp_path: Path) -> None:
    with KlingFake(ACCESS_KEY, SECRET_KEY) as fake:
        for server in _server_for("kling", fake, tmp_path, KLING_SECRET_KEY="not-the-secret-" + "x" * 24):
            with server.client() as api:
                created = submit(api, MASTER, {"prompt": _prompt()})
                done = wait_for(api, created["request_id"], timeout=30)
        assert done["status"] == "failed" and done["outcome"]["error"]["code"] == "upstream_error"
        assert "KLING_ACCESS_KEY" in done["error"] and "KLING_SECRET_KEY" in done["error"]
        assert fake.creates == 0 and fake.auth_failures >= 1


def test_one_worker_holds_many_upstream_requests_and_the_concurrency_cap_holds(tmp_path: Path) -> None:
    with KlingFake(ACCESS_KEY, SECRET_KEY) as fake:
        fake.polls_to_finish = 6
        for server in _server_for("kling", fake, tmp_path, VIDQUEUE_KLING_CONCURRENCY="3"):
            with server.client() as api:
                ids = [submit(api, MASTER, {"prompt": _prompt()})["request_id"] for _ in range(7)]
                most, per_worker = 0, 0
                deadline = time.monotonic() + 90
                while True:
                    listed = api.get("/requests", params={"limit": 100}).json()["requests"]
                    mine = [r for r in listed if r["request_id"] in ids]
                    busy = [r for r in mine if r["status"] == "processing"]
                    most = max(most, len(busy))
                    workers = [r["qworker_id"] for r in busy]
                    per_worker = max([per_worker, *(workers.count(w) for w in workers)])
                    if all(r["status"] == "success" for r in mine):
                        break
                    assert time.monotonic() < deadline, mine
                    time.sleep(0.03)
        assert most == 3  # the cap, reached and never passed, across both worker processes
        assert per_worker >= 2  # one process waits on several upstream tasks at once
        assert fake.creates == 7
