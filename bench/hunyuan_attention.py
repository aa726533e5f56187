"""HunyuanVideo 1.5's transformer: diffusers' masked joint attention against vidqueue's unpadded processor.

One forward pass of a HunyuanVideo15Transformer3DModel with the real 480p model's configuration (8.3B parameters,
random weights, bfloat16) at 848x480 and 121 frames (31 x 30 x 53 = 49,290 video tokens), text to video, with a
short prompt: 60 valid of the 1,000 Qwen slots, 20 of the 256 ByT5 slots, none of the 729 image slots (what the
pipeline passes). First with diffusers' processor (a boolean token mask, rebuilt in every block), then with
``vidqueue.engines.diffusers.hunyuan.unpad_attention`` on the same model and inputs. Reports seconds per pass, the
FLOPs of a pass (counted by ``torch.utils.flop_counter`` on the unpadded one), effective TFLOP/s against a bf16
matmul ceiling measured in the same run, and how far the outputs are apart. Writes bench/results/hunyuan_attention.json.

    python bench/hunyuan_attention.py            # on a GPU
    python bench/hunyuan_attention.py --tiny --out /tmp/h.json   # a tiny configuration on the CPU: the harness
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gpu import _sync, matmul_tflops  # noqa: E402

from vidqueue.engines.diffusers.hunyuan import unpad_attention  # noqa: E402

TINY = {
    "in_channels": 65,
    "out_channels": 32,
    "num_attention_heads": 2,
    "attention_head_dim": 8,
    "num_layers": 2,
    "num_refiner_layers": 1,
    "text_embed_dim": 32,
    "text_embed_2_dim": 16,
    "image_embed_dim": 16,
    "rope_axes_dim": (2, 2, 4),
}


def inputs(
    config: Any,
    latent: tuple[int, int, int],
    slots: tuple[int, int, int],
    valid: tuple[int, int],
    device: torch.device,
    dtype: torch.dtype,
) -> dict[str, Any]:
    """A text-to-video pass's inputs: noisy latents and a short prompt in long, padded text slots."""
    frames, height, width = latent
    qwen, byt5, image = slots

    def mask(n: int, valid_n: int) -> torch.Tensor:
        return torch.tensor([[1] * valid_n + [0] * (n - valid_n)], device=device)

    generator = torch.Generator(device="cpu").manual_seed(0)

    def noise(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device, dtype)

    return {
        "hidden_states": noise(1, config.in_channels, frames, height, width),
        "timestep": torch.tensor([500.0], device=device, dtype=dtype),
        "encoder_hidden_states": noise(1, qwen, config.text_embed_dim),
        "encoder_attention_mask": mask(qwen, valid[0]),
        "encoder_hidden_states_2": noise(1, byt5, config.text_embed_2_dim),
        "encoder_attention_mask_2": mask(byt5, valid[1]),
        "image_embeds": torch.zeros(1, image, config.image_embed_dim, device=device, dtype=dtype),
    }


def timed(transformer: Any, kwargs: dict[str, Any], device: torch.device, repeats: int) -> tuple[float, torch.Tensor]:
    """Seconds per pass (after one warm-up) and the output."""
    with torch.inference_mode():
        out = transformer(**kwargs, return_dict=False)[0]
        _sync(device)
        started = time.perf_counter()
        for _ in range(repeats):
            out = transformer(**kwargs, return_dict=False)[0]
        _sync(device)
    return (time.perf_counter() - started) / repeats, out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Time both processors and write the results."""
    from diffusers import HunyuanVideo15Transformer3DModel
    from torch.utils.flop_counter import FlopCounterMode

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "hunyuan_attention.json")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    latent, slots, valid = (
        ((31, 30, 53), (1000, 256, 729), (60, 20)) if not args.tiny else ((3, 4, 6), (12, 6, 3), (5, 2))
    )
    torch.manual_seed(0)
    with device:
        transformer = HunyuanVideo15Transformer3DModel(**(TINY if args.tiny else {})).to(dtype).eval()
    kwargs = inputs(transformer.config, latent, slots, valid, device, dtype)
    masked_s, masked = timed(transformer, kwargs, device, args.repeats)
    masked = masked.float().cpu()
    changed = unpad_attention(transformer)
    unpadded_s, unpadded = timed(transformer, kwargs, device, args.repeats)
    unpadded = unpadded.float().cpu()
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        transformer(**kwargs, return_dict=False)
    flops = float(counter.get_total_flops())
    ceiling = matmul_tflops(device, 8192 if device.type == "cuda" else 256)
    diff = (unpadded - masked).abs()
    result = {
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "none (cpu)",
        "parameters_b": round(sum(p.numel() for p in transformer.parameters()) / 1e9, 3),
        "video_tokens": latent[0] * latent[1] * latent[2],
        "encoder_slots": sum(slots),
        "valid_encoder_tokens": sum(valid),
        "blocks_changed": changed,
        "masked_s": round(masked_s, 4),
        "unpadded_s": round(unpadded_s, 4),
        "speedup": round(masked_s / unpadded_s, 3),
        "pass_tflop_unpadded": round(flops / 1e12, 4),
        "matmul_tflops": round(ceiling, 1),
        "unpadded_tflops": round(flops / unpadded_s / 1e12, 1),
        "unpadded_share_of_ceiling": round(flops / unpadded_s / 1e12 / ceiling, 3),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "output_abs_mean": float(masked.abs().mean()),
        "versions": {"torch": torch.__version__, "diffusers": __import__("diffusers").__version__},
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2), flush=True)
    return result


if __name__ == "__main__":
    main()
