"""The device stage of one generation: the pipeline call with progress, cancel and timing hooks, frames to uint8.

Progress and cancel do not use ``callback_on_step_end``, which HunyuanVideo 1.5's pipelines lack: a forward pre-hook
on each transformer checks for a cancel before every pass (so a cancel lands within a step), and a wrapper around
the scheduler's ``step`` reports progress after each step. The same hooks time the stages: text encoding ends at
the first transformer pass, denoising at the last scheduler step, decoding when the uint8 frames reach the host.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vidqueue.engines.base import JobContext
from vidqueue.engines.diffusers.options import LocalRun
from vidqueue.engines.diffusers.plan import Plan
from vidqueue.engines.diffusers.speed import transformers_of
from vidqueue.errors import JobCancelled

HUNYUAN_15 = ("hunyuanvideo-1.5-t2v", "hunyuanvideo-1.5-i2v")


@dataclass
class DeviceResult:
    """The frames of one video on the host, and what the device stage took."""

    frames: np.ndarray  # (frames, height, width, 3) uint8
    seconds: dict[str, float]
    passes: int  # transformer forward passes (both experts together)
    settings: dict[str, Any] = field(default_factory=dict)  # what the outcome records of the call and its passes


def call_kwargs(
    pipe: Any, run: LocalRun, plan: Plan, *, output_type: str = "pt"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pipeline call's keyword arguments for ``plan``, and the extra settings the outcome records."""
    recorded: dict[str, Any] = {}
    kwargs: dict[str, Any] = {
        "prompt": plan.prompt,
        "negative_prompt": plan.negative_prompt,
        "num_frames": plan.frames,
        "num_inference_steps": plan.steps,
        # A CPU generator gives the same noise on every device, so a seed repeats across machines.
        "generator": torch.Generator(device="cpu").manual_seed(plan.seed),
        "output_type": output_type,
    }
    if plan.image is not None:
        kwargs["image"] = plan.image
    if run.family != "hunyuanvideo-1.5-i2v":
        # HunyuanVideo 1.5's image-to-video call takes no size: it derives one from the image (already fitted to
        # the model's size for this aspect ratio) and its target resolution.
        kwargs.update(height=plan.height, width=plan.width)
    if run.family in HUNYUAN_15:
        # Guidance lives in the pipeline's guider object, not in a call argument; at 1 or less CFG is off (one
        # pass per step), as the other families' pipelines do for guidance_scale <= 1.
        scale = max(plan.guidance_scale, 1.0)
        if getattr(pipe.guider, "guidance_scale", None) != scale:  # new() logs diffusers' "experimental" warning
            pipe.guider = pipe.guider.new(guidance_scale=scale)
    else:
        kwargs["guidance_scale"] = plan.guidance_scale
    if run.guidance_2_share is not None and getattr(pipe, "transformer_2", None) is not None:
        kwargs["guidance_scale_2"] = recorded["guidance_scale_2"] = round(plan.guidance_scale * run.guidance_2_share, 4)
    if run.family == "ltx-video":
        # LTX-Video 0.9.1+ decodes with a little noise at a small timestep (ignored by a VAE without it).
        kwargs.update(frame_rate=run.fps, decode_timestep=0.05, decode_noise_scale=0.025)
    return kwargs, recorded


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepHooks:
    """Counts transformer passes, checks for a cancel before each, reports progress after each scheduler step."""

    def __init__(
        self,
        pipe: Any,
        steps: int,
        device: torch.device,
        progress: Callable[[float], None],
        cancelled: Callable[[], bool],
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._pipe = pipe
        self._steps = steps
        self._device = device
        self._progress = progress
        self._cancelled = cancelled
        self._clock = clock
        self.passes = 0
        self.steps_done = 0
        # Two experts (Wan 2.2 A14B): each one's passes and the timesteps it saw (read on the host: a sync per pass,
        # nothing next to a 14B pass).
        self._experts = transformers_of(pipe)
        self.expert_passes = [0] * len(self._experts)
        self.expert_timesteps: list[list[float]] = [[] for _ in self._experts]
        self._block_runs_before = [_block_runs(t) for t in self._experts]
        self.first_pass_at: float | None = None
        self.last_step_at: float | None = None
        self._handles: list[Any] = []
        self._scheduler: Any = None

    def __enter__(self) -> StepHooks:
        for i, transformer in enumerate(self._experts):
            hook = self._expert_hook(i) if len(self._experts) > 1 else self._before_pass
            self._handles.append(transformer.register_forward_pre_hook(hook, with_kwargs=True))
        self._scheduler = self._pipe.scheduler
        original = self._scheduler.step

        def step(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            self._after_step()
            return out

        self._scheduler.step = step  # an instance attribute: removed on exit, the class's method stays
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._scheduler is not None and "step" in vars(self._scheduler):
            del self._scheduler.step

    def _expert_hook(self, index: int) -> Callable[[Any, Any, dict[str, Any]], None]:
        def before(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
            self._before_pass(module, args, kwargs)
            self.expert_passes[index] += 1
            timestep = kwargs.get("timestep")
            if isinstance(timestep, torch.Tensor) and timestep.numel():
                self.expert_timesteps[index].append(float(timestep.flatten()[0].item()))

        return before

    def full_passes(self) -> int | None:
        """Passes that ran every block (fewer than ``passes`` under a cache hook); None when not counted."""
        total = 0
        for transformer, before in zip(self._experts, self._block_runs_before, strict=True):
            now = _block_runs(transformer)
            if now is None:
                return None
            total += now - (before or 0)
        return total

    def record(self) -> dict[str, Any]:
        """What the outcome records of the passes: full passes under a cache, each expert's share and timesteps."""
        out: dict[str, Any] = {}
        full = self.full_passes()
        if full is not None:
            out["full_transformer_passes"] = full
        if len(self._experts) > 1:
            boundary = getattr(self._pipe.config, "boundary_ratio", None)
            if boundary is not None:
                out["boundary_timestep"] = round(boundary * self._pipe.scheduler.config.num_train_timesteps, 3)
            out["experts"] = {
                name: {"passes": n, "timesteps": [round(t, 3) for t in dict.fromkeys(ts)]}
                for name, n, ts in zip(
                    ("transformer", "transformer_2"), self.expert_passes, self.expert_timesteps, strict=False
                )
            }
        return out

    def _before_pass(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        if self._cancelled():
            # Raised out of the pipeline's loop: the request ends within one pass, and no decode is wasted.
            raise JobCancelled()
        if self.first_pass_at is None:
            _sync(self._device)
            self.first_pass_at = self._clock()
        self.passes += 1

    def _after_step(self) -> None:
        self.steps_done += 1
        self._progress(min(1.0, self.steps_done / self._steps))
        if self.steps_done >= self._steps:
            _sync(self._device)
            self.last_step_at = self._clock()


def to_uint8_frames(output: Any) -> np.ndarray:
    """The first video of a pipeline's output as (frames, height, width, 3) uint8 on the host.

    A tensor is converted on its own device first, so only uint8 bytes cross to the host (a quarter of float32).
    """
    video = output.frames[0] if hasattr(output, "frames") else output[0]
    if isinstance(video, torch.Tensor):
        if video.ndim == 4 and video.shape[1] in (1, 3) and video.shape[-1] not in (1, 3):
            video = video.permute(0, 2, 3, 1)  # (F, C, H, W) → (F, H, W, C)
        as_bytes = video.clamp(0, 1).mul(255).round().to(torch.uint8)
        frames: np.ndarray = as_bytes.contiguous().cpu().numpy()
        return frames
    array = np.asarray(video, dtype=np.float32)
    return (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def run_device_stage(
    pipe: Any, run: LocalRun, plan: Plan, device: torch.device, ctx: JobContext, progress: Callable[[float], None]
) -> DeviceResult:
    """Encode the prompt, denoise, decode and turn the frames to uint8 (on the device), then copy them to the host."""
    kwargs, recorded = call_kwargs(pipe, run, plan)
    started = time.perf_counter()
    hooks = StepHooks(pipe, plan.steps, device, progress, ctx.cancelled)
    try:
        with hooks, torch.inference_mode():
            output = pipe(**kwargs)
            frames = to_uint8_frames(output)
    finally:
        for transformer in transformers_of(pipe):
            # A cache hook keeps state between steps; a pipeline that raised (a cancel) never reset it.
            if getattr(transformer, "_cache_config", None) is not None:
                transformer._reset_stateful_cache()
    done = time.perf_counter()
    first = hooks.first_pass_at or started
    last = hooks.last_step_at or first
    seconds = {
        "text_encode_s": round(first - started, 3),
        "denoise_s": round(last - first, 3),
        "decode_s": round(done - last, 3),
    }
    if (frames.shape[2], frames.shape[1]) != (plan.width, plan.height):
        recorded.update(width=int(frames.shape[2]), height=int(frames.shape[1]))  # the size the pipeline chose
    return DeviceResult(frames=frames, seconds=seconds, passes=hooks.passes, settings={**recorded, **hooks.record()})


def _block_runs(transformer: Any) -> int | None:
    counter = getattr(transformer, "_vidqueue_block_runs", None)
    return counter[0] if counter is not None else None
