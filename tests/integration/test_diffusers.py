"""The diffusers engine through the real server: tiny random pipelines of every family, built from configs and
saved to a folder, declared as `[models.*] weights = "<folder>"`, and real MP4s read back over HTTP."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from tests.support import Server, diffusers_server, solid_png_b64, submit, wait_for
from tests.tiny_pipelines import build_tiny

# model id → (family, sizes); sizes are multiples of 16 (32 for wan2.2 and LTX), frames run at 4 fps.
MODELS = {
    "tiny-wan21-t2v": "wan2.1-t2v",
    "tiny-wan21-i2v": "wan2.1-i2v",
    "tiny-wan22-ti2v": "wan2.2-ti2v",
    "tiny-ltx": "ltx-video",
}
FPS = 4
SIZES = {"16:9": (64, 32), "9:16": (32, 64), "1:1": (32, 32)}
FRAME_STEP = {"wan2.1-t2v": 4, "wan2.1-i2v": 4, "wan2.2-ti2v": 4, "ltx-video": 8}
TEXT_MODELS = ["tiny-wan21-t2v", "tiny-wan22-ti2v", "tiny-ltx"]
IMAGE_MODELS = ["tiny-wan21-i2v", "tiny-wan22-ti2v", "tiny-ltx"]
PROMPT = "a lighthouse on a cliff at dusk"


def expected_frames(model: str, seconds: int) -> int:
    """The family's frame rule, worked out here independently of the engine: k * step + 1 nearest the duration."""
    step = FRAME_STEP[MODELS[model]]
    return round(seconds * FPS / step) * step + 1


def _config(root: Path) -> Path:
    sizes = "{ " + ", ".join(f'"{r}" = "{w}x{h}"' for r, (w, h) in SIZES.items()) + " }"
    lines = ["[engines.diffusers]", "max_resident = 4", 'device = "cpu"', 'dtype = "float32"', ""]
    for model, family in MODELS.items():
        folder = build_tiny(family, root / model)
        lines += [
            f'[models."{model}"]',
            f'family = "{family}"',
            f'weights = "{folder}"',
            "steps = 2",
            f"fps = {FPS}",
            f"sizes = {sizes}",
            "",
        ]
    # A slower one to cancel: many steps at the largest size.
    lines += [
        '[models."tiny-slow"]',
        'family = "wan2.1-t2v"',
        f'weights = "{root / "tiny-wan21-t2v"}"',
        "steps = 200",
        f"fps = {FPS}",
        'sizes = { "16:9" = "128x64" }',
    ]
    config = root / "vidqueue.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server with one worker that serves every tiny model (pipelines stay resident between tests)."""
    root = tmp_path_factory.mktemp("diffusers")
    with diffusers_server(root, _config(root)) as running:
        yield running


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    """A client of the module's server."""
    with server.client() as client:
        yield client


def _video(done: dict[str, Any]) -> tuple[bytes, list[tuple[int, int]]]:
    assert done["status"] == "success", done
    data = httpx.get(done["outcome"]["media_urls"][0]["url"], timeout=30).content
    with av.open(io.BytesIO(data)) as container:
        sizes = [(f.width, f.height) for f in container.decode(video=0)]
    return data, sizes


def _generate(api: httpx.Client, model: str, payload: dict[str, Any]) -> dict[str, Any]:
    return wait_for(api, submit(api, model, payload)["request_id"], timeout=120)


@pytest.mark.parametrize("model", TEXT_MODELS)
def test_text_to_video_makes_an_mp4_of_the_expected_frames_and_size(api: httpx.Client, model: str) -> None:
    done = _generate(api, model, {"prompt": PROMPT, "duration": "5", "aspect_ratio": "16:9", "seed": 7})
    _, frames = _video(done)
    assert frames == [SIZES["16:9"]] * expected_frames(model, 5)
    generation = done["outcome"]["generation"]
    assert generation["seed"] == 7 and generation["num_inference_steps"] == 2
    assert generation["num_frames"] == len(frames) and (generation["width"], generation["height"]) == SIZES["16:9"]
    assert done["outcome"]["engine"] == "diffusers" and done["outcome"]["video"]["fps"] == FPS
    assert done["outcome"]["thumbnail_image_url"]


@pytest.mark.parametrize("model", IMAGE_MODELS)
def test_image_to_video_makes_an_mp4_of_the_expected_frames_and_size(api: httpx.Client, model: str) -> None:
    payload = {"prompt": PROMPT, "image": solid_png_b64(), "duration": "10", "aspect_ratio": "9:16"}
    _, frames = _video(_generate(api, model, payload))
    assert frames == [SIZES["9:16"]] * expected_frames(model, 10)


def test_a_seed_repeats_its_video_and_another_seed_does_not(api: httpx.Client) -> None:
    payload = {"prompt": PROMPT, "aspect_ratio": "1:1", "seed": 1234}
    first, _ = _video(_generate(api, "tiny-wan21-t2v", payload))
    again, _ = _video(_generate(api, "tiny-wan21-t2v", payload))
    other, _ = _video(_generate(api, "tiny-wan21-t2v", {**payload, "seed": 1235}))
    assert first == again and first != other


def test_without_a_seed_one_is_drawn_and_reported(api: httpx.Client) -> None:
    done = _generate(api, "tiny-ltx", {"prompt": PROMPT, "num_inference_steps": 3, "cfg_scale": 0.0})
    generation = done["outcome"]["generation"]
    assert 0 <= generation["seed"] < 2**32
    assert generation["num_inference_steps"] == 3 and generation["guidance_scale"] == 0.0


def test_a_configured_model_shows_its_engine_and_its_family_parameters(api: httpx.Client) -> None:
    details = api.get("/models/tiny-wan21-i2v").json()
    assert details["engine"] == "diffusers" and details["host_type"] == "internal"
    params = {p["name"]: p for p in details["parameters"]}
    assert list(params) == [
        "prompt",
        "image",
        "negative_prompt",
        "duration",
        "aspect_ratio",
        "cfg_scale",
        "seed",
        "num_inference_steps",
    ]
    assert params["image"]["required"] is True and params["num_inference_steps"]["default"] == 2
    assert "image" not in {p["name"] for p in api.get("/models/tiny-wan21-t2v").json()["parameters"]}


@pytest.mark.parametrize(
    ("model", "payload", "field"),
    [
        ("tiny-wan21-t2v", {"prompt": PROMPT, "seed": -1}, "payload.seed"),
        ("tiny-wan21-t2v", {"prompt": PROMPT, "seed": 2**32}, "payload.seed"),
        ("tiny-wan21-t2v", {"prompt": PROMPT, "num_inference_steps": 0}, "payload.num_inference_steps"),
        ("tiny-ltx", {"prompt": PROMPT, "num_inference_steps": 1}, "payload.num_inference_steps"),
        ("tiny-wan21-i2v", {"prompt": PROMPT}, "payload.image"),
        ("tiny-wan21-t2v", {"prompt": PROMPT, "image": solid_png_b64()}, "payload.image"),
    ],
)
def test_bad_payloads_are_refused_naming_the_field(
    api: httpx.Client, model: str, payload: dict[str, Any], field: str
) -> None:
    resp = api.post("/requests", json={"model": model, "payload": payload})
    assert resp.status_code == 400, resp.text
    assert field in [d["field"] for d in resp.json()["details"]]


def test_cancel_midway_ends_cancelled_before_the_last_step(api: httpx.Client) -> None:
    created = submit(api, "tiny-slow", {"prompt": PROMPT, "duration": "10"})
    rid = created["request_id"]
    deadline = time.monotonic() + 120
    while (body := api.get(f"/requests/{rid}").json())["progress"] < 10:
        assert body["status"] in ("queued", "processing") and time.monotonic() < deadline, body
        time.sleep(0.05)
    api.post(f"/requests/{rid}/cancel")
    done = wait_for(api, rid, timeout=60)
    assert done["status"] == "cancelled", done
    assert done["progress"] < 90  # stopped while denoising, long before the 200th step


def test_the_server_logs_where_each_local_model_comes_from(server: Server) -> None:
    assert server.wait_for_log("model tiny-ltx → diffusers (ltx-video, weights ")
