"""The upstream fakes themselves: real HTTP, Kling's JWT checks, body checks, every fault kind, GMI's shapes."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import av
import httpx
import jwt
import pytest
from PIL import Image

from tests.fakes import Fault, GmiFake, KlingFake, kling_jwt
from tests.fakes.gmi import BASE, SDK_BASE

T2V = "/v1/videos/text2video"
I2V = "/v1/videos/image2video"


@pytest.fixture()
def kling() -> Iterator[KlingFake]:
    """A running Kling fake with the default keys."""
    with KlingFake() as fake:
        yield fake


@pytest.fixture()
def kc(kling: KlingFake) -> Iterator[httpx.Client]:
    """A client of the Kling fake with a valid token."""
    with httpx.Client(base_url=kling.url, headers={"Authorization": f"Bearer {kling.token()}"}, timeout=5) as c:
        yield c


@pytest.fixture()
def gmi() -> Iterator[GmiFake]:
    """A running GMI fake."""
    with GmiFake() as fake:
        yield fake


@pytest.fixture()
def gc(gmi: GmiFake) -> Iterator[httpx.Client]:
    """A client of the GMI fake under the public base path."""
    with httpx.Client(base_url=gmi.api_url, headers={"Authorization": "Bearer gmi-test"}, timeout=5) as c:
        yield c


def t2v(prompt: str = "a red fox in the snow", **extra: Any) -> dict[str, Any]:
    """A valid text2video body."""
    return {"model_name": "kling-v2-5-turbo", "prompt": prompt, "duration": "5", **extra}


def png_b64(width: int = 320, height: int = 320) -> str:
    """A PNG as raw base64."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def assert_video(data: bytes) -> None:
    """The bytes are an MP4 that decodes to 24 frames of 160x90."""
    with av.open(io.BytesIO(data), "r") as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 24
    assert {(f.width, f.height) for f in frames} == {(160, 90)}


# -- Kling


def test_kling_round_trip_with_a_pyjwt_token() -> None:
    secret = "s" * 32  # jwt.encode warns about HMAC keys under 32 bytes, and pytest makes warnings errors
    with KlingFake(secret_key=secret) as fake:
        now = int(time.time())
        token = jwt.encode({"iss": "ak-test", "exp": now + 1800, "nbf": now - 5}, secret, algorithm="HS256")
        with httpx.Client(base_url=fake.url, headers={"Authorization": f"Bearer {token}"}) as client:
            created = client.post(T2V, json=t2v(external_task_id="ext-1")).json()
            assert created["code"] == 0 and created["message"] == "SUCCEED" and created["request_id"]
            data = created["data"]
            assert data["task_status"] == "submitted" and data["task_info"] == {"external_task_id": "ext-1"}
            assert data["created_at"] > 10**12  # milliseconds
            task_id = data["task_id"]
            first = client.get(f"{T2V}/{task_id}").json()["data"]
            assert first["task_status"] == "processing" and "task_result" not in first
            done = client.get(f"{T2V}/{task_id}").json()["data"]
            assert done["task_status"] == "succeed"
            [video] = done["task_result"]["videos"]
            assert video["duration"] == "1"
        resp = httpx.get(video["url"])  # result URLs need no token
        assert resp.status_code == 200 and resp.headers["content-type"] == "video/mp4"
        assert int(resp.headers["content-length"]) == len(resp.content)
        assert resp.content == fake.video_bytes(task_id)
        assert_video(resp.content)
        assert fake.video_bytes("another-task") != resp.content
        assert fake.creates == 1 and fake.tokens == {token} and fake.auth_failures == 0
        assert fake.tasks[task_id]["body"] == t2v(external_task_id="ext-1")
        query = ("GET", f"{T2V}/{task_id}")
        assert fake.calls == [("POST", T2V), query, query, ("GET", f"/results/{task_id}/0.mp4")]
        assert not fake.errors


@pytest.mark.parametrize(
    ("make_token", "code"),
    [
        pytest.param(lambda f: kling_jwt(f.access_key, "not-the-secret"), 1002, id="wrong-secret"),
        pytest.param(lambda f: f.token(now=time.time() - 4000), 1004, id="expired"),
        pytest.param(lambda f: kling_jwt("someone-else", f.secret_key), 1002, id="wrong-iss"),
        pytest.param(lambda f: f.token(nbf_ago=-60), 1003, id="not-yet-valid"),
        pytest.param(lambda f: f.token(exp_in=86400), 1002, id="lifetime-too-long"),
        pytest.param(
            lambda f: jwt.encode({"iss": f.access_key, "exp": time.time() + 1800}, "k" * 64, algorithm="HS512"),
            1002,
            id="hs512",
        ),
        pytest.param(lambda f: None, 1001, id="no-header"),
    ],
)
def test_kling_rejects_bad_tokens(kling: KlingFake, make_token: Callable[[KlingFake], str | None], code: int) -> None:
    token = make_token(kling)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = httpx.post(kling.url + T2V, json=t2v(), headers=headers)
    assert resp.status_code == 401
    assert resp.json()["code"] == code and resp.json()["data"] is None
    assert kling.creates == 0 and kling.auth_failures == 1


def test_kling_body_checks(kling: KlingFake, kc: httpx.Client) -> None:
    def reject(path: str, body: dict[str, Any], code: int = 1201) -> str:
        resp = kc.post(path, json=body)
        assert resp.status_code == 400, resp.text
        assert resp.json()["code"] == code
        return str(resp.json()["message"])

    assert "image must be raw base64 without a data: prefix" in reject(
        I2V, {"model_name": "kling-v2-5-turbo", "image": "data:image/png;base64," + png_b64()}
    )
    assert "duration" in reject(T2V, t2v(duration=5))
    assert "seed" in reject(T2V, t2v(seed=1))
    assert "aspect_ratio" in reject(I2V, {"image": png_b64(), "aspect_ratio": "16:9"})
    assert "model_name" in reject(T2V, t2v(model_name="kling-v9"))
    assert "cfg_scale" in reject(T2V, t2v(cfg_scale=1.5))
    assert "image" in reject(I2V, {"image": png_b64(100, 100)})
    assert "Content security policy" in reject(T2V, t2v("something forbidden"), code=1301)
    assert kling.creates == 0
    ok = kc.post(I2V, json={"model_name": "kling-v2-5-turbo", "image": png_b64(), "prompt": "waves", "mode": "pro"})
    assert ok.status_code == 200 and ok.json()["code"] == 0 and kling.creates == 1


def test_kling_external_task_id(kling: KlingFake, kc: httpx.Client) -> None:
    task_id = kc.post(T2V, json=t2v(external_task_id="job-7")).json()["data"]["task_id"]
    dup = kc.post(T2V, json=t2v(external_task_id="job-7"))
    assert dup.status_code == 400 and dup.json()["code"] == 1201
    assert "external_task_id already exists" in dup.json()["message"]
    by_ext = kc.get(f"{T2V}/job-7").json()["data"]
    assert by_ext["task_id"] == task_id and by_ext["task_status"] == "processing"
    wrong_kind = kc.get(f"{I2V}/job-7")
    assert wrong_kind.status_code == 404 and wrong_kind.json()["code"] == 1203
    second = kc.post(T2V, json=t2v()).json()["data"]["task_id"]
    listed = kc.get(T2V, params={"pageNum": 1, "pageSize": 30, "whatever": "x"}).json()["data"]
    assert [t["task_id"] for t in listed] == [second, task_id]
    assert kling.tasks[task_id]["queries"] == 1  # listing does not advance tasks
    assert kling.creates == 2


def test_kling_failed_task_and_missing_results(kling: KlingFake, kc: httpx.Client) -> None:
    kling.polls_to_finish = 1
    kling.finish_as = "failed"
    failed_id = kc.post(T2V, json=t2v()).json()["data"]["task_id"]
    failed = kc.get(f"{T2V}/{failed_id}").json()["data"]
    assert failed["task_status"] == "failed" and failed["task_status_msg"] == kling.fail_message
    kling.finish_as = "succeed"
    kling.videos_per_task = 2
    kling.missing_results = True
    ok_id = kc.post(T2V, json=t2v()).json()["data"]["task_id"]
    videos = kc.get(f"{T2V}/{ok_id}").json()["data"]["task_result"]["videos"]
    assert len(videos) == 2
    assert httpx.get(videos[1]["url"]).status_code == 404


# -- faults (on the Kling fake; the machinery is shared)


def test_fault_status_with_code_then_normal(kling: KlingFake, kc: httpx.Client) -> None:
    kling.inject("create", Fault("status", http_status=429, code=1302, message="rate limit exceeded"))
    resp = kc.post(T2V, json=t2v())
    assert resp.status_code == 429
    assert resp.json()["code"] == 1302 and resp.json()["message"] == "rate limit exceeded"
    assert kling.creates == 0 and kling.faults_left("create") == 0
    assert kc.post(T2V, json=t2v()).status_code == 200 and kling.creates == 1


def test_fault_status_plain_text(kling: KlingFake, kc: httpx.Client) -> None:
    kling.inject("create", Fault("status", http_status=502, message="upstream exploded"))
    resp = kc.post(T2V, json=t2v())
    assert resp.status_code == 502 and resp.text == "upstream exploded"
    assert resp.headers["content-type"].startswith("text/plain")
    assert kling.creates == 0


def test_fault_reset(kling: KlingFake, kc: httpx.Client) -> None:
    kling.inject("create", Fault("reset"), Fault("reset", after=True))
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        kc.post(T2V, json=t2v())
    assert kling.creates == 0
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        kc.post(T2V, json=t2v())
    assert kling.creates == 1  # created, but the answer never came
    assert kc.post(T2V, json=t2v()).status_code == 200
    assert kling.calls == [("POST", T2V)] * 3 and not kling.errors


def test_fault_delay(kling: KlingFake, kc: httpx.Client) -> None:
    task_id = kc.post(T2V, json=t2v()).json()["data"]["task_id"]
    kling.inject("query", Fault("delay", seconds=0.3))
    start = time.monotonic()
    resp = kc.get(f"{T2V}/{task_id}")
    assert time.monotonic() - start >= 0.3
    assert resp.json()["data"]["task_status"] == "processing"


def test_fault_malformed(kling: KlingFake, kc: httpx.Client) -> None:
    kling.inject("create", Fault("malformed"))
    resp = kc.post(T2V, json=t2v())
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        resp.json()
    assert kling.creates == 0


def test_fault_hold_creates_before_answering(kling: KlingFake, kc: httpx.Client) -> None:
    kling.inject("create", Fault("hold", seconds=0.5))
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(kc.post(T2V, json=t2v())))
    thread.start()
    deadline = time.monotonic() + 2
    while kling.creates == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert kling.creates == 1 and not answers  # created, answer still held
    thread.join(timeout=5)
    assert answers[0].status_code == 200 and answers[0].json()["code"] == 0


def test_fault_on_download(kling: KlingFake, kc: httpx.Client) -> None:
    kling.polls_to_finish = 1
    task_id = kc.post(T2V, json=t2v()).json()["data"]["task_id"]
    url = kc.get(f"{T2V}/{task_id}").json()["data"]["task_result"]["videos"][0]["url"]
    kling.inject("download", Fault("status", http_status=503))
    assert httpx.get(url).status_code == 503
    assert httpx.get(url).content == kling.video_bytes(task_id)


# -- GMI


def test_gmi_create_poll_success(gmi: GmiFake, gc: httpx.Client) -> None:
    payload = {"prompt": "a lighthouse at dusk", "duration": "5"}
    body = {"model": "kling-v2-5-turbo", "payload": payload}
    created = gc.post("/requests", json=body, headers={"Idempotency-Key": "k1"})
    assert created.status_code == 200
    req = created.json()
    assert req["status"] == "queued" and req["outcome"] is None and req["payload"] == payload
    assert isinstance(req["created_at"], int) and req["queued_at"] == req["created_at"]
    rid = req["request_id"]
    # The SDK's base path (no /apikey) reaches the same request.
    with httpx.Client(base_url=gmi.url + SDK_BASE, headers={"Authorization": "Bearer gmi-test"}) as sdk:
        assert sdk.get(f"/requests/{rid}").json()["status"] == "processing"
    done = gc.get(f"/requests/{rid}").json()
    assert done["status"] == "success" and done["error"] is None
    [media] = done["outcome"]["media_urls"]
    assert media["id"] == "0" and done["outcome"]["thumbnail_image_url"] is None
    video = httpx.get(media["url"])
    assert video.headers["content-type"] == "video/mp4" and video.content == gmi.video_bytes(rid)
    assert_video(video.content)
    # The Idempotency-Key is recorded, not honoured: the same key makes a second request.
    again = gc.post("/requests", json=body, headers={"Idempotency-Key": "k1"})
    assert again.json()["request_id"] != rid
    assert gmi.creates == 2 and gmi.idempotency_keys == ["k1", "k1"]
    assert gmi.calls[0] == ("POST", BASE + "/requests")


def test_gmi_old_shape_failure_and_errors(gmi: GmiFake, gc: httpx.Client) -> None:
    gmi.polls_to_finish = 1
    gmi.old_shape = True
    body = {"model": "Kling-Text2Video-V2-Master", "payload": {"prompt": "rain"}}
    rid = gc.post("/requests", json=body).json()["request_id"]
    outcome = gc.get(f"/requests/{rid}").json()["outcome"]
    assert outcome == {"video_url": f"{gmi.url}/results/{rid}/0.mp4", "thumbnail_image_url": None}
    gmi.finish_as = "failed"
    rid = gc.post("/requests", json=body).json()["request_id"]
    failed = gc.get(f"/requests/{rid}").json()
    assert failed["status"] == "failed" and failed["error"] == gmi.fail_message
    assert failed["outcome"] == {"error": {"code": "upstream_rejected", "message": gmi.fail_message}}
    assert gc.post("/requests", json={"model": "nope", "payload": {"prompt": "x"}}).status_code == 404
    assert gc.post("/requests", json={"model": "kling-v2-5-turbo", "payload": {}}).status_code == 400
    assert gc.post("/requests", json={"model": "kling-v2-5-turbo", "payload": "x"}).status_code == 400
    policy = gc.post("/requests", json={"model": "kling-v2-5-turbo", "payload": {"prompt": "a forbidden thing"}})
    assert policy.status_code == 400 and policy.json()["error"].startswith("Content policy violation")
    assert gc.get("/requests/no-such-id").status_code == 404
    gmi.inject("query", Fault("status", http_status=500, code=0, message="boom"))
    assert gc.get(f"/requests/{rid}").json() == {"error": "boom"}
    assert gmi.creates == 2


def test_gmi_list(gmi: GmiFake, gc: httpx.Client) -> None:
    ids = [
        gc.post("/requests", json={"model": "kling-v2-5-turbo", "payload": {"prompt": f"p{i}"}}).json()["request_id"]
        for i in range(3)
    ]
    gc.get(f"/requests/{ids[0]}")
    page = gc.get("/requests", params={"limit": 2}).json()
    assert [r["request_id"] for r in page["requests"]] == [ids[2], ids[1]]
    assert page["total"] == 3 and page["next_cursor"]
    rest = gc.get("/requests", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert [r["request_id"] for r in rest["requests"]] == [ids[0]] and rest["next_cursor"] is None
    processing = gc.get("/requests", params={"status": "processing", "model_id": "kling-v2-5-turbo"}).json()
    assert processing["total"] == 1 and processing["requests"][0]["request_id"] == ids[0]
    gmi.list_supported = False
    resp = gc.get("/requests")
    assert resp.status_code == 404 and resp.json() == {"error": "Not Found"}


def test_gmi_auth(gmi: GmiFake) -> None:
    body = {"model": "kling-v2-5-turbo", "payload": {"prompt": "x"}}
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        resp = httpx.post(gmi.api_url + "/requests", json=body, headers=headers)
        assert resp.status_code == 401 and resp.json() == {"error": "Invalid API key"}
    assert gmi.auth_failures == 2 and gmi.creates == 0
