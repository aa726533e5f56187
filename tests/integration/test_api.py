"""The request-queue API against the real server on a loopback port (SQLite, worker processes, emulator)."""

from __future__ import annotations

import io
import time
from typing import Any

import av
import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.cases import LISTED_MODEL_IDS, MASTER, PROMPT, TURBO, VALID, VIOLATIONS
from tests.support import BASE, SDK_BASE, Server, submit, wait_for
from vidqueue.store.sql import SqlStore


def _decode(data: bytes) -> dict[str, Any]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return {
            "frames": frames,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "fps": float(stream.average_rate),
            "codec": stream.codec_context.name,
            "pix_fmt": stream.codec_context.pix_fmt,
        }


def _total(api: httpx.Client) -> int:
    resp = api.get("/requests", params={"limit": 1})
    assert resp.status_code == 200
    return int(resp.json()["total"])


# -- the walk-through --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "payload", "size", "seconds"),
    [
        (TURBO, {"prompt": PROMPT}, (1280, 720), 5),
        (MASTER, {"prompt": PROMPT, "aspect_ratio": "9:16", "duration": "10"}, (720, 1280), 10),
        (MASTER, {"prompt": PROMPT, "aspect_ratio": "1:1", "duration": 5}, (720, 720), 5),
    ],
)
def test_submit_poll_download_gives_a_playable_mp4_of_the_requested_shape(
    api: httpx.Client, model: str, payload: dict[str, Any], size: tuple[int, int], seconds: int
) -> None:
    created = submit(api, model, payload)
    assert created["status"] == "queued"
    assert created["model"] == model
    for key in ("request_id", "created_at", "updated_at", "queued_at"):
        assert created[key]
    done = wait_for(api, created["request_id"])
    assert done["status"] == "success", done
    assert done["progress"] == 100
    outcome = done["outcome"]
    assert outcome["video_url"] == outcome["media_urls"][0]["url"]
    assert outcome["video"]["frames"] == 24 * seconds
    video = httpx.get(outcome["video_url"], timeout=30)  # no Authorization header: signed URL
    assert video.status_code == 200
    assert video.headers["content-type"] == "video/mp4"
    info = _decode(video.content)
    assert (info["width"], info["height"]) == size
    assert info["frames"] == 24 * seconds
    assert info["fps"] == 24
    assert info["codec"] == "h264"
    assert info["pix_fmt"] == "yuv420p"
    thumb = httpx.get(outcome["thumbnail_image_url"], timeout=30)
    assert thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).format == "JPEG"


def test_image_to_video_follows_the_image_and_starts_with_it(api: httpx.Client, tmp_path: Any) -> None:
    img = Image.new("RGB", (600, 900), (200, 40, 40))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    import base64

    data_uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    created = submit(api, TURBO, {"prompt": PROMPT, "image": data_uri})
    done = wait_for(api, created["request_id"])
    assert done["status"] == "success", done
    video = httpx.get(done["outcome"]["video_url"], timeout=30).content
    with av.open(io.BytesIO(video)) as container:
        first = next(container.decode(video=0)).to_image()
    # 600x900 is 2:3; long side 1280, even sizes.
    assert first.size == (854, 1280) or first.size == (852, 1280)
    r, g, b = first.resize((1, 1)).getpixel((0, 0))  # type: ignore[misc]
    assert r > 150 and g < 100 and b < 100


# -- validation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "payload", "field"), VIOLATIONS)
def test_violating_payload_answers_400_naming_the_field_and_queues_nothing(
    api: httpx.Client, model: str, payload: Any, field: str
) -> None:
    before = _total(api)
    resp = api.post("/requests", json={"model": model, "payload": payload})
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["code"]
    assert body["error"]
    assert field in [d["field"] for d in body["details"]], body
    assert _total(api) == before


@pytest.mark.parametrize(("model", "payload", "expected"), VALID[:6])
def test_accepted_payload_is_echoed_with_defaults(
    api: httpx.Client, model: str, payload: dict[str, Any], expected: dict[str, Any]
) -> None:
    created = submit(api, model, payload)
    assert created["payload"] == expected
    api.post(f"/requests/{created['request_id']}/cancel")


def test_unknown_model_is_404(api: httpx.Client) -> None:
    resp = api.post("/requests", json={"model": "kling-v2-5-TURBO", "payload": {"prompt": PROMPT}})
    assert resp.status_code == 404
    assert resp.json()["code"] == "not_found"


def test_body_that_is_not_json_is_415(api: httpx.Client) -> None:
    resp = api.post("/requests", content=b"model=x", headers={"Content-Type": "text/plain"})
    assert resp.status_code == 415
    assert resp.json()["error"]


def test_malformed_json_is_400(api: httpx.Client) -> None:
    resp = api.post("/requests", content=b'{"model": ', headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    assert resp.json()["details"][0]["field"] == "body"


def test_missing_model_field_is_400_naming_it(api: httpx.Client) -> None:
    resp = api.post("/requests", json={"payload": {"prompt": PROMPT}})
    assert resp.status_code == 400
    assert "model" in [d["field"] for d in resp.json()["details"]]


# -- paths, auth and isolation -----------------------------------------------------------------------------


def test_both_base_paths_serve_the_same_requests(server: Server) -> None:
    with server.client(base=BASE) as a, server.client(base=SDK_BASE) as b:
        created = submit(a, MASTER, {"prompt": PROMPT})
        same = b.get(f"/requests/{created['request_id']}")
        assert same.status_code == 200
        assert same.json()["request_id"] == created["request_id"]
        assert a.get("/models").json() == b.get("/models").json()
        a.post(f"/requests/{created['request_id']}/cancel")


def test_models_lists_ids_and_details(api: httpx.Client) -> None:
    body = api.get("/models").json()
    assert body["model_ids"] == LISTED_MODEL_IDS
    assert [m["model"] for m in body["models"]] == LISTED_MODEL_IDS
    detail = api.get(f"/models/{MASTER}").json()
    names = [p["name"] for p in detail["parameters"]]
    assert names == ["prompt", "negative_prompt", "duration", "aspect_ratio", "cfg_scale"]
    assert detail["engine"] == "emulator"
    assert detail["host_type"] == "internal"
    assert detail["payload_schema"]["type"] == "object"
    assert detail["qworkers"] == 2
    assert api.get("/models/nope").status_code == 404


def test_missing_or_wrong_key_is_401(server: Server) -> None:
    with httpx.Client(base_url=server.url + BASE) as anon:
        resp = anon.get("/models")
        assert resp.status_code == 401
        assert resp.json()["code"] == "unauthenticated"
        assert anon.get("/requests", headers={"Authorization": "Bearer vq_wrong"}).status_code == 401
        assert anon.get("/requests", headers={"Authorization": "Basic abc"}).status_code == 401


def test_organization_header_must_match_the_key(server: Server) -> None:
    with server.client(**{"X-Organization-ID": "default"}) as ok:
        assert ok.get("/requests").status_code == 200
    with server.client(**{"X-Organization-ID": "someone-else"}) as bad:
        resp = bad.get("/requests")
        assert resp.status_code == 403
        assert resp.json()["code"] == "forbidden"


def test_another_organisations_request_is_404_like_a_missing_one(server: Server, api: httpx.Client) -> None:
    created = submit(api, MASTER, {"prompt": PROMPT})
    other_key = server.create_key("acme")
    with server.client(other_key) as other:
        theirs = other.get(f"/requests/{created['request_id']}")
        missing = other.get("/requests/00000000-0000-0000-0000-000000000000")
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json()["code"] == missing.json()["code"]
        assert other.post(f"/requests/{created['request_id']}/cancel").status_code == 404
        assert all(r["org_id"] == "acme" for r in other.get("/requests").json()["requests"])
    api.post(f"/requests/{created['request_id']}/cancel")


def test_revoked_key_is_refused(server: Server) -> None:
    from tests.support import run_cli

    key = server.create_key("temp-org")
    with server.client(key) as c:
        assert c.get("/requests").status_code == 200
    listing = run_cli("keys", "list", "--org", "temp-org", "--data-dir", str(server.data_dir))
    key_id = next(word for word in listing.stdout.split() if word.startswith("key_"))
    assert key[:10] in listing.stdout and key not in listing.stdout
    revoked = run_cli("keys", "revoke", key_id, "--data-dir", str(server.data_dir))
    assert revoked.returncode == 0, revoked.stderr
    time.sleep(2.2)  # the API caches key lookups for 2 s
    with server.client(key) as c:
        assert c.get("/requests").status_code == 401


# -- listing -------------------------------------------------------------------------------------------------


def test_list_filters_paginate_with_cursor_and_count_total(server: Server) -> None:
    key = server.create_key("lister")
    with server.client(key) as c:
        ids = [submit(c, MASTER if i % 2 else TURBO, {"prompt": f"{PROMPT} {i}"})["request_id"] for i in range(7)]
        seen: list[str] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = c.get("/requests", params=params).json()
            assert page["total"] == 7
            seen += [r["request_id"] for r in page["requests"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(ids))  # newest first, each once
        masters = c.get("/requests", params={"model_id": MASTER}).json()
        assert masters["total"] == 3
        assert {r["model"] for r in masters["requests"]} == {MASTER}
        c.post(f"/requests/{ids[0]}/cancel")
        cancelled = c.get("/requests", params={"status": "cancelled"}).json()
        assert [r["request_id"] for r in cancelled["requests"]] == [ids[0]]
        assert c.get("/requests", params={"status": "done"}).status_code == 400
        assert c.get("/requests", params={"limit": 0}).status_code == 400
        assert c.get("/requests", params={"limit": 101}).status_code == 400
        bad = c.get("/requests", params={"cursor": "garbage!"})
        assert bad.status_code == 400
        assert bad.json()["details"][0]["field"] == "cursor"
        for rid in ids:
            c.post(f"/requests/{rid}/cancel")


# -- cancel, progress, terminal states --------------------------------------------------------------------


def test_cancel_of_queued_request_is_immediate(server: Server) -> None:
    key = server.create_key("canceller")
    with server.client(key) as c:
        # Fill both workers, then the next one waits in the queue.
        busy = [submit(c, TURBO, {"prompt": f"busy {i}"})["request_id"] for i in range(3)]
        queued = submit(c, TURBO, {"prompt": "wait"})
        assert queued["status"] == "queued"
        resp = c.post(f"/requests/{queued['request_id']}/cancel")
        assert resp.status_code == 200
        body = resp.json()
        assert body["status"] == "cancelled"
        assert body["outcome"]["error"]["code"] == "cancelled"
        assert body["processing_at"] is None
        for rid in busy:
            c.delete(f"/requests/{rid}")


def test_cancel_of_processing_request_stops_it(api: httpx.Client) -> None:
    created = submit(api, MASTER, {"prompt": PROMPT, "duration": "10"})
    wait_for(api, created["request_id"], {"processing"})
    resp = api.delete(f"/requests/{created['request_id']}")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "cancelled", body
    assert body["processing_at"] is not None
    assert body["outcome"] == {"error": {"code": "cancelled", "message": body["error"]}}


def test_progress_moves_from_0_to_100(api: httpx.Client) -> None:
    created = submit(api, MASTER, {"prompt": PROMPT, "duration": "10"})
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = api.get(f"/requests/{created['request_id']}").json()
        seen.append(body["progress"])
        if body["status"] == "success":
            break
        time.sleep(0.05)
    assert seen[0] == 0
    assert seen[-1] == 100
    assert seen == sorted(seen)
    assert len(set(seen)) >= 3  # intermediate values were reported


def test_terminal_states_never_change(api: httpx.Client) -> None:
    created = submit(api, MASTER, {"prompt": PROMPT})
    done = wait_for(api, created["request_id"])
    assert done["status"] == "success"
    again = api.post(f"/requests/{created['request_id']}/cancel")
    assert again.status_code == 200
    after = api.get(f"/requests/{created['request_id']}").json()
    assert after["status"] == "success"
    assert after["finished_at"] == done["finished_at"]
    assert after["outcome"]["video"] == done["outcome"]["video"]


def test_queue_position_counts_down_while_queued(server: Server) -> None:
    key = server.create_key("positions")
    with server.client(key) as c:
        ids = [submit(c, TURBO, {"prompt": f"p {i}"})["request_id"] for i in range(5)]
        last = c.get(f"/requests/{ids[-1]}").json()
        if last["status"] == "queued":
            assert last["queue_position"] >= 1
        for rid in ids:
            c.post(f"/requests/{rid}/cancel")


# -- media ---------------------------------------------------------------------------------------------------


def test_media_supports_range_and_refuses_tampered_urls(api: httpx.Client) -> None:
    created = submit(api, MASTER, {"prompt": PROMPT})
    url = wait_for(api, created["request_id"])["outcome"]["video_url"]
    part = httpx.get(url, headers={"Range": "bytes=0-99"})
    assert part.status_code == 206
    assert len(part.content) == 100
    assert part.headers["content-range"].startswith("bytes 0-99/")
    tampered = url.replace("sig=", "sig=x")
    assert httpx.get(tampered).status_code == 403
    expired = url.split("expires=")[0] + "expires=1&" + url.split("&", 1)[1]
    assert httpx.get(expired).status_code == 403


# -- operations ----------------------------------------------------------------------------------------------


def test_health_ready_metrics_and_docs(server: Server, api: httpx.Client) -> None:
    submit(api, MASTER, {"prompt": PROMPT})
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server.url + "/readyz").status_code == 200
    metrics = httpx.get(server.url + "/metrics").text
    assert "vidqueue_requests{" in metrics
    assert "vidqueue_queue_depth" in metrics
    assert "vidqueue_http_request_duration_seconds_bucket" in metrics
    spec = httpx.get(server.url + "/openapi.json").json()
    assert f"{BASE}/requests" in spec["paths"]
    assert httpx.get(server.url + "/docs").status_code == 200


def test_metrics_show_the_facts_a_worker_wrote_to_the_store(server: Server) -> None:
    # A worker elsewhere (its own process or machine) publishes through the shared store; the API reads it per scrape.
    store = SqlStore.open(f"sqlite:///{server.data_dir / 'vidqueue.db'}")
    facts = {"compile_seconds": {"wan-2.1": 12.5}, "load_seconds": {"wan-2.1": 4.25}, "Not-A-Name": {"wan-2.1": 1.0}}
    try:
        store.worker_seen("worker-facts-test", ["wan-2.1"], facts)
        metrics = httpx.get(server.url + "/metrics").text
    finally:
        store.worker_gone("worker-facts-test")
        store.close()
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    shown = {
        (f.name, s.labels["worker"], s.labels["model"]): s.value
        for f in families.values()
        if f.name.startswith("vidqueue_worker_")
        for s in f.samples
    }
    assert shown[("vidqueue_worker_compile_seconds", "worker-facts-test", "wan-2.1")] == 12.5
    assert shown[("vidqueue_worker_load_seconds", "worker-facts-test", "wan-2.1")] == 4.25
    assert families["vidqueue_worker_compile_seconds"].documentation == (
        "Seconds the worker spent compiling the model's pipeline (torch.compile warm-up at load)."
    )
    assert families["vidqueue_worker_compile_seconds"].type == "gauge"
    assert "Not-A-Name" not in metrics
    assert families["vidqueue_workers"].samples[0].value >= 1  # the test's worker is counted with the server's own


def test_unknown_path_answers_json_error(server: Server) -> None:
    resp = httpx.get(server.url + "/nope")
    assert resp.status_code == 404
    assert resp.json()["code"] == "not_found"


def test_answers_match_their_documented_models(server: Server, api: httpx.Client) -> None:
    from vidqueue.api.schemas import ModelDetails, ModelList, RequestList, RequestOut

    ModelList.model_validate(api.get("/models").json())
    ModelDetails.model_validate(api.get(f"/models/{TURBO}").json())
    created = submit(api, MASTER, {"prompt": PROMPT})
    RequestOut.model_validate(created)
    done = wait_for(api, created["request_id"])
    RequestOut.model_validate(done)
    RequestList.model_validate(api.get("/requests", params={"limit": 5}).json())
    cancelled = submit(api, MASTER, {"prompt": PROMPT})
    RequestOut.model_validate(api.post(f"/requests/{cancelled['request_id']}/cancel").json())
    spec = httpx.get(server.url + "/openapi.json")
    assert spec.status_code == 200
    op = spec.json()["paths"][f"{BASE}/requests/{{request_id}}"]["get"]
    assert op["description"] == "A request of the caller's organisation."
    assert op["security"] == [{"bearer": []}]


# -- Idempotency-Key ---------------------------------------------------------------------------------------


def test_idempotency_key_answers_the_original_request_for_the_same_body(server: Server, api: httpx.Client) -> None:
    body = {"model": TURBO, "payload": {"prompt": "idempotent fox", "duration": "5"}}
    before = _total(api)
    first = api.post("/requests", json=body, headers={"Idempotency-Key": "idem-1"})
    assert first.status_code == 200, first.text
    # The same body with its keys in another order and spelled with other whitespace is the same body.
    again = api.post(
        "/requests",
        content='{"payload": {"duration": "5", "prompt": "idempotent fox"},   "model": "kling-v2-5-turbo"}',
        headers={"Idempotency-Key": "idem-1", "Content-Type": "application/json"},
    )
    assert again.status_code == 200, again.text
    assert again.json()["request_id"] == first.json()["request_id"]
    assert _total(api) == before + 1
    # Without the key, or under another organisation, it is a new request.
    other_org = server.client(server.create_key("initech"))
    theirs = other_org.post("/requests", json=body, headers={"Idempotency-Key": "idem-1"})
    assert theirs.status_code == 200 and theirs.json()["request_id"] != first.json()["request_id"]
    assert api.post("/requests", json=body).json()["request_id"] != first.json()["request_id"]


def test_idempotency_key_with_a_different_body_is_409_and_queues_nothing(api: httpx.Client) -> None:
    ok = api.post("/requests", json={"model": TURBO, "payload": {"prompt": "a"}}, headers={"Idempotency-Key": "k2"})
    assert ok.status_code == 200
    before = _total(api)
    clash = api.post("/requests", json={"model": TURBO, "payload": {"prompt": "b"}}, headers={"Idempotency-Key": "k2"})
    assert clash.status_code == 409, clash.text
    assert clash.json()["code"] == "conflict"
    assert "Idempotency-Key" in clash.json()["error"]
    assert _total(api) == before


def test_an_over_long_idempotency_key_is_refused_naming_the_header(api: httpx.Client) -> None:
    body = {"model": TURBO, "payload": {"prompt": "a"}}
    resp = api.post("/requests", json=body, headers={"Idempotency-Key": "k" * 256})
    assert resp.status_code == 400, resp.text
    assert "Idempotency-Key" in resp.text
