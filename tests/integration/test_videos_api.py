"""The /v1/videos API against the real server, driven by the official `openai` package as its users would."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import openai
import pytest
from PIL import Image

from tests.cases import MASTER, PROMPT, TURBO
from tests.docblocks import find_block
from tests.support import BASE, Server, decode_video, running_server, submit, wait_for

# The SDK marks its videos methods deprecated (OpenAI's own service is closing); the API shape stays.
pytestmark = pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")


def _sdk(server: Server, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key or server.key, max_retries=0, timeout=30)


def _png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def _seconds(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames / float(stream.average_rate)


@pytest.fixture(scope="module")
def sdk(server: Server) -> Iterator[openai.OpenAI]:
    """The SDK against the module's server (2 workers, the emulator), with the first key."""
    with _sdk(server) as client:
        yield client


@pytest.fixture(scope="module")
def queued(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server without workers, so videos stay queued; bodies up to 64 KiB."""
    tmp: Path = tmp_path_factory.mktemp("queued")
    with running_server(tmp, workers=0, VIDQUEUE_MAX_BODY_BYTES="65536") as srv:
        yield srv


# -- the SDK's flow -------------------------------------------------------------------------------------------


def test_text_to_video_runs_create_and_poll_download_list_and_delete(server: Server, sdk: openai.OpenAI) -> None:
    video = sdk.videos.create_and_poll(model=MASTER, prompt=PROMPT, seconds="5", size="720x1280")
    assert video.status == "completed" and video.progress == 100 and video.error is None
    assert (video.object, video.model, video.prompt, video.seconds, video.size) == (
        "video",
        MASTER,
        PROMPT,
        "5",
        "720x1280",
    )
    assert video.completed_at is not None and video.expires_at is not None
    assert video.created_at <= video.completed_at < video.expires_at

    data = sdk.videos.download_content(video.id).read()
    frames, width, height = decode_video(data)
    assert (frames, width, height) == (120, 720, 1280)
    assert _seconds(data) == pytest.approx(5.0)
    thumbnail = sdk.videos.download_content(video.id, variant="thumbnail").read()
    assert Image.open(io.BytesIO(thumbnail)).format == "JPEG"

    assert video.id in [v.id for v in sdk.videos.list(limit=100)]

    deleted = sdk.videos.delete(video.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (video.id, "video.deleted", True)
    with pytest.raises(openai.NotFoundError):
        sdk.videos.retrieve(video.id)
    with server.client() as gmi:
        assert gmi.get(f"/requests/{video.id}").status_code == 404  # gone from both APIs, with its media


def test_image_to_video_takes_an_uploaded_file_as_its_first_frame(sdk: openai.OpenAI) -> None:
    image = _png(640, 400, (200, 40, 40))
    video = sdk.videos.create_and_poll(model=TURBO, prompt=PROMPT, input_reference=("ref.png", image, "image/png"))
    assert video.status == "completed", video.error
    assert video.size == "1280x800"  # the image's shape, long side 1280
    data = sdk.videos.download_content(video.id).read()
    with av.open(io.BytesIO(data)) as container:
        first = next(container.decode(video=0)).to_image()
    assert first.size == (1280, 800)
    r, g, b = first.resize((1, 1)).getpixel((0, 0))  # type: ignore[misc]
    assert r > 150 and g < 100 and b < 100
    assert _seconds(data) == pytest.approx(5.0)
    sdk.videos.delete(video.id)


def test_content_is_served_in_byte_ranges(server: Server, sdk: openai.OpenAI) -> None:
    video = sdk.videos.create_and_poll(model=MASTER, prompt=PROMPT, size="720x720")
    whole = sdk.videos.download_content(video.id).read()
    headers = {"Authorization": f"Bearer {server.key}", "Range": "bytes=100-199"}
    part = httpx.get(f"{server.url}/v1/videos/{video.id}/content", headers=headers, timeout=30)
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-199/{len(whole)}"
    assert part.content == whole[100:200]


def test_the_docs_example_makes_a_video(server: Server, tmp_path: Path) -> None:
    code = find_block("docs/api.md", "OpenAI(", "python").code.replace("http://127.0.0.1:8000", server.url)
    env = {**os.environ, "VIDQUEUE_API_KEY": server.key or ""}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    _, status, size = out.stdout.split()
    assert (status, size) == ("completed", "720x1280")
    assert decode_video((tmp_path / "fox-openai.mp4").read_bytes()) == (120, 720, 1280)


# -- the same requests through both APIs ----------------------------------------------------------------------


def test_a_request_submitted_on_the_gmi_path_reads_through_v1(server: Server, sdk: openai.OpenAI) -> None:
    with server.client() as gmi:
        created = submit(gmi, MASTER, {"prompt": PROMPT, "aspect_ratio": "1:1", "duration": "5"})
        done = wait_for(gmi, created["request_id"])
    assert done["status"] == "success"
    video = sdk.videos.retrieve(created["request_id"])
    assert (video.id, video.status, video.size, video.seconds, video.prompt) == (
        created["request_id"],
        "completed",
        "720x720",
        "5",
        PROMPT,
    )
    assert decode_video(sdk.videos.download_content(video.id).read()) == (120, 720, 720)


def test_a_video_created_on_v1_reads_through_the_gmi_path(server: Server, sdk: openai.OpenAI) -> None:
    video = sdk.videos.create(
        model=MASTER,
        prompt=PROMPT,
        seconds="5",
        size="1280x720",
        extra_body={"negative_prompt": "blur", "cfg_scale": 0.7},
    )
    with server.client() as gmi:
        done = wait_for(gmi, video.id)
    assert done["status"] == "success"
    payload = done["payload"]
    assert payload["duration"] == "5" and payload["aspect_ratio"] == "16:9"
    assert payload["negative_prompt"] == "blur" and payload["cfg_scale"] == 0.7  # form strings read as numbers
    assert done["outcome"]["video"]["width"] == 1280


def test_v1_and_gmi_answer_the_same_ids_and_statuses_for_queued_requests(queued: Server) -> None:
    with queued.client() as gmi, _sdk(queued) as sdk:
        from_gmi = submit(gmi, TURBO, {"prompt": PROMPT})
        from_v1 = sdk.videos.create(model=TURBO, prompt=PROMPT)
        assert sdk.videos.retrieve(from_gmi["request_id"]).status == "queued"
        assert gmi.get(f"/requests/{from_v1.id}").json()["status"] == "queued"
        listed = [v.id for v in sdk.videos.list(limit=100)]
        assert from_gmi["request_id"] in listed and from_v1.id in listed


# -- reading and paging ------------------------------------------------------------------------------------


def test_an_unfinished_video_tells_the_poll_helper_when_to_ask_again(queued: Server) -> None:
    with _sdk(queued) as sdk:
        video = sdk.videos.create(model=TURBO, prompt=PROMPT)
        raw = sdk.videos.with_raw_response.retrieve(video.id)
        assert int(raw.headers["openai-poll-after-ms"]) > 0
        fetched = raw.parse()
        assert (fetched.status, fetched.progress, fetched.completed_at, fetched.error) == ("queued", 0, None, None)
        assert (fetched.seconds, fetched.size) == ("5", "1280x720")  # the model's defaults


def test_list_pages_with_after_in_either_order(queued: Server) -> None:
    key = queued.create_key("paging")
    with _sdk(queued, key) as sdk:
        ids = [sdk.videos.create(model=TURBO, prompt=f"{PROMPT} {i}").id for i in range(5)]
        first = sdk.videos.list(limit=2)
        assert [v.id for v in first.data] == [ids[4], ids[3]]
        assert first.has_more is True
        assert [v.id for v in sdk.videos.list(limit=2, after=ids[3]).data] == [ids[2], ids[1]]
        assert [v.id for v in sdk.videos.list(limit=10, order="asc")] == ids  # the SDK follows the pages
        assert [v.id for v in sdk.videos.list(limit=2, order="asc")] == ids  # auto-paging, 2 at a time
        last = sdk.videos.list(limit=2, after=ids[3], order="asc")
        assert [v.id for v in last.data] == [ids[4]] and last.has_more is False
    raw = httpx.get(f"{queued.url}/v1/videos", params={"limit": 2}, headers={"Authorization": f"Bearer {key}"})
    body = raw.json()
    assert body["object"] == "list" and (body["first_id"], body["last_id"]) == (ids[4], ids[3])


def test_delete_cancels_a_queued_video_then_deletes_it(queued: Server) -> None:
    with _sdk(queued) as sdk:
        video = sdk.videos.create(model=TURBO, prompt=PROMPT)
        assert sdk.videos.delete(video.id).deleted is True
        cancelled = sdk.videos.retrieve(video.id)
        assert cancelled.status == "failed" and cancelled.error is not None
        assert cancelled.error.code == "cancelled"
        with pytest.raises(openai.NotFoundError):
            sdk.videos.download_content(video.id)
        sdk.videos.delete(video.id)  # finished now: deleted
        with pytest.raises(openai.NotFoundError):
            sdk.videos.retrieve(video.id)
        with pytest.raises(openai.NotFoundError):
            sdk.videos.delete(video.id)


def test_models_list_in_the_openai_shape(queued: Server) -> None:
    with _sdk(queued) as sdk:
        models = {m.id: m for m in sdk.models.list()}
        assert TURBO in models and MASTER in models
        assert models[TURBO].object == "model" and models[TURBO].created > 0 and models[TURBO].owned_by
        assert sdk.models.retrieve(MASTER).id == MASTER
        with pytest.raises(openai.NotFoundError):
            sdk.models.retrieve("no-such-model")


# -- the model's own parameters ------------------------------------------------------------------------------


def test_form_fields_of_the_models_own_parameters_are_read_as_their_types(queued: Server) -> None:
    with _sdk(queued) as sdk, queued.client() as gmi:
        video = sdk.videos.create(
            model="wan2.1-t2v-1.3b",
            prompt=PROMPT,
            size="480x832",
            seconds="10",
            extra_body={"seed": 42, "num_inference_steps": 4, "cfg_scale": 0.6, "negative_prompt": "blur"},
        )
        assert (video.size, video.seconds) == ("480x832", "10")  # the model's 9:16 frame
        payload = gmi.get(f"/requests/{video.id}").json()["payload"]
    assert payload["aspect_ratio"] == "9:16" and payload["duration"] == "10"
    assert (payload["seed"], payload["num_inference_steps"], payload["cfg_scale"]) == (42, 4, 0.6)


def test_a_json_body_takes_an_image_url_as_input_reference(queued: Server) -> None:
    import base64

    data_url = "data:image/png;base64," + base64.b64encode(_png(400, 400, (0, 0, 255))).decode()
    headers = {"Authorization": f"Bearer {queued.key}"}
    body = {"model": TURBO, "prompt": PROMPT, "seconds": 10, "input_reference": {"image_url": data_url}}
    created = httpx.post(f"{queued.url}/v1/videos", json=body, headers=headers, timeout=30)
    assert created.status_code == 200, created.text
    assert created.json()["seconds"] == "10"
    with queued.client() as gmi:
        payload = gmi.get(f"/requests/{created.json()['id']}").json()["payload"]
    stored = httpx.get(payload["image"], timeout=30)  # kept as the stored input, as on the GMI path
    assert Image.open(io.BytesIO(stored.content)).size == (400, 400)


def test_the_sdk_sends_an_image_url_as_input_reference(queued: Server) -> None:
    import base64

    data_url = "data:image/png;base64," + base64.b64encode(_png(300, 600, (0, 255, 0))).decode()
    with _sdk(queued) as sdk, queued.client() as gmi:
        # A form field input_reference[image_url], as the SDK spells an object in a multipart form (its
        # input_reference argument takes only files, so the object goes in extra_body).
        reference = {"input_reference": {"image_url": data_url}}
        video = sdk.videos.create(model=TURBO, prompt=PROMPT, extra_body=reference)
        payload = gmi.get(f"/requests/{video.id}").json()["payload"]
    assert Image.open(io.BytesIO(httpx.get(payload["image"], timeout=30).content)).size == (300, 600)


def test_a_callback_url_gets_the_same_webhooks_as_on_the_gmi_path(queued: Server) -> None:
    hook = "http://127.0.0.1:9/hooks/v1"
    with _sdk(queued) as sdk, queued.client() as gmi:
        video = sdk.videos.create(model=TURBO, prompt=PROMPT, extra_body={"callback_url": hook})
        deliveries = gmi.get(f"/requests/{video.id}/deliveries").json()["deliveries"]
    assert [(d["event"], d["url"]) for d in deliveries] == [("queued", hook)]


def test_the_same_idempotency_key_answers_the_same_video(queued: Server) -> None:
    with _sdk(queued) as sdk:
        headers = {"Idempotency-Key": "v1-once"}
        first = sdk.videos.create(model=TURBO, prompt=PROMPT, extra_headers=headers)
        again = sdk.videos.create(model=TURBO, prompt=PROMPT, extra_headers=headers)
        assert again.id == first.id
        with pytest.raises(openai.ConflictError):
            sdk.videos.create(model=TURBO, prompt="another", extra_headers=headers)


# -- errors, as the SDK's classes ---------------------------------------------------------------------------


def _error(exc: openai.APIStatusError) -> dict[str, Any]:
    assert isinstance(exc.body, dict)
    assert {"message", "type", "param", "code"} <= set(exc.body)
    return exc.body


def test_a_size_the_model_cannot_make_is_a_bad_request_listing_what_it_can(queued: Server) -> None:
    with _sdk(queued) as sdk, pytest.raises(openai.BadRequestError) as caught:
        sdk.videos.create(model=MASTER, prompt=PROMPT, size="1792x1024")
    error = _error(caught.value)
    assert error["param"] == "size" and error["type"] == "invalid_request_error"
    for size in ("1280x720", "720x1280", "720x720"):
        assert size in error["message"]


def test_a_length_the_model_cannot_make_is_a_bad_request_listing_what_it_can(queued: Server) -> None:
    with _sdk(queued) as sdk, pytest.raises(openai.BadRequestError) as caught:
        sdk.videos.create(model=TURBO, prompt=PROMPT, seconds="4")
    error = _error(caught.value)
    assert error["param"] == "seconds" and '"5", "10"' in error["message"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"model": TURBO}, "prompt"),
        ({"model": TURBO, "prompt": "   "}, "prompt"),
        ({"prompt": PROMPT}, "model"),
        ({"model": TURBO, "prompt": PROMPT, "fps": "30"}, "fps"),
        ({"model": TURBO, "prompt": PROMPT, "cfg_scale": "2"}, "cfg_scale"),
        ({"model": MASTER, "prompt": PROMPT, "input_reference": "https://example.com/a.png"}, "input_reference"),
        ({"model": TURBO, "prompt": PROMPT, "input_reference": "not an image"}, "input_reference"),
        ({"model": MASTER, "prompt": PROMPT, "size": "1280x720", "aspect_ratio": "16:9"}, "aspect_ratio"),
    ],
)
def test_a_bad_field_is_a_bad_request_naming_it(queued: Server, fields: dict[str, str], param: str) -> None:
    files = {name: (None, value) for name, value in fields.items()}  # a multipart form, as the SDK sends
    headers = {"Authorization": f"Bearer {queued.key}"}
    resp = httpx.post(f"{queued.url}/v1/videos", files=files, headers=headers, timeout=30)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == param and error["message"].startswith(param), error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"model": "\\ud800", "prompt": "x"}', "model"),
        (b'{"model": "kling-v2-5-turbo", "prompt": "\\udfff"}', "prompt"),
        (b'{"model": "kling-v2-5-turbo", "prompt": "x", "seconds": 5, "size": 1280}', "size"),
        (b"[1]", "body"),
        (b"{", "body"),
    ],
)
def test_a_bad_json_body_is_a_bad_request_naming_the_field(queued: Server, body: bytes, param: str) -> None:
    headers = {"Authorization": f"Bearer {queued.key}", "Content-Type": "application/json"}
    resp = httpx.post(f"{queued.url}/v1/videos", content=body, headers=headers, timeout=30)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param


def test_an_uploaded_file_that_is_not_an_image_is_a_bad_request(queued: Server) -> None:
    with _sdk(queued) as sdk, pytest.raises(openai.BadRequestError) as caught:
        sdk.videos.create(model=TURBO, prompt=PROMPT, input_reference=("ref.png", b"not a png at all", "image/png"))
    assert _error(caught.value)["param"] == "input_reference"


def test_a_bad_key_is_an_authentication_error(queued: Server) -> None:
    with _sdk(queued, "vq_not_a_key") as sdk, pytest.raises(openai.AuthenticationError) as caught:
        sdk.videos.list()
    assert _error(caught.value)["type"] == "authentication_error"


def test_an_unknown_id_is_not_found(queued: Server) -> None:
    with _sdk(queued) as sdk:
        for call in (sdk.videos.retrieve, sdk.videos.delete, sdk.videos.download_content):
            with pytest.raises(openai.NotFoundError):
                call("no-such-video")
        with pytest.raises(openai.NotFoundError) as caught:
            sdk.videos.create(model="sora-2", prompt=PROMPT)
        assert _error(caught.value)["param"] == "model"


def test_another_organisations_video_is_not_found(queued: Server) -> None:
    with _sdk(queued) as sdk, _sdk(queued, queued.create_key("other-org")) as other:
        video = sdk.videos.create(model=TURBO, prompt=PROMPT)
        with pytest.raises(openai.NotFoundError):
            other.videos.retrieve(video.id)


def test_a_body_over_the_cap_is_413_in_the_v1_shape(queued: Server) -> None:
    headers = {"Authorization": f"Bearer {queued.key}"}
    resp = httpx.post(f"{queued.url}/v1/videos", files={"prompt": (None, "x" * 70_000)}, headers=headers)
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "payload_too_large"


def test_only_the_v1_paths_answer_errors_in_the_v1_shape(queued: Server) -> None:
    v1 = httpx.get(f"{queued.url}/v1/videos")
    gmi = httpx.get(f"{queued.url}{BASE}/requests")
    assert v1.status_code == gmi.status_code == 401
    assert set(v1.json()) == {"error"} and v1.json()["error"]["code"] == "unauthenticated"
    assert isinstance(gmi.json()["error"], str) and gmi.json()["code"] == "unauthenticated"


def test_over_the_rate_limit_is_a_rate_limit_error(tmp_path: Path) -> None:
    with running_server(tmp_path, workers=0, VIDQUEUE_REQUESTS_PER_MINUTE="1") as limited, _sdk(limited) as sdk:
        sdk.videos.create(model=TURBO, prompt=PROMPT)
        with pytest.raises(openai.RateLimitError) as caught:
            sdk.videos.create(model=TURBO, prompt=PROMPT)
    assert _error(caught.value)["code"] == "rate_limited"
    assert 1 <= int(caught.value.response.headers["Retry-After"]) <= 60
