"""The diffusers engine: one resident pipeline per model, progress per denoising step, cancel between steps."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from vidqueue.engines.base import GeneratedMedia, Job, JobContext
from vidqueue.engines.diffusers.options import LocalRun, check_weights
from vidqueue.engines.diffusers.pipelines import Resident, free_memory, pick_device
from vidqueue.engines.diffusers.plan import Plan, make_plan
from vidqueue.errors import ConfigError, JobCancelled, JobFailed
from vidqueue.media.encode import encode_mp4, write_frame_thumbnail

log = logging.getLogger("vidqueue.diffusers")

# Progress shares: loading weights, then the denoising steps, then decoding and encoding.
_LOADED = 0.05
_DENOISED = 0.9
_OOM_MESSAGE = (
    "The GPU ran out of memory for this video; try a shorter duration or a smaller aspect ratio size, or set "
    "cpu_offload or vae_tiling for the model."
)


class DiffusersEngine:
    """Runs local open-weight video models; one request at a time per worker process (one process per GPU)."""

    kind = "diffusers"
    concurrency = 1
    shared_limit: int | None = None

    def __init__(
        self,
        runs: dict[str, LocalRun],
        *,
        device: str | None = None,
        max_resident: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runs = dict(runs)
        self._device_wanted = device
        self._max_resident = max_resident
        self._clock = clock
        self.pipelines: Resident | None = None

    def models(self) -> set[str]:
        """Model ids this engine serves."""
        return set(self.runs)

    def setup(self) -> None:
        """Pick the device and check local weight folders; pipelines load at first use and then stay."""
        for run in self.runs.values():
            try:
                check_weights(run)
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
        wanted = self._device_wanted or next((r.device for r in self.runs.values() if r.device), None)
        device = pick_device(wanted)
        self.pipelines = Resident(device, self._max_resident)
        log.info("diffusers engine on %s for %s", device, ", ".join(sorted(self.runs)))

    def generate(self, job: Job, ctx: JobContext) -> GeneratedMedia:
        """Denoise, decode and encode one video."""
        if self.pipelines is None:
            self.setup()
        assert self.pipelines is not None
        run = self.runs[job.model]
        plan = make_plan(run, job.payload, job.input_image)
        started = self._clock()
        try:
            pipe = self.pipelines.get(run, with_image=plan.image is not None)
            ctx.progress(_LOADED)
            if ctx.cancelled():
                raise JobCancelled()
            with torch.inference_mode():
                frames = self._denoise(pipe, run, plan, ctx)
        except torch.cuda.OutOfMemoryError:
            free_memory()
            raise JobFailed(_OOM_MESSAGE, "out_of_memory") from None
        denoised = self._clock()
        video = ctx.workdir / "video.mp4"
        info = encode_mp4(
            iter(frames), width=plan.width, height=plan.height, fps=run.fps, path=video, pixel_format="rgb24"
        )
        thumbnail = write_frame_thumbnail(frames[len(frames) // 3], ctx.workdir / "thumbnail.jpg", pixel_format="rgb24")
        ctx.progress(1.0)
        timing = {"denoise_s": round(denoised - started, 3), "total_s": round(self._clock() - started, 3)}
        return GeneratedMedia(
            videos=[video], info=info, thumbnail=thumbnail, extra={"generation": {**plan.describe(), **timing}}
        )

    def _denoise(self, pipe: Any, run: LocalRun, plan: Plan, ctx: JobContext) -> np.ndarray:
        def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            ctx.progress(_LOADED + (_DENOISED - _LOADED) * (step + 1) / plan.steps)
            if ctx.cancelled():
                # Raised out of the pipeline's loop: the request ends within one step, and no decode is wasted.
                raise JobCancelled()
            return tensors

        kwargs: dict[str, Any] = {
            "prompt": plan.prompt,
            "negative_prompt": plan.negative_prompt,
            "height": plan.height,
            "width": plan.width,
            "num_frames": plan.frames,
            "num_inference_steps": plan.steps,
            "guidance_scale": plan.guidance_scale,
            # A CPU generator gives the same noise on every device, so a seed repeats across machines.
            "generator": torch.Generator(device="cpu").manual_seed(plan.seed),
            "output_type": "np",
            "callback_on_step_end": on_step_end,
        }
        if plan.image is not None:
            kwargs["image"] = plan.image
        if run.family == "ltx-video":
            # LTX-Video 0.9.1+ decodes with a little noise at a small timestep (ignored by a VAE without it).
            kwargs.update(frame_rate=run.fps, decode_timestep=0.05, decode_noise_scale=0.025)
        output = pipe(**kwargs)
        video = np.asarray(output.frames[0], dtype=np.float32)  # (frames, height, width, 3) in [0, 1]
        return (np.clip(video, 0.0, 1.0) * 255.0).round().astype(np.uint8)
