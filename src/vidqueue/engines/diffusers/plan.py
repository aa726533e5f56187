"""From a validated payload to the numbers a pipeline call takes: frames, size, guidance, steps, seed, image."""

from __future__ import annotations

import io
import secrets
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps

from vidqueue.engines.diffusers.options import LocalRun
from vidqueue.errors import JobFailed


@dataclass(frozen=True)
class Plan:
    """One generation's settings."""

    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    frames: int
    steps: int
    guidance_scale: float
    seed: int
    image: Image.Image | None
    cfg_scale_ignored: bool = False  # the model fixes its guidance (a distilled model)

    def describe(self) -> dict[str, Any]:
        """What the outcome records, so a run can be repeated."""
        out: dict[str, Any] = {
            "seed": self.seed,
            "num_inference_steps": self.steps,
            "guidance_scale": round(self.guidance_scale, 4),
            "num_frames": self.frames,
            "width": self.width,
            "height": self.height,
        }
        if self.cfg_scale_ignored:
            out["cfg_scale_ignored"] = "this model's guidance is fixed by the server's configuration"
        return out


def frame_count(seconds: float, fps: int, step: int) -> int:
    """The frame count nearest ``seconds`` at ``fps`` that the family allows (k * step + 1, k ≥ 1)."""
    k = max(1, round(seconds * fps / step))
    return k * step + 1


def make_plan(run: LocalRun, payload: dict[str, Any], image: bytes | None) -> Plan:
    """The plan of one request; JobFailed names anything the model cannot do."""
    ratio = str(payload.get("aspect_ratio", "16:9"))
    if ratio not in run.sizes:
        raise JobFailed(f"Model {run.model_id} has no size for aspect_ratio {ratio!r}.", "invalid_input")
    width, height = run.sizes[ratio]
    if image is None and run.image_use == "required":
        raise JobFailed(f"Model {run.model_id} needs an input image.", "invalid_input")
    if image is not None and run.image_use == "none":
        raise JobFailed(f"Model {run.model_id} does not take an input image.", "invalid_input")
    seed = payload.get("seed")
    negative = str(payload.get("negative_prompt") or "") or None
    steps = int(payload.get("num_inference_steps", run.steps))
    if run.max_steps is not None and steps > run.max_steps:
        raise JobFailed(
            f"Model {run.model_id} runs at most {run.max_steps} steps (num_inference_steps).", "invalid_input"
        )
    fixed = run.guidance
    guidance = fixed if fixed is not None else run.guidance_per_cfg * float(payload.get("cfg_scale", 0.5))
    return Plan(
        prompt=str(payload["prompt"]),
        negative_prompt=negative,
        width=width,
        height=height,
        frames=frame_count(float(payload.get("duration", "5")), run.fps, run.frame_step),
        steps=steps,
        guidance_scale=guidance,
        seed=int(seed) if seed is not None else secrets.randbelow(2**32),
        image=fit_image(image, width, height) if image is not None else None,
        cfg_scale_ignored=run.guidance is not None,
    )


def fit_image(data: bytes, width: int, height: int) -> Image.Image:
    """The input image upright, resized and centre-cropped to exactly ``width`` x ``height``."""
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG", "PNG"]) as opened:
            upright = ImageOps.exif_transpose(opened).convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:
        raise JobFailed("The input image could not be decoded.", "invalid_input") from exc
    return ImageOps.fit(upright, (width, height), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
