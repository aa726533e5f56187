"""GPU benchmark: a Wan2.1-T2V-1.3B generation through vidqueue's diffusers engine vs plain diffusers WanPipeline.

The pipeline has the full-size Wan2.1-T2V-1.3B architecture (the 1.3B transformer, the Wan VAE, a UMT5-XXL text
encoder) with random weights: the same compute as the real model, nothing downloaded. It is saved to a temporary
folder once; the baseline loads it with ``WanPipeline.from_pretrained`` and calls it, vidqueue loads it through its
engine (``LocalRun`` with ``weights`` = the folder) and generates a request's payload, MP4 encoding included. Both
run on the same GPU in the same process, one after the other, each after a 2-step warm-up, with the same seed.
Writes ``bench/results/gpu.json``: gpu, baseline_s, vidqueue_s, speedup (baseline_s / vidqueue_s), settings.

    python bench/gpu.py                 # 832x480, 81 frames, 50 steps, guidance 5 (cfg_scale 0.5), bfloat16
    python bench/gpu.py --tiny --out /tmp/gpu.json   # a tiny random pipeline on the CPU: checks the harness only
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.tiny_pipelines (the tiny pipeline and its from-scratch tokenizer)

from bench.emulator import BenchContext  # noqa: E402
from tests.tiny_pipelines import _tokenizer, build_tiny  # noqa: E402

from vidqueue.engines.base import Job  # noqa: E402
from vidqueue.engines.diffusers.engine import DiffusersEngine  # noqa: E402
from vidqueue.engines.diffusers.options import LocalRun  # noqa: E402

PROMPT = "A red fox trotting through fresh snow at dawn, cinematic, soft light"
NEGATIVE = "blurry, low quality, distorted"

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
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return folder


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def baseline(folder: Path, device: torch.device, dtype: torch.dtype, args: argparse.Namespace) -> float:
    """Seconds for one generation with plain diffusers (after a 2-step warm-up)."""
    from diffusers import WanPipeline

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
            guidance_scale=args.guidance,
            generator=torch.Generator("cpu").manual_seed(0),
            output_type="np",
        ).frames

    call(2)
    _sync(device)
    started = time.perf_counter()
    call(args.steps)
    _sync(device)
    return time.perf_counter() - started  # the pipeline goes with this frame, before vidqueue's loads


def through_vidqueue(folder: Path, device: torch.device, args: argparse.Namespace) -> tuple[float, float]:
    """Seconds for one request through vidqueue's engine (MP4 included), and its denoising share."""
    fps = (args.frames - 1) // 5  # duration "5" at this fps gives exactly args.frames (4k+1)
    run = LocalRun(
        model_id="wan-bench",
        family="wan2.1-t2v",
        weights=str(folder),
        steps=args.steps,
        fps=fps,
        sizes={"16:9": (args.width, args.height)},
        device=str(device),
        dtype=args.dtype,
    )
    engine = DiffusersEngine({"wan-bench": run}, device=str(device))
    engine.setup()
    payload = {
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE,
        "duration": "5",
        "aspect_ratio": "16:9",
        "cfg_scale": args.guidance / 10.0,
        "seed": 0,
    }
    with tempfile.TemporaryDirectory() as work:
        ctx = BenchContext(Path(work))
        engine.generate(Job("warm-up", "bench", "wan-bench", {**payload, "num_inference_steps": 2}), ctx)
        _sync(device)
        started = time.perf_counter()
        media = engine.generate(Job("timed", "bench", "wan-bench", {**payload, "num_inference_steps": args.steps}), ctx)
        _sync(device)
        elapsed = time.perf_counter() - started
    assert media.info.frames == args.frames, media.info
    return elapsed, float(media.extra["generation"]["denoise_s"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run both and write the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--tiny", action="store_true", help="a tiny random pipeline on the CPU (harness check)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu.json")
    args = parser.parse_args(argv)
    if args.tiny:
        args.width, args.height, args.frames, args.steps, args.dtype = 64, 32, 21, min(args.steps, 4), "float32"
    if (args.frames - 1) % 20:
        parser.error("--frames must be 5 * fps + 1 with fps a multiple of 4 (e.g. 81 at 16 fps)")
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[args.dtype]
    with tempfile.TemporaryDirectory(prefix="vidqueue-bench-") as tmp:
        folder = Path(tmp) / "wan"
        build_tiny("wan2.1-t2v", folder) if args.tiny else build_full(folder, device)
        base_s = baseline(folder, device, dtype, args)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        vq_s, vq_denoise_s = through_vidqueue(folder, device, args)
    result = {
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else f"none (cpu, {platform.machine()})",
        "baseline_s": round(base_s, 3),
        "vidqueue_s": round(vq_s, 3),
        "vidqueue_denoise_s": round(vq_denoise_s, 3),
        "speedup": round(base_s / vq_s, 3),
        "settings": {
            "model": "tiny random wan2.1-t2v" if args.tiny else "Wan2.1-T2V-1.3B architecture, random weights",
            "width": args.width,
            "height": args.height,
            "frames": args.frames,
            "steps": args.steps,
            "guidance_scale": args.guidance,
            "dtype": args.dtype,
            "device": str(device),
        },
        "versions": {"torch": torch.__version__, "diffusers": __import__("diffusers").__version__},
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
