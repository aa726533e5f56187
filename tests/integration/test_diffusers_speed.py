"""Speed settings and the newer families through the real server: compile, LoRA, fixed guidance, a cache hook,
Wan 2.2 A14B's two experts and HunyuanVideo 1.5, each on tiny random pipelines built from configs, with the MP4s
decoded back and compared."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest

from tests.support import Server, diffusers_server, solid_png_b64, submit, wait_for
from tests.tiny_pipelines import build_tiny, build_tiny_lora

FPS = 4
PROMPT = "a lighthouse on a cliff at dusk"
WAN = "64x32"


def _config(root: Path) -> Path:
    wan = build_tiny("wan2.1-t2v", root / "wan")
    lora = build_tiny_lora("wan2.1-t2v", root / "lora")
    sizes = '{ "16:9" = "64x32", "9:16" = "32x64", "1:1" = "48x48" }'
    models: dict[str, list[str]] = {
        "tiny-wan": ['family = "wan2.1-t2v"', f'weights = "{wan}"', "steps = 4", "compile = false"],
        # Compiled on the CPU too: one size (each warm-up compiles a static graph per frame count).
        "tiny-wan-compiled": ['family = "wan2.1-t2v"', f'weights = "{wan}"', "steps = 4", "compile = true"],
        "tiny-wan-math": [
            'family = "wan2.1-t2v"',
            f'weights = "{wan}"',
            "steps = 4",
            'attention_backend = "_native_math"',
        ],
        "tiny-wan-lora": [
            'family = "wan2.1-t2v"',
            f'weights = "{wan}"',
            "steps = 4",
            f'lora = [{{ path = "{lora}" }}]',
        ],
        "tiny-wan-lora0": [
            'family = "wan2.1-t2v"',
            f'weights = "{wan}"',
            "steps = 4",
            f'lora = [{{ path = "{lora}", scale = 0.0 }}]',
        ],
        "tiny-wan-fast": [
            'family = "wan2.1-t2v"',
            f'weights = "{wan}"',
            "steps = 4",
            "max_steps = 8",
            "guidance = 1.0",
            'scheduler = "UniPCMultistepScheduler"',
            "scheduler_options = { flow_shift = 5.0 }",
        ],
        "tiny-wan-cached": [
            'family = "wan2.1-t2v"',
            f'weights = "{wan}"',
            "steps = 8",
            'cache = { kind = "first_block", threshold = 5.0 }',
        ],
        "tiny-wan22-t2v": ['family = "wan2.2-t2v"', f'weights = "{build_tiny("wan2.2-t2v", root / "a14b-t2v")}"'],
        "tiny-wan22-i2v": ['family = "wan2.2-i2v"', f'weights = "{build_tiny("wan2.2-i2v", root / "a14b-i2v")}"'],
        "tiny-hv15-t2v": [
            'family = "hunyuanvideo-1.5-t2v"',
            f'weights = "{build_tiny("hunyuanvideo-1.5-t2v", root / "hv15-t2v")}"',
        ],
        "tiny-hv15-i2v": [
            'family = "hunyuanvideo-1.5-i2v"',
            f'weights = "{build_tiny("hunyuanvideo-1.5-i2v", root / "hv15-i2v")}"',
        ],
    }
    lines = ["[engines.diffusers]", f"max_resident = {len(models)}", 'device = "cpu"', 'dtype = "float32"', ""]
    for model, keys in models.items():
        size = f'{{ "16:9" = "{WAN}" }}' if model == "tiny-wan-compiled" else sizes
        lines += [f'[models."{model}"]', *keys, f"fps = {FPS}", f"sizes = {size}", ""]
    for model in ("tiny-wan22-t2v", "tiny-wan22-i2v", "tiny-hv15-t2v", "tiny-hv15-i2v"):
        lines.insert(lines.index(f'[models."{model}"]') + 1, "steps = 2")
    config = root / "vidqueue.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server with one worker that serves every tiny model."""
    root = tmp_path_factory.mktemp("speed")
    with diffusers_server(root, _config(root), lease_s=60) as running:
        yield running


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    """A client of the module's server."""
    with server.client() as client:
        yield client


def _generate(api: httpx.Client, model: str, payload: dict[str, Any]) -> dict[str, Any]:
    done = wait_for(api, submit(api, model, payload)["request_id"], timeout=240)
    assert done["status"] == "success", done
    return done


def _frames(done: dict[str, Any]) -> np.ndarray:
    data = httpx.get(done["outcome"]["media_urls"][0]["url"], timeout=30).content
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


PAYLOAD = {"prompt": PROMPT, "negative_prompt": "blurry", "aspect_ratio": "16:9", "seed": 11}


def test_compile_on_and_off_give_the_same_video(api: httpx.Client) -> None:
    plain = _generate(api, "tiny-wan", PAYLOAD)
    compiled = _generate(api, "tiny-wan-compiled", PAYLOAD)
    assert plain["outcome"]["generation"]["compile"] is False
    assert compiled["outcome"]["generation"]["compile"] is True
    a, b = _frames(plain), _frames(compiled)
    assert a.shape == b.shape == (21, 32, 64, 3)
    assert _diff(a, b) < 0.5  # float32 on the CPU: the compiled graph rounds a little differently, nothing more


def test_an_attention_backend_is_set_and_recorded(api: httpx.Client) -> None:
    plain = _generate(api, "tiny-wan", PAYLOAD)
    math = _generate(api, "tiny-wan-math", PAYLOAD)
    assert "attention_backend" not in plain["outcome"]["generation"]
    assert math["outcome"]["generation"]["attention_backend"] == "_native_math"
    assert _diff(_frames(plain), _frames(math)) < 0.5  # the same attention, computed by another kernel


def test_compile_seconds_reach_metrics(server: Server, api: httpx.Client) -> None:
    _generate(api, "tiny-wan-compiled", PAYLOAD)

    def metrics() -> str:
        return httpx.get(server.url + "/metrics").text

    pattern = re.compile(r'vidqueue_worker_compile_seconds\{model="tiny-wan-compiled",worker="[^"]+"\} ([0-9.e+]+)')
    deadline = time.monotonic() + 20  # workers publish what they know every 5 s
    while not (found := pattern.search(metrics())):
        assert time.monotonic() < deadline, metrics()[-3000:]
        time.sleep(0.5)
    assert float(found.group(1)) > 0
    assert re.search(r'vidqueue_worker_load_seconds\{model="tiny-wan-compiled",worker="[^"]+"\} ', metrics())


def test_a_lora_changes_the_video_and_at_scale_zero_it_does_not(api: httpx.Client) -> None:
    plain = _frames(_generate(api, "tiny-wan", PAYLOAD))
    lora = _generate(api, "tiny-wan-lora", PAYLOAD)
    zero = _generate(api, "tiny-wan-lora0", PAYLOAD)
    assert _diff(plain, _frames(lora)) > 2.0
    assert _diff(plain, _frames(zero)) < 0.05
    assert lora["outcome"]["generation"]["lora"][0]["scale"] == 1.0
    assert zero["outcome"]["generation"]["lora"][0]["scale"] == 0.0


def test_fixed_guidance_runs_one_transformer_pass_per_step_and_says_cfg_scale_is_ignored(api: httpx.Client) -> None:
    done = _generate(api, "tiny-wan-fast", {**PAYLOAD, "cfg_scale": 0.9})
    generation = done["outcome"]["generation"]
    assert generation["num_inference_steps"] == 4 and generation["guidance_scale"] == 1.0
    assert generation["transformer_passes"] == 4
    assert "cfg_scale" in generation["cfg_scale_ignored"] or generation["cfg_scale_ignored"]
    assert generation["scheduler"] == "UniPCMultistepScheduler"
    assert generation["scheduler_options"] == {"flow_shift": 5.0}
    details = api.get("/models/tiny-wan-fast").json()
    steps = {p["name"]: p for p in details["parameters"]}["num_inference_steps"]
    assert (steps["default"], steps["max"]) == (4, 8)
    assert "cfg_scale` is ignored" in details["detailed_description"]


def test_steps_past_max_steps_are_refused_naming_the_field(api: httpx.Client) -> None:
    resp = api.post(
        "/requests", json={"model": "tiny-wan-fast", "payload": {"prompt": PROMPT, "num_inference_steps": 9}}
    )
    assert resp.status_code == 400, resp.text
    assert [d["field"] for d in resp.json()["details"]] == ["payload.num_inference_steps"]
    assert resp.json()["details"][0]["message"] == "must be between 1 and 8"


def test_a_cache_runs_fewer_full_transformer_passes_than_none(api: httpx.Client) -> None:
    plain = _generate(api, "tiny-wan", {**PAYLOAD, "num_inference_steps": 8})["outcome"]["generation"]
    cached = _generate(api, "tiny-wan-cached", PAYLOAD)["outcome"]["generation"]
    assert plain["transformer_passes"] == cached["transformer_passes"] == 16  # 8 steps, CFG: two passes a step
    assert "full_transformer_passes" not in plain
    assert 0 < cached["full_transformer_passes"] < plain["transformer_passes"]
    assert cached["cache"] == {"kind": "first_block", "threshold": 5.0}


@pytest.mark.parametrize("model", ["tiny-wan22-t2v", "tiny-wan22-i2v"])
def test_wan22_a14b_runs_both_experts_each_on_its_side_of_the_boundary(api: httpx.Client, model: str) -> None:
    payload = {**PAYLOAD, "num_inference_steps": 4, **({"image": solid_png_b64()} if model.endswith("i2v") else {})}
    done = _generate(api, model, payload)
    generation = done["outcome"]["generation"]
    experts, boundary = generation["experts"], generation["boundary_timestep"]
    high, low = experts["transformer"], experts["transformer_2"]
    assert high["passes"] > 0 and low["passes"] > 0
    assert high["passes"] + low["passes"] == generation["transformer_passes"] == 8
    assert min(high["timesteps"]) >= boundary > max(low["timesteps"])
    assert _frames(done).shape == (21, 32, 64, 3)


def test_hunyuanvideo_15_text_to_video_makes_an_mp4_of_the_expected_frames_and_size(api: httpx.Client) -> None:
    done = _generate(api, "tiny-hv15-t2v", {"prompt": PROMPT, "aspect_ratio": "9:16", "duration": "10", "seed": 3})
    assert _frames(done).shape == (41, 64, 32, 3)
    generation = done["outcome"]["generation"]
    assert generation["transformer_passes"] == 2 * 2  # two steps, guidance 6 through the guider: CFG on
    plain = _generate(api, "tiny-hv15-t2v", {"prompt": PROMPT, "seed": 3, "cfg_scale": 0.0})
    assert plain["outcome"]["generation"]["transformer_passes"] == 2  # guidance 0: CFG off, one pass a step


def test_hunyuanvideo_15_image_to_video_makes_an_mp4_of_the_expected_frames_and_size(api: httpx.Client) -> None:
    done = _generate(
        api, "tiny-hv15-i2v", {"prompt": PROMPT, "image": solid_png_b64(), "aspect_ratio": "1:1", "seed": 3}
    )
    frames = _frames(done)
    generation = done["outcome"]["generation"]
    assert frames.shape == (21, generation["height"], generation["width"], 3)
    assert (generation["width"], generation["height"]) == (48, 48)
