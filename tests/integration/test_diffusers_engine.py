"""The diffusers engine inside one worker: cancel within one step, out-of-memory then a healthy next request,
resident pipelines, and a clear start-up error without the packages. Tiny random pipelines, real torch on CPU."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.tiny_pipelines import build_tiny
from vidqueue.config import WorkerSettings, load_settings
from vidqueue.engines.base import Job
from vidqueue.engines.diffusers.engine import DiffusersEngine
from vidqueue.engines.diffusers.options import LocalRun
from vidqueue.errors import ConfigError, JobCancelled
from vidqueue.media.storage import LocalStorage
from vidqueue.store import MemoryStore, NewRequest, Status
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


def _worker(tmp_path: Path, engine: DiffusersEngine, store: MemoryStore) -> Worker:
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
