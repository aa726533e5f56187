"""What the diffusers engine knows about one model it runs (built by the worker from the catalog and settings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ImageUse = Literal["none", "optional", "required"]


@dataclass(frozen=True)
class LocalRun:
    """One local model: its weights, native settings, the family's rules and how to place it on a device."""

    model_id: str
    family: str
    weights: str  # a hub id or a local folder
    steps: int  # default num_inference_steps
    fps: int
    sizes: dict[str, tuple[int, int]] = field(hash=False)  # aspect ratio → (width, height)
    frame_step: int = 4  # frame counts are k * frame_step + 1
    guidance_per_cfg: float = 10.0  # guidance_scale = guidance_per_cfg * cfg_scale
    image_use: ImageUse = "none"
    device: str | None = None  # None: cuda when available, else cpu
    dtype: str = "bfloat16"
    cpu_offload: bool = False
    vae_tiling: bool = False


def check_weights(run: LocalRun) -> None:
    """A local weights folder must exist and hold a pipeline (ValueError says why); a hub id is checked at load."""
    path = Path(run.weights).expanduser()
    looks_local = run.weights.startswith((".", "/", "~")) or path.exists()
    if looks_local and not (path / "model_index.json").is_file():
        raise ValueError(
            f"Model {run.model_id}: the weights folder {run.weights} holds no model_index.json (a diffusers "
            "pipeline saved with save_pretrained, or a downloaded hub snapshot)."
        )
