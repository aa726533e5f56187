"""What the diffusers engine knows about one model it runs (built by the worker from the catalog and settings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ImageUse = Literal["none", "optional", "required"]
LoraTarget = Literal["transformer", "transformer_2", "both"]


@dataclass(frozen=True)
class Lora:
    """One LoRA adapter fused into a model's weights at load."""

    path: str  # a local .safetensors file, a folder holding one, or a hub id
    scale: float = 1.0
    weight_name: str | None = None
    target: LoraTarget = "transformer"

    def describe(self) -> dict[str, Any]:
        """What the outcome records of it."""
        return {
            "path": self.path,
            "scale": self.scale,
            **({"target": self.target} if self.target != "transformer" else {}),
        }


@dataclass(frozen=True)
class Cache:
    """A diffusers cache hook: its kind and the options of its config class."""

    kind: Literal["first_block", "taylorseer", "mag"]
    options: dict[str, Any] = field(default_factory=dict, hash=False)


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
    compile: bool | None = None  # None: on when the device is a GPU
    attention_backend: str | None = None
    lora: tuple[Lora, ...] = ()
    scheduler: str | None = None
    scheduler_options: dict[str, Any] = field(default_factory=dict, hash=False)
    guidance: float | None = None  # a fixed guidance scale; cfg_scale is then ignored
    guidance_2_share: float | None = None  # a second expert's guidance as a share of the first's (Wan 2.2 A14B)
    max_steps: int | None = None
    cache: Cache | None = None

    def speed_settings(self, device_type: str) -> dict[str, Any]:
        """The load-time settings that shape speed and output, as the outcome's ``generation`` records them."""
        # The dtype as loaded: half precision is float32 on a CPU (see pipelines.Resident._load).
        out: dict[str, Any] = {"dtype": self.dtype if device_type != "cpu" else "float32"}
        out["compile"] = self.compiles_on(device_type)
        if self.cpu_offload and device_type == "cuda":
            out["cpu_offload"] = True
        if self.vae_tiling:
            out["vae_tiling"] = True
        if self.family.startswith("hunyuanvideo-1.5"):
            out["unpadded_attention"] = True
        if self.attention_backend:
            out["attention_backend"] = self.attention_backend
        if self.lora:
            out["lora"] = [lora.describe() for lora in self.lora]
        if self.scheduler:
            out["scheduler"] = self.scheduler
        if self.scheduler_options:
            out["scheduler_options"] = dict(self.scheduler_options)
        if self.cache is not None:
            out["cache"] = {"kind": self.cache.kind, **self.cache.options}
        return out

    def compiles_on(self, device_type: str) -> bool:
        """Whether the transformer is compiled on a device of this type (the default: on a GPU, not on a CPU)."""
        return self.compile if self.compile is not None else device_type == "cuda"


def check_weights(run: LocalRun) -> None:
    """A local weights folder must exist and hold a pipeline (ValueError says why); a hub id is checked at load."""
    path = Path(run.weights).expanduser()
    looks_local = run.weights.startswith((".", "/", "~")) or path.exists()
    if looks_local and not (path / "model_index.json").is_file():
        raise ValueError(
            f"Model {run.model_id}: the weights folder {run.weights} holds no model_index.json (a diffusers "
            "pipeline saved with save_pretrained, or a downloaded hub snapshot)."
        )
