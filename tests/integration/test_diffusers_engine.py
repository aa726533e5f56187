"""The diffusers engine inside one worker: cancel within one step, out-of-memory then a healthy next request,
resident pipelines, and a clear start-up error without the packages. Tiny random pipelines, real torch on CPU."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.tiny_pipelines import build_tiny
from vidqueue.config import WorkerSettings, load_settings
from vidqueue.engines.base import Job
from vidqueue.engines.diffusers.engine import DiffusersEngine
from vidqueue.engines.diffusers.options import Cache, LocalRun, Lora
from vidqueue.errors import ConfigError, JobCancelled
from vidqueue.media.storage import LocalStorage
from vidqueue.store import MemoryStore, NewRequest, Status, Store, open_store
from vidqueue.worker.loop import Worker

SIZES = {"16:9": (64, 32), "9:16": (32, 64), "1:1": (32, 32)}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny wan2.1-t2v and ltx-video pipelines on disk."""
    root = tmp_path_factory.mktemp("tiny")
    return {family: build_tiny(family, root / family) for family in ("wan2.1-t2v", "ltx-video")}


def _run(model_id: str, family: str, folder: Path, steps: int = 8) -> LocalRun:
    return LocalRun(
        model_id=model_id,
        family=family,
        weights=str(folder),
        steps=steps,
        fps=4,
        sizes=SIZES,
        frame_step=8 if family == "ltx-video" else 4,
        guidance_per_cfg=6.0 if family == "ltx-video" else 10.0,
        device="cpu",
        dtype="float32",
    )


class Ctx:
    """A JobContext that records progress and turns cancelled after ``cancel_after`` denoising steps."""

    def __init__(self, workdir: Path, cancel_after: int | None = None) -> None:
        self.workdir = workdir
        self.resume_state: dict[str, Any] | None = None
        self.fractions: list[float] = []
        self.cancel_after = cancel_after

    def progress(self, fraction: float) -> None:
        self.fractions.append(fraction)

    def cancelled(self) -> bool:
        # The first report is "loaded"; each later one ends a step.
        return self.cancel_after is not None and len(self.fractions) - 1 >= self.cancel_after

    def checkpoint(self, state: dict[str, Any]) -> None:
        self.resume_state = state

    def stage_done(self) -> None:
        pass


def _count_transformer_calls(engine: DiffusersEngine, run: LocalRun) -> list[int]:
    """Wrap the resident pipeline's transformer so each forward pass is counted."""
    assert engine.pipelines is not None
    pipe = engine.pipelines.get(run, with_image=False)
    calls = [0]
    original = pipe.transformer.forward

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    pipe.transformer.forward = counted
    return calls


def test_cancel_stops_within_one_denoising_step(folders: dict[str, Path], tmp_path: Path) -> None:
    run = _run("m", "wan2.1-t2v", folders["wan2.1-t2v"], steps=8)
    engine = DiffusersEngine({"m": run})
    engine.setup()
    calls = _count_transformer_calls(engine, run)
    ctx = Ctx(tmp_path, cancel_after=3)
    job = Job("r1", "o", "m", {"prompt": "a boat", "duration": "5", "aspect_ratio": "16:9", "cfg_scale": 0.5})
    with pytest.raises(JobCancelled):
        engine.generate(job, ctx)
    # Guidance 5 runs the transformer twice a step (with and without the prompt): three steps, then nothing more.
    assert calls[0] == 3 * 2
    assert len(ctx.fractions) == 1 + 3
    assert not (tmp_path / "video.mp4").exists()


def _worker(tmp_path: Path, engine: DiffusersEngine, store: Store) -> Worker:
    storage = LocalStorage(tmp_path / "media", "http://127.0.0.1:1", b"k" * 32)
    settings = WorkerSettings(lease_s=60, heartbeat_s=5, poll_interval_s=0.01, progress_interval_s=0)
    worker = Worker(store, {m: engine for m in engine.models()}, storage, settings, "w1", workdir=tmp_path / "work")
    worker.setup()
    return worker


def test_out_of_memory_in_a_step_fails_the_request_and_the_next_one_succeeds(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    run = _run("m", "wan2.1-t2v", folders["wan2.1-t2v"], steps=3)
    engine = DiffusersEngine({"m": run})
    store = MemoryStore()
    worker = _worker(tmp_path, engine, store)
    assert engine.pipelines is not None
    pipe = engine.pipelines.get(run, with_image=False)
    original = pipe.transformer.forward
    calls = [0]

    def second_call_runs_out_of_memory(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(*args, **kwargs)

    pipe.transformer.forward = second_call_runs_out_of_memory
    for rid in ("r1", "r2"):
        store.enqueue(NewRequest(request_id=rid, org_id="o", model="m", payload={"prompt": "a boat", "seed": 1}))
    assert worker.run_once() and worker.run_once()
    first, second = store.get("r1"), store.get("r2")
    assert first is not None and first.status is Status.FAILED and first.error_code == "out_of_memory"
    assert first.error is not None and "out of memory" in first.error and "20.00 GiB" not in first.error
    assert second is not None and second.status is Status.SUCCESS, second
    assert second.outcome is not None and second.outcome["video"]["frames"] == 21
    assert engine.pipelines.loads == 1  # the same resident pipeline served both


def test_resident_pipelines_are_kept_and_the_least_recently_used_goes(folders: dict[str, Path], tmp_path: Path) -> None:
    wan = _run("wan", "wan2.1-t2v", folders["wan2.1-t2v"], steps=2)
    ltx = _run("ltx", "ltx-video", folders["ltx-video"], steps=2)
    engine = DiffusersEngine({"wan": wan, "ltx": ltx}, max_resident=1)
    engine.setup()
    assert engine.pipelines is not None
    for model in ("wan", "wan", "ltx", "ltx", "wan"):
        engine.generate(Job(f"r-{model}", "o", model, {"prompt": "a boat", "seed": 3}), Ctx(tmp_path))
    assert engine.pipelines.loads == 3 and engine.pipelines.resident() == ["wan"]
    roomy = DiffusersEngine({"wan": wan, "ltx": ltx}, max_resident=2)
    roomy.setup()
    assert roomy.pipelines is not None
    for model in ("wan", "ltx", "wan", "ltx"):
        roomy.generate(Job(f"r-{model}", "o", model, {"prompt": "a boat", "seed": 3}), Ctx(tmp_path))
    assert roomy.pipelines.loads == 2 and roomy.pipelines.resident() == ["wan", "ltx"]


def test_a_weights_folder_without_a_pipeline_stops_the_worker_at_start(tmp_path: Path) -> None:
    engine = DiffusersEngine({"m": _run("m", "wan2.1-t2v", tmp_path / "nothing-here")})
    with pytest.raises(ConfigError, match=r"model_index\.json"):
        engine.setup()


@pytest.fixture
def no_diffusers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Pretend torch and diffusers are not installed."""
    import vidqueue.worker.engines as engines

    monkeypatch.setattr(engines, "missing_packages", lambda: ["torch", "diffusers"])
    yield


def test_routing_to_diffusers_without_its_packages_is_a_clear_config_error(no_diffusers: None) -> None:
    from vidqueue.bootstrap import catalog_for
    from vidqueue.worker.engines import build_engines

    settings = load_settings(env={"VIDQUEUE_DEFAULT_ENGINE": "diffusers"})
    with pytest.raises(ConfigError) as caught:
        build_engines(settings, catalog_for(settings), check_only=True)
    assert "torch, diffusers is not installed" in caught.value.message
    assert "pip install '.[diffusers]'" in caught.value.message


def test_the_server_sdk_and_cli_start_without_importing_torch(tmp_path: Path) -> None:
    code = (
        "import sys, vidqueue, vidqueue.cli, vidqueue.api, vidqueue.worker.main, vidqueue.worker.engines\n"
        "from vidqueue.bootstrap import catalog_for\n"
        "from vidqueue.config import load_settings\n"
        "catalog_for(load_settings(env={}))\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'accelerate') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_the_worker_starts_the_next_request_before_the_previous_encode_ends(
    folders: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vidqueue.engines.diffusers.engine as engine_module

    events: list[tuple[str, float]] = []
    encode = engine_module.encode_mp4

    def slow_encode(frames: Any, **kwargs: Any) -> Any:
        events.append(("encode-start", time.monotonic()))
        time.sleep(0.4)  # a long host stage: the next request's denoising must not wait for it
        info = encode(frames, **kwargs)
        events.append(("encode-end", time.monotonic()))
        return info

    monkeypatch.setattr(engine_module, "encode_mp4", slow_encode)

    def passes_during_encodes(overlap: bool) -> list[int]:
        events.clear()
        engine = DiffusersEngine({"m": _run("m", "wan2.1-t2v", folders["wan2.1-t2v"], steps=2)}, overlap=overlap)
        (tmp_path / str(overlap)).mkdir()
        store = open_store(f"sqlite:///{tmp_path / str(overlap) / 'queue.db'}")  # the store `serve` uses
        worker = _worker(tmp_path / str(overlap), engine, store)
        assert engine.pipelines is not None
        pipe = engine.pipelines.get(engine.runs["m"], with_image=False)
        pipe.transformer.register_forward_pre_hook(lambda module, args: events.append(("pass", time.monotonic())))
        for rid in ("r1", "r2", "r3"):
            store.enqueue(NewRequest(request_id=rid, org_id="o", model="m", payload={"prompt": "a boat", "seed": 1}))
        thread = threading.Thread(target=worker.run)
        thread.start()
        try:
            deadline = time.monotonic() + 60
            while not all((r := store.get(rid)) is not None and r.status.is_terminal() for rid in ("r1", "r2", "r3")):
                assert time.monotonic() < deadline
                time.sleep(0.02)
        finally:
            worker.stop()
            thread.join()
        assert all(store.get(rid).status is Status.SUCCESS for rid in ("r1", "r2", "r3"))  # type: ignore[union-attr]
        starts = [t for what, t in events if what == "encode-start"]
        ends = [t for what, t in events if what == "encode-end"]
        return [sum(1 for what, t in events if what == "pass" and a < t < b) for a, b in zip(starts, ends, strict=True)]

    # With overlap the next request denoises while one is encoded; without it the GPU waits for every encode.
    during = passes_during_encodes(overlap=True)
    assert during[0] > 0 and during[1] > 0, during
    assert passes_during_encodes(overlap=False) == [0, 0, 0]


@pytest.fixture(scope="module")
def hunyuan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny HunyuanVideo 1.5 text-to-video pipeline on disk."""
    return build_tiny("hunyuanvideo-1.5-t2v", tmp_path_factory.mktemp("hv15") / "t2v")


def test_hunyuanvideo_15_reports_progress_per_step_and_cancels_within_a_step(hunyuan: Path, tmp_path: Path) -> None:
    run = LocalRun(
        model_id="hv",
        family="hunyuanvideo-1.5-t2v",
        weights=str(hunyuan),
        steps=6,
        fps=4,
        sizes=SIZES,
        guidance_per_cfg=12.0,
        device="cpu",
        dtype="float32",
    )
    engine = DiffusersEngine({"hv": run})
    engine.setup()
    calls = _count_transformer_calls(engine, run)
    ctx = Ctx(tmp_path, cancel_after=2)
    with pytest.raises(JobCancelled):
        engine.generate(Job("r1", "o", "hv", {"prompt": "a boat", "cfg_scale": 0.5}), ctx)
    assert calls[0] == 2 * 2  # guidance 6 through the guider: two passes a step, then the cancel before the next
    assert len(ctx.fractions) == 1 + 2 and ctx.fractions[1] < ctx.fractions[2] < 0.9
    done = Ctx(tmp_path / "done")
    (tmp_path / "done").mkdir()
    calls[0] = 0
    media = engine.generate(Job("r2", "o", "hv", {"prompt": "a boat", "cfg_scale": 0.0, "seed": 1}), done)
    assert calls[0] == 6 and media.extra["generation"]["transformer_passes"] == 6  # CFG off: one pass a step
    assert len(done.fractions) == 1 + 6 + 1 and done.fractions[-1] == 1.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"attention_backend": "warp_drive"}, "attention_backend 'warp_drive' is not one of diffusers'"),
        ({"scheduler": "NoSuchScheduler"}, "scheduler 'NoSuchScheduler' is not a diffusers scheduler class"),
        ({"scheduler": "WanPipeline"}, "scheduler 'WanPipeline' is not a diffusers scheduler class"),
        (
            {"scheduler": "UniPCMultistepScheduler", "scheduler_options": {"flow_shfit": 5.0}},
            "scheduler_options flow_shfit: not options of UniPCMultistepScheduler",
        ),
        ({"cache": Cache("first_block", {"treshold": 0.1})}, "cache first_block: "),
        ({"cache": Cache("mag", {"threshold": 0.1})}, "mag_ratios"),
        ({"lora": (Lora("/nowhere/lora.safetensors"),)}, "lora path /nowhere/lora.safetensors does not exist"),
    ],
)
def test_speed_settings_that_name_nothing_stop_the_worker_at_start(
    folders: dict[str, Path], change: dict[str, Any], message: str
) -> None:
    run = dataclasses.replace(_run("m", "wan2.1-t2v", folders["wan2.1-t2v"]), **change)
    with pytest.raises(ConfigError) as caught:
        DiffusersEngine({"m": run}).setup()
    assert '[models."m"]' in caught.value.message and message in caught.value.message


def test_a_lora_on_a_family_without_a_lora_loader_stops_the_worker_at_start(hunyuan: Path, tmp_path: Path) -> None:
    lora = tmp_path / "x.safetensors"
    lora.write_bytes(b"")
    run = LocalRun("hv", "hunyuanvideo-1.5-t2v", str(hunyuan), 2, 4, SIZES, lora=(Lora(str(lora)),), device="cpu")
    with pytest.raises(ConfigError, match=r"no LoRA loader for the hunyuanvideo-1\.5-t2v pipeline"):
        DiffusersEngine({"hv": run}).setup()


@pytest.mark.parametrize(
    "cache",
    [
        Cache("first_block", {"threshold": 5.0}),
        Cache("taylorseer", {"cache_interval": 2, "disable_cache_before_step": 1}),
        Cache("mag", {"mag_ratios": [1.0] * 8, "threshold": 0.5}),
    ],
)
def test_each_cache_kind_skips_passes_and_starts_afresh_for_every_request(
    folders: dict[str, Path], tmp_path: Path, cache: Cache
) -> None:
    run = dataclasses.replace(_run("m", "wan2.1-t2v", folders["wan2.1-t2v"], steps=8), cache=cache)
    engine = DiffusersEngine({"m": run})
    engine.setup()
    job = Job("r", "o", "m", {"prompt": "a boat", "seed": 1})
    first, again = (engine.generate(job, Ctx(tmp_path)).extra["generation"] for _ in range(2))
    assert first["transformer_passes"] == 16  # 8 steps with CFG
    assert 0 < first["full_transformer_passes"] < 16
    assert again["full_transformer_passes"] == first["full_transformer_passes"]  # the hook's state was reset
    assert first["cache"]["kind"] == cache.kind


def test_hunyuanvideo_15_attention_without_the_padding_mask_gives_the_same_output(hunyuan: Path) -> None:
    from diffusers import HunyuanVideo15Pipeline

    from vidqueue.engines.diffusers.hunyuan import UnpaddedAttnProcessor, unpad_attention

    pipe = HunyuanVideo15Pipeline.from_pretrained(hunyuan, dtype=torch.float32)
    transformer = pipe.transformer
    config = transformer.config
    torch.manual_seed(0)
    inputs = {
        "hidden_states": torch.randn(1, config.in_channels, 3, 4, 6),
        "timestep": torch.tensor([500.0]),
        "encoder_hidden_states": torch.randn(1, 12, config.text_embed_dim),
        "encoder_attention_mask": torch.tensor([[1] * 5 + [0] * 7]),  # a short prompt: 7 slots of padding
        "encoder_hidden_states_2": torch.randn(1, 6, config.text_embed_2_dim),
        "encoder_attention_mask_2": torch.tensor([[1] * 2 + [0] * 4]),
        "image_embeds": torch.zeros(1, 3, config.image_embed_dim),  # text to video: the image slots are padding
    }
    with torch.inference_mode():
        masked = transformer(**inputs, return_dict=False)[0]
        assert unpad_attention(transformer) == config.num_layers
        assert all(
            isinstance(p, UnpaddedAttnProcessor) for p in (b.attn.processor for b in transformer.transformer_blocks)
        )
        unpadded = transformer(**inputs, return_dict=False)[0]
    # It took the unpadded path: 5 + 2 valid text tokens (the image slots of text to video are all padding).
    assert transformer.transformer_blocks[0].attn.processor._valid == 7
    assert unpadded.shape == masked.shape
    torch.testing.assert_close(unpadded, masked, rtol=1e-4, atol=1e-5)
