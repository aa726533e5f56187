"""GPU benchmark: Wan2.1-T2V-1.3B-shaped generation through vidqueue's diffusers engine against plain diffusers.

The pipeline has the full-size Wan2.1-T2V-1.3B architecture (the 1.3B transformer, the Wan VAE, a UMT5-XXL text
encoder) with random weights: the same compute as the real model, nothing downloaded. It is saved to a temporary
folder once; the baseline loads it with ``WanPipeline.from_pretrained`` and calls it; vidqueue loads it through its
engine (``LocalRun`` with ``weights`` = the folder) and generates requests, MP4 encoding included. Both run on the
same GPU in the same process, one after the other, each after a warm-up, with the same seed.

Modes (``--mode``; ``all`` runs both on one saved pipeline):
- ``lossless``: 50 steps with CFG (guidance 5), vidqueue with its lossless defaults (compile on a GPU); the frames
  of both are compared (mean absolute difference in 8-bit levels, PSNR).
- ``fast``: 4 steps at guidance 1 (one transformer pass per step, what a step-distilled checkpoint runs), vidqueue
  with the model's ``guidance = 1.0`` and ``steps = 4`` settings.

Each mode reports the seconds of one video split into text encode, denoise, decode and encode; the effective
TFLOP/s of denoising (FLOPs of one transformer pass counted by ``torch.utils.flop_counter``) against a bf16 matmul
ceiling measured in the same run; and, with ``--requests N``, N queued requests through one worker (overlap on;
``--compare-overlap M``: then M with it off) as videos per hour (in ``all``, for the fast mode only). Writes
``bench/results/gpu.json``, after each mode too.

    python bench/gpu.py --mode all --requests 20            # on a GPU: 832x480, 81 frames, bfloat16
    python bench/gpu.py --tiny --mode fast --out /tmp/g.json  # a tiny random pipeline on the CPU: the harness only
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import itertools
import json
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.tiny_pipelines (the tiny pipeline and its from-scratch tokenizer)

from bench.emulator import BenchContext  # noqa: E402
from tests.tiny_pipelines import _tokenizer, build_tiny  # noqa: E402

import vidqueue.engines.diffusers.engine as engine_module  # noqa: E402
from vidqueue.config import WorkerSettings  # noqa: E402
from vidqueue.engines.base import Job  # noqa: E402
from vidqueue.engines.diffusers.engine import DiffusersEngine  # noqa: E402
from vidqueue.engines.diffusers.options import LocalRun  # noqa: E402
from vidqueue.media.storage import LocalStorage  # noqa: E402
from vidqueue.store import MemoryStore, NewRequest, Status  # noqa: E402
from vidqueue.worker.loop import Worker  # noqa: E402

PROMPT = "A red fox trotting through fresh snow at dawn, cinematic, soft light"
NEGATIVE = "blurry, low quality, distorted"
MODES = {"lossless": {"steps": 50, "guidance": 5.0}, "fast": {"steps": 4, "guidance": 1.0}}

# Wan-AI/Wan2.1-T2V-1.3B-Diffusers: transformer/config.json, and text_encoder (google/umt5-xxl).
WAN_1_3B = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 12,
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 8960,
    "num_layers": 30,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "rope_max_seq_len": 1024,
}
UMT5_XXL = {
    "vocab_size": 256384,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "pad_token_id": 0,
    "eos_token_id": 1,
}


def build_full(folder: Path, device: torch.device) -> Path:
    """Save a Wan2.1-T2V-1.3B-shaped pipeline with random weights (built on ``device``, in bfloat16)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    with device:
        transformer = WanTransformer3DModel(**WAN_1_3B).to(torch.bfloat16)
        text_encoder = UMT5EncoderModel(UMT5Config(**UMT5_XXL)).to(torch.bfloat16)
        vae = AutoencoderKLWan()  # the default config is the Wan 2.1 VAE
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    pipe = WanPipeline(
        tokenizer=_tokenizer(512), text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )
    pipe.save_pretrained(folder)
    del pipe, transformer, text_encoder, vae
    _free(device)
    return folder


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def matmul_tflops(device: torch.device, n: int) -> float:
    """The dense matmul rate this device reaches (bf16 on a GPU, float32 on a CPU): the ceiling to compare with."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    started = time.perf_counter()
    repeats = 10
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - started) / 1e12


def pass_flops(pipe: Any, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> float:
    """FLOPs of one transformer forward pass at the benchmark's shape (matmuls and attention, counted by torch)."""
    from torch.utils.flop_counter import FlopCounterMode

    config = pipe.transformer.config
    frames = (args.frames - 1) // 4 + 1
    latents = torch.randn(1, config.in_channels, frames, args.height // 8, args.width // 8, device=device, dtype=dtype)
    text = torch.randn(1, 512, config.text_dim, device=device, dtype=dtype)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        pipe.transformer(hidden_states=latents, timestep=torch.tensor([500], device=device), encoder_hidden_states=text)
    return float(counter.get_total_flops())


def to_uint8(frames: Any) -> np.ndarray:
    """Pipeline "np" frames in [0, 1] as uint8, as vidqueue rounds them."""
    return (np.clip(np.asarray(frames[0], dtype=np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)


def baseline(
    folder: Path, device: torch.device, dtype: torch.dtype, args: argparse.Namespace, mode: str
) -> dict[str, Any]:
    """Plain diffusers: seconds for one generation (after a warm-up), its frames, and one pass's FLOPs."""
    from diffusers import WanPipeline

    settings = MODES[mode]
    pipe = WanPipeline.from_pretrained(folder, dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)

    def call(steps: int) -> Any:
        return pipe(
            prompt=PROMPT,
            negative_prompt=NEGATIVE,
            height=args.height,
            width=args.width,
            num_frames=args.frames,
            num_inference_steps=steps,
            guidance_scale=settings["guidance"],
            generator=torch.Generator("cpu").manual_seed(0),
            output_type="np",
        ).frames

    call(1)
    _sync(device)
    started = time.perf_counter()
    frames = call(settings["steps"])
    _sync(device)
    seconds = time.perf_counter() - started
    flops = pass_flops(pipe, args, device, dtype)
    return {"seconds": seconds, "frames": to_uint8(frames), "pass_flops": flops}


def local_run(folder: Path, device: torch.device, args: argparse.Namespace, mode: str) -> LocalRun:
    """The model as vidqueue's config would declare it for ``mode``."""
    fast = mode == "fast"
    return LocalRun(
        model_id=f"wan-{mode}",
        family="wan2.1-t2v",
        weights=str(folder),
        steps=MODES[mode]["steps"],
        fps=(args.frames - 1) // 5,  # duration "5" at this fps gives exactly args.frames (4k+1)
        sizes={"16:9": (args.width, args.height)},
        device=str(device),
        dtype=args.dtype,
        compile=args.compile,
        guidance=1.0 if fast else None,
        max_steps=8 if fast else None,
    )


def payload(mode: str) -> dict[str, Any]:
    """A request's payload for ``mode`` (the fast model fixes its own guidance and steps)."""
    return {
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE,
        "duration": "5",
        "aspect_ratio": "16:9",
        "cfg_scale": MODES["lossless"]["guidance"] / 10.0,
        "seed": 0,
    }


@contextlib.contextmanager
def frames_tap() -> Iterator[list[np.ndarray]]:
    """Keep the frames vidqueue's engine hands to its MP4 encoder (to compare them with the baseline's)."""
    kept: list[np.ndarray] = []
    original = engine_module.encode_mp4

    def encode(frames: Any, **kwargs: Any) -> Any:
        stacked = list(frames)
        kept.append(np.stack(stacked))
        return original(iter(stacked), **kwargs)

    engine_module.encode_mp4 = encode  # type: ignore[assignment]
    try:
        yield kept
    finally:
        engine_module.encode_mp4 = original  # type: ignore[assignment]


def one_video(
    engine: DiffusersEngine, run: LocalRun, mode: str, work: Path
) -> tuple[float, dict[str, Any], np.ndarray]:
    """Seconds for one request through the engine (after a warm-up request), its generation record and frames."""
    ctx = BenchContext(work)
    started = time.perf_counter()
    engine.generate(Job("warm-up", "bench", run.model_id, {**payload(mode), "num_inference_steps": 1}), ctx)
    warm_s = time.perf_counter() - started
    device = engine.pipelines.device if engine.pipelines else torch.device("cpu")
    _sync(device)
    with frames_tap() as kept:
        started = time.perf_counter()
        media = engine.generate(Job("timed", "bench", run.model_id, payload(mode)), ctx)
        _sync(device)
        elapsed = time.perf_counter() - started
    generation = dict(media.extra["generation"])
    generation["first_use_s"] = round(warm_s, 3)  # load, compile warm-up and the warm-up request
    return elapsed, generation, kept[0]


def throughput(engine: DiffusersEngine, run: LocalRun, mode: str, n: int, work: Path) -> dict[str, Any]:
    """N requests queued at once and run by one worker: wall seconds and videos per hour."""
    store = MemoryStore()
    storage = LocalStorage(work / "media", "http://127.0.0.1:1", b"bench-secret-0123456789abcdef0123")
    settings = WorkerSettings(poll_interval_s=0.05, progress_interval_s=1.0, heartbeat_s=10, lease_s=600)
    worker = Worker(store, {run.model_id: engine}, storage, settings, "bench-worker", workdir=work / "jobs")
    worker.setup()
    ids = [f"r{i:03d}" for i in range(n)]
    started = time.perf_counter()
    for rid in ids:
        store.enqueue(NewRequest(request_id=rid, org_id="bench", model=run.model_id, payload=payload(mode)))
    thread = threading.Thread(target=worker.run, name="bench-worker")
    thread.start()
    try:
        while True:
            rows = [store.get(rid) for rid in ids]
            if all(r is not None and r.status.is_terminal() for r in rows):
                break
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
    finally:
        worker.stop()
        thread.join()
    ok = [r for r in rows if r is not None and r.status is Status.SUCCESS]
    if len(ok) != n:
        failed = [(r.request_id, r.error) for r in rows if r is not None and r.status is not Status.SUCCESS]
        raise RuntimeError(f"{n - len(ok)} of {n} requests did not succeed: {failed[:3]}")
    # A request's device stage started while the one before it was still being encoded and uploaded.
    overlapped = sum(
        1 for a, b in itertools.pairwise(ok) if b.processing_at and a.finished_at and b.processing_at < a.finished_at
    )
    return {
        "requests": n,
        "overlap": engine.overlap,
        "wall_s": round(elapsed, 3),
        "seconds_per_video": round(elapsed / n, 3),
        "videos_per_hour": round(n / elapsed * 3600, 1),
        "started_before_previous_finished": overlapped,
    }


def compare(base: np.ndarray, ours: np.ndarray) -> dict[str, float]:
    """How far vidqueue's frames are from the baseline's, in 8-bit levels."""
    diff = np.abs(base.astype(np.int16) - ours.astype(np.int16))
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    return {
        "mean_abs_diff": round(float(diff.mean()), 4),
        "max_abs_diff": int(diff.max()),
        "share_over_8_levels": round(float((diff > 8).mean()), 5),
        "psnr_db": round(10 * np.log10(255.0**2 / mse), 2) if mse > 0 else float("inf"),
    }


def run_mode(
    folder: Path, device: torch.device, dtype: torch.dtype, args: argparse.Namespace, mode: str, ceiling: float
) -> dict[str, Any]:
    """Baseline, one video through vidqueue, and the throughput runs of one mode."""
    base = baseline(folder, device, dtype, args, mode)
    _free(device)
    run = local_run(folder, device, args, mode)
    result: dict[str, Any] = {"baseline_s": round(base["seconds"], 3)}
    with tempfile.TemporaryDirectory(prefix="vidqueue-bench-work-") as tmp:
        engine = DiffusersEngine({run.model_id: run}, device=str(device), overlap=True)
        engine.setup()
        vq_s, generation, frames = one_video(engine, run, mode, Path(tmp))
        passes = int(generation["transformer_passes"])
        denoise_s = float(generation["denoise_s"])
        tflops = base["pass_flops"] * passes / denoise_s / 1e12 if denoise_s > 0 else 0.0
        result.update(
            vidqueue_s=round(vq_s, 3),
            speedup=round(base["seconds"] / vq_s, 3),
            stages_s={k: generation[k] for k in ("text_encode_s", "denoise_s", "decode_s", "encode_s")},
            transformer_passes=passes,
            pass_gflop=round(base["pass_flops"] / 1e9, 3),
            denoise_tflops=round(tflops, 1),
            share_of_matmul_ceiling=round(tflops / ceiling, 3) if ceiling else None,
            first_use_s=generation["first_use_s"],
            compile_s=engine.facts().get("compile_seconds", {}).get(run.model_id, 0.0),
            generation=generation,
            frames_vs_baseline=compare(base["frames"], frames),
        )
        if args.requests and (mode == "fast" or args.mode == mode):
            runs = [throughput(engine, run, mode, args.requests, Path(tmp) / "overlap")]
            if args.compare_overlap:
                engine.overlap, engine.concurrency, engine.staged = False, 1, False
                runs.append(throughput(engine, run, mode, args.compare_overlap, Path(tmp) / "serial"))
            result["throughput"] = runs
            result["baseline_videos_per_hour"] = round(3600 / base["seconds"], 1)
        del engine
    _free(device)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the chosen modes and write the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["lossless", "fast", "all"], default="lossless")
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--requests", type=int, default=0, help="N queued requests through one worker (overlap on)")
    parser.add_argument("--compare-overlap", type=int, default=0, help="then M requests with overlap off")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="default: on a GPU")
    parser.add_argument("--tiny", action="store_true", help="a tiny random pipeline on the CPU (harness check)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu.json")
    args = parser.parse_args(argv)
    if args.tiny:
        args.width, args.height, args.frames, args.dtype = 64, 32, 21, "float32"
        MODES["lossless"]["steps"] = 4
    if (args.frames - 1) % 20:
        parser.error("--frames must be 5 * fps + 1 with fps a multiple of 4 (e.g. 81 at 16 fps)")
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[args.dtype]
    modes = ["fast", "lossless"] if args.mode == "all" else [args.mode]
    ceiling = matmul_tflops(device, 256 if args.tiny else 8192)
    result: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else f"none (cpu, {platform.machine()})",
        "matmul_tflops": round(ceiling, 1 if device.type == "cuda" else 4),
        "settings": {
            "model": "tiny random wan2.1-t2v" if args.tiny else "Wan2.1-T2V-1.3B architecture, random weights",
            "width": args.width,
            "height": args.height,
            "frames": args.frames,
            "dtype": args.dtype,
            "device": str(device),
            "compile": args.compile if args.compile is not None else device.type == "cuda",
            "modes": {m: MODES[m] for m in modes},
        },
        "modes": {},
        "versions": {"torch": torch.__version__, "diffusers": __import__("diffusers").__version__},
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vidqueue-bench-") as tmp:
        folder = Path(tmp) / "wan"
        build_tiny("wan2.1-t2v", folder) if args.tiny else build_full(folder, device)
        for mode in modes:
            result["modes"][mode] = run_mode(folder, device, dtype, args, mode, ceiling)
            args.out.write_text(json.dumps(result, indent=2) + "\n")  # what is done so far survives a later failure
            print(json.dumps({mode: result["modes"][mode]}, indent=2), flush=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
