"""The diffusers engine: one resident pipeline per model, progress per denoising step, cancel within a step.

A generation has a device stage (text encode, denoise, decode, frames to uint8 on the device) and a host stage
(MP4 encode, thumbnail; the worker then uploads). Only one device stage runs at a time; with ``overlap`` the engine
takes two requests at once, and tells the worker (``ctx.stage_done()``) when its device stage ends, so the next
request starts on the GPU while this one's host stage runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import torch

from vidqueue.engines.base import GeneratedMedia, Job, JobContext
from vidqueue.engines.diffusers.options import LocalRun, check_weights
from vidqueue.engines.diffusers.pipelines import Resident, check_family, free_memory, pick_device
from vidqueue.engines.diffusers.plan import Plan, make_plan
from vidqueue.engines.diffusers.speed import check_speed
from vidqueue.engines.diffusers.stages import DeviceResult, run_device_stage
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
    """Runs local open-weight video models; one device stage at a time per worker process (one process per GPU)."""

    kind = "diffusers"
    shared_limit: int | None = None

    def __init__(
        self,
        runs: dict[str, LocalRun],
        *,
        device: str | None = None,
        max_resident: int = 1,
        overlap: bool = True,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.runs = dict(runs)
        self._device_wanted = device
        self._max_resident = max_resident
        self._clock = clock
        self.overlap = overlap
        # With overlap, one request is on the device while the one before it is encoded and uploaded.
        self.concurrency = 2 if overlap else 1
        self.staged = overlap  # the worker claims the next request when a device stage ends, not when a job does
        self._device_lock = threading.Lock()
        self.pipelines: Resident | None = None

    def models(self) -> set[str]:
        """Model ids this engine serves."""
        return set(self.runs)

    def setup(self) -> None:
        """Pick the device, check weight folders and speed settings; pipelines load at first use and then stay."""
        for run in self.runs.values():
            try:
                check_weights(run)
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
            check_speed(run)
            check_family(run)
        wanted = self._device_wanted or next((r.device for r in self.runs.values() if r.device), None)
        device = pick_device(wanted)
        self.pipelines = Resident(device, self._max_resident)
        log.info("diffusers engine on %s for %s", device, ", ".join(sorted(self.runs)))

    def facts(self) -> dict[str, dict[str, float]]:
        """Seconds spent loading and compiling each resident model's pipeline (shown on /metrics)."""
        if self.pipelines is None:
            return {}
        return {
            "load_seconds": dict(self.pipelines.load_seconds),
            "compile_seconds": dict(self.pipelines.compile_seconds),
        }

    def generate(self, job: Job, ctx: JobContext) -> GeneratedMedia:
        """Run the device stage (one at a time), hand the device on, then encode the video and its thumbnail."""
        if self.pipelines is None:
            self.setup()
        assert self.pipelines is not None
        run = self.runs[job.model]
        plan = make_plan(run, job.payload, job.input_image)
        started = self._clock()
        try:
            with self._device_lock:
                waited = self._clock() - started
                result = self._device_stage(run, plan, ctx)
        finally:
            ctx.stage_done()
        host_started = self._clock()
        video = ctx.workdir / "video.mp4"
        frames = result.frames
        height, width = int(frames.shape[1]), int(frames.shape[2])
        info = encode_mp4(iter(frames), width=width, height=height, fps=run.fps, path=video, pixel_format="rgb24")
        thumbnail = write_frame_thumbnail(frames[len(frames) // 3], ctx.workdir / "thumbnail.jpg", pixel_format="rgb24")
        ctx.progress(1.0)
        done = self._clock()
        timing = {
            **result.seconds,
            "encode_s": round(done - host_started, 3),
            "device_wait_s": round(waited, 3),
            "total_s": round(done - started - waited, 3),
            "transformer_passes": result.passes,
        }
        generation = {**plan.describe(), **result.settings, **run.speed_settings(self.pipelines.device.type), **timing}
        return GeneratedMedia(videos=[video], info=info, thumbnail=thumbnail, extra={"generation": generation})

    def _device_stage(self, run: LocalRun, plan: Plan, ctx: JobContext) -> DeviceResult:
        assert self.pipelines is not None
        try:
            pipe = self.pipelines.get(run, with_image=plan.image is not None)
            ctx.progress(_LOADED)
            if ctx.cancelled():
                raise JobCancelled()
            return run_device_stage(
                pipe,
                run,
                plan,
                self.pipelines.device,
                ctx,
                lambda fraction: ctx.progress(_LOADED + (_DENOISED - _LOADED) * fraction),
            )
        except torch.cuda.OutOfMemoryError:
            free_memory()
            raise JobFailed(_OOM_MESSAGE, "out_of_memory") from None
