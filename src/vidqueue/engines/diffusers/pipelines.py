"""Loading diffusers pipelines from a hub id or a local folder, and keeping the recent ones resident."""

from __future__ import annotations

import gc
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import diffusers
import torch
import transformers
from PIL import Image

from vidqueue.engines.diffusers.options import LocalRun
from vidqueue.engines.diffusers.plan import Plan, frame_count
from vidqueue.engines.diffusers.speed import apply_speed
from vidqueue.engines.diffusers.stages import call_kwargs
from vidqueue.errors import ConfigError, JobFailed

log = logging.getLogger("vidqueue.diffusers")

# Loading bars belong on a terminal, not in a worker's log; vidqueue logs one line per load instead.
diffusers.utils.logging.disable_progress_bar()
transformers.utils.logging.disable_progress_bar()

# family → (text-to-video class, image-to-video class); the weights folder is saved for the first one given.
# Wan 2.2 A14B's folders hold both experts (transformer, transformer_2) and the pipeline's boundary_ratio.
PIPELINES: dict[str, tuple[str | None, str | None]] = {
    "wan2.1-t2v": ("WanPipeline", None),
    "wan2.1-i2v": (None, "WanImageToVideoPipeline"),
    "wan2.2-ti2v": ("WanPipeline", "WanImageToVideoPipeline"),
    "wan2.2-t2v": ("WanPipeline", None),
    "wan2.2-i2v": (None, "WanImageToVideoPipeline"),
    "ltx-video": ("LTXPipeline", "LTXImageToVideoPipeline"),
    "hunyuanvideo-1.5-t2v": ("HunyuanVideo15Pipeline", None),
    "hunyuanvideo-1.5-i2v": (None, "HunyuanVideo15ImageToVideoPipeline"),
}
# Every duration a request may ask for (the catalog's DURATION options): each frame count is warmed up.
DURATIONS = (5.0, 10.0)


def check_family(run: LocalRun) -> None:
    """Refuse at start what the model's pipeline classes cannot do (LoRA adapters on a pipeline without a loader)."""
    classes = [getattr(diffusers, name) for name in PIPELINES[run.family] if name is not None]
    if run.lora and not all(hasattr(cls, "load_lora_weights") for cls in classes):
        raise ConfigError(
            f'[models."{run.model_id}"] lora: diffusers has no LoRA loader for the {run.family} pipeline '
            f"({', '.join(c.__name__ for c in classes)})."
        )


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def free_memory() -> None:
    """Drop unreachable tensors and hand cached GPU memory back (after an eviction or an out-of-memory error)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def pick_device(wanted: str | None) -> torch.device:
    """The device to run on: the one asked for, else the first GPU, else the CPU."""
    if wanted:
        device = torch.device(wanted)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"Device {wanted!r} was asked for, but this machine has no CUDA GPU visible to torch.")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class Loaded:
    """A resident pipeline, and the image-to-video twin that shares its components (made when first needed)."""

    text: Any | None
    image: Any | None
    dtype: torch.dtype
    load_s: float = 0.0  # reading the weights and placing them
    compile_s: float = 0.0  # the compile warm-up (0 when not compiled)


class Resident:
    """Pipelines kept in memory, at most ``capacity``; the least recently used one is dropped first."""

    def __init__(self, device: torch.device, capacity: int = 1) -> None:
        self.device = device
        self.capacity = capacity
        self._loaded: OrderedDict[str, Loaded] = OrderedDict()
        self.loads = 0  # how many times weights were read (for tests and logs)
        # model id → seconds of its last load and compile warm-up (published on /metrics through the store)
        self.load_seconds: dict[str, float] = {}
        self.compile_seconds: dict[str, float] = {}

    def get(self, run: LocalRun, *, with_image: bool) -> Any:
        """The pipeline for ``run``: the image-to-video one when ``with_image``; loads and evicts as needed."""
        loaded = self._loaded.get(run.model_id)
        if loaded is None:
            while len(self._loaded) >= self.capacity:
                self._evict()
            loaded = self._load(run)
            self._loaded[run.model_id] = loaded
        self._loaded.move_to_end(run.model_id)
        if with_image:
            if loaded.image is None:
                loaded.image = self._image_twin(run, loaded)
            return loaded.image
        if loaded.text is None:
            raise JobFailed(f"Model {run.model_id} needs an input image.", "invalid_input")
        return loaded.text

    def resident(self) -> list[str]:
        """Model ids loaded now, least recently used first."""
        return list(self._loaded)

    def _load(self, run: LocalRun) -> Loaded:
        text_name, image_name = PIPELINES[run.family]
        name = text_name or image_name
        assert name is not None
        dtype = DTYPES[run.dtype]
        if self.device.type == "cpu" and dtype is not torch.float32:
            dtype = torch.float32  # half precision on a CPU is slow or unsupported for these kernels
        log.info("loading %s (%s) from %s as %s on %s", run.model_id, name, run.weights, dtype, self.device)
        started = time.perf_counter()
        try:
            pipe = getattr(diffusers, name).from_pretrained(run.weights, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise JobFailed(
                f"The weights of model {run.model_id} ({run.weights}) could not be loaded: {exc}", "engine_error"
            ) from exc
        self.loads += 1
        self._place(pipe, run)
        apply_speed(pipe, run, self.device)
        loaded = Loaded(text=pipe if text_name else None, image=None if text_name else pipe, dtype=dtype)
        loaded.load_s = time.perf_counter() - started
        self.load_seconds[run.model_id] = round(loaded.load_s, 3)
        if run.compiles_on(self.device.type):
            if loaded.text is not None and image_name is not None:
                loaded.image = self._image_twin(run, loaded)  # it shares the compiled blocks: warm its shapes too
            started = time.perf_counter()
            for path in (loaded.text, loaded.image):
                if path is not None:
                    warm_up(path, run, with_image=path is loaded.image)
            loaded.compile_s = time.perf_counter() - started
            self.compile_seconds[run.model_id] = round(loaded.compile_s, 3)
            log.info("%s: compiled and warmed up in %.1f s", run.model_id, loaded.compile_s)
        return loaded

    def _image_twin(self, run: LocalRun, loaded: Loaded) -> Any:
        _, image_name = PIPELINES[run.family]
        if image_name is None or loaded.text is None:
            raise JobFailed(f"Model {run.model_id} does not take an input image.", "invalid_input")
        # from_pipe shares every component (no second copy of the weights); it casts them to its own dtype
        # argument, float32 when omitted, so it gets the one they were loaded with.
        twin = getattr(diffusers, image_name).from_pipe(loaded.text, dtype=loaded.dtype)
        twin.set_progress_bar_config(disable=True)
        return twin

    def _place(self, pipe: Any, run: LocalRun) -> None:
        pipe.set_progress_bar_config(disable=True)
        if run.cpu_offload and self.device.type == "cuda":
            pipe.enable_model_cpu_offload(device=self.device)
        else:
            pipe.to(self.device)
        if run.vae_tiling and hasattr(pipe.vae, "enable_tiling"):
            pipe.vae.enable_tiling()

    def _evict(self) -> None:
        model_id, _ = self._loaded.popitem(last=False)
        log.info("unloading %s to make room", model_id)
        free_memory()


def warm_up(pipe: Any, run: LocalRun, *, with_image: bool) -> None:
    """Run one step at every size and frame count a request may ask for, so that no request waits on a compile."""
    for width, height in dict.fromkeys(run.sizes.values()):
        for seconds in DURATIONS:
            plan = Plan(
                prompt="warm-up",
                negative_prompt=None,
                width=width,
                height=height,
                frames=frame_count(seconds, run.fps, run.frame_step),
                steps=2 if run.family == "ltx-video" else 1,
                guidance_scale=run.guidance if run.guidance is not None else run.guidance_per_cfg * 0.5,
                seed=0,
                image=Image.new("RGB", (width, height), (128, 128, 128)) if with_image else None,
            )
            kwargs, _ = call_kwargs(pipe, run, plan, output_type="latent")
            with torch.inference_mode():
                pipe(**kwargs)
