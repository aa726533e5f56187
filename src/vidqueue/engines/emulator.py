"""The emulator engine: a fast, deterministic synthetic video that honours every parameter.

It renders a real H.264 MP4 (24 fps, exactly 24 frames per second of ``duration``) at the size the aspect ratio
or the input image asks for, with the prompt as a caption and a visible "EMULATED" label, so clients can be
built and tested without paying for generation. The same model and payload always give the same bytes. A text
clip changes only where its shapes, timecode and progress stripe move, and is coded by the exact writer in
``media.h264`` (a 5 s 720p clip costs under a tenth of a second of one core); an image clip zooms, so every
pixel changes, and goes through x264.
``latency_s`` stretches a run to look like real work and ``failure_rate`` fails a share of requests, chosen by
request id so the choice is stable across retries and processes. ``journal`` names a file that gets a line at the
start and the end of every generation, to audit that each request was generated once.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from vidqueue.engines.base import GeneratedMedia, Job, JobContext
from vidqueue.errors import JobCancelled, JobFailed
from vidqueue.media.encode import encode_mp4, write_frame_thumbnail, yuv420_shape
from vidqueue.media.h264 import FrameUpdate, encode_exact_mp4
from vidqueue.media.synthetic import SyntheticClip, font

FPS = 24
LONG_SIDE = 1280
SIZES = {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (720, 720)}
DURATIONS = {"5": 5, "10": 10}

# Progress up to this share is rendering and encoding; the rest is the thumbnail and the file's final pass.
_RENDER_SHARE = 0.97
_STEP_FRAMES = 4  # frames between progress reports and cancel checks (~20 ms of work at 720p)
_SLEEP_SLICE_S = 0.1  # a simulated-latency sleep never runs longer than this without a cancel check


class EmulatorEngine:
    """Serves any model id with synthetic video; for development, demos and client tests."""

    kind = "emulator"
    concurrency = 1  # CPU-bound: one at a time per worker process; more processes run more
    shared_limit: int | None = None

    def __init__(
        self,
        models: set[str],
        *,
        latency_s: float = 0.0,
        failure_rate: float = 0.0,
        fps: int = FPS,
        preset: str = "ultrafast",
        threads: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        journal: Path | None = None,
    ) -> None:
        if latency_s < 0:
            raise ValueError("latency_s must be 0 or more")
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError("failure_rate must be between 0 and 1")
        self._models = set(models)
        self.latency_s = latency_s
        self.failure_rate = failure_rate
        self.fps = fps
        # x264 settings for image clips: ultrafast with one thread keeps a 5 s clip to about a second of one
        # core, and a fixed thread count keeps the bytes identical from machine to machine.
        self.preset = preset
        self.threads = threads
        self._clock = clock
        self._sleep = sleep
        self.journal = journal

    def models(self) -> set[str]:
        """Model ids this engine serves."""
        return set(self._models)

    def setup(self) -> None:
        """Warm the font cache so the first request is as fast as the rest."""
        font(30)

    def generate(self, job: Job, ctx: JobContext) -> GeneratedMedia:
        """Render, encode and thumbnail a synthetic clip for ``job``."""
        started = self._clock()
        self._note("start", job)
        ctx.progress(0.0)
        self._check_cancel(ctx)
        payload = job.payload
        seconds = _duration(payload)
        frames = seconds * self.fps
        image = _open_image(job.input_image) if job.input_image is not None else None
        width, height = _size_for(payload, image)
        seed = clip_seed(job.model, payload, job.input_image)
        clip = SyntheticClip(
            width=width,
            height=height,
            frames=frames,
            fps=self.fps,
            seed=seed,
            caption=str(payload.get("prompt", "")),
            sublabel=job.model,
            image=image,
        )
        fail_at = frames // 2 if self.fails(job.request_id) else None
        thumb_at = frames // 3
        thumb: list[np.ndarray] = []
        report = _Progress(ctx)
        pacer = _Pacer(self.latency_s, ctx, report, self._sleep)

        def rendered() -> Iterator[FrameUpdate]:
            # One buffer serves every frame: a text clip's frame is an update of the one before, and both
            # encoders are done with a frame before the next is asked for.
            buffer = np.empty(yuv420_shape(width, height), np.uint8)
            for index in range(frames):
                if index % _STEP_FRAMES == 0:
                    done = index / frames
                    pacer.wait_until(done)
                    report(_RENDER_SHARE * done)
                    self._check_cancel(ctx)
                    if fail_at is not None and index >= fail_at:
                        raise JobFailed(
                            f"Emulated engine failure (failure_rate={self.failure_rate:g}).", code="engine_error"
                        )
                damage = clip.update(index, buffer)
                if index == thumb_at:
                    thumb.append(buffer.copy())
                yield FrameUpdate(buffer, damage)
            pacer.wait_until(1.0)
            self._check_cancel(ctx)

        video = ctx.workdir / "video.mp4"
        if clip.incremental and width % 16 == 0 and height % 16 == 0:
            # Only what changed is coded, and exactly; x264 alone would spend several times the whole budget
            # analysing macroblocks that did not change.
            info = encode_exact_mp4(rendered(), width=width, height=height, fps=self.fps, path=video)
        else:
            info = encode_mp4(
                (update.frame for update in rendered()),
                width=width,
                height=height,
                fps=self.fps,
                path=video,
                preset=self.preset,
                threads=self.threads,
            )
        report(_RENDER_SHARE)
        thumbnail = write_frame_thumbnail(thumb[0], ctx.workdir / "thumbnail.jpg")
        report(1.0)
        self._note("done", job)
        return GeneratedMedia(
            videos=[video],
            info=info,
            thumbnail=thumbnail,
            extra={"seed": seed, "emulated": True, "render_s": round(self._clock() - started, 3)},
        )

    def _note(self, event: str, job: Job) -> None:
        """Append one line to the journal: an audit of every generation, across worker processes and machines."""
        if self.journal is None:
            return
        line = json.dumps(
            {"event": event, "request_id": job.request_id, "attempt": job.attempt, "pid": os.getpid(), "t": time.time()}
        )
        # One write of one short line to an O_APPEND file: lines from concurrent workers never interleave.
        fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def fails(self, request_id: str) -> bool:
        """Whether ``failure_rate`` picks this request to fail (a stable choice by request id)."""
        if self.failure_rate <= 0.0:
            return False
        digest = hashlib.sha256(f"vidqueue-emulator-failure:{request_id}".encode()).digest()
        draw = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
        return draw < self.failure_rate

    def _check_cancel(self, ctx: JobContext) -> None:
        if ctx.cancelled():
            raise JobCancelled()


def clip_seed(model: str, payload: dict[str, Any], image: bytes | None) -> int:
    """The seed of a clip: a hash of the model, the payload and the input image."""
    canonical = json.dumps({"model": model, "payload": payload}, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(canonical.encode())
    if image is not None:
        digest.update(hashlib.sha256(image).digest())
    return int.from_bytes(digest.digest()[:8], "big")


def output_size(aspect_ratio: str, image_size: tuple[int, int] | None = None) -> tuple[int, int]:
    """Frame size for an aspect ratio, or for an image (its own ratio, long side 1280, even sides)."""
    if image_size is not None:
        w, h = image_size
        scale = LONG_SIDE / max(w, h)
        return _even_at_least_2(w * scale), _even_at_least_2(h * scale)
    try:
        return SIZES[aspect_ratio]
    except KeyError:
        raise JobFailed(
            f"Unsupported aspect_ratio {aspect_ratio!r}; use one of {', '.join(SIZES)}.", code="invalid_input"
        ) from None


def _size_for(payload: dict[str, Any], image: Image.Image | None) -> tuple[int, int]:
    if image is not None:
        return output_size("", image.size)
    return output_size(str(payload.get("aspect_ratio", "16:9")))


def _duration(payload: dict[str, Any]) -> int:
    value = str(payload.get("duration", "5"))
    try:
        return DURATIONS[value]
    except KeyError:
        raise JobFailed(f"Unsupported duration {value!r}; use 5 or 10.", code="invalid_input") from None


def _open_image(data: bytes) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG", "PNG"]) as opened:
            # Shown the way a viewer shows it: a phone photo's EXIF rotation applied.
            upright = ImageOps.exif_transpose(opened)
            return upright.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:
        raise JobFailed("The input image could not be decoded.", code="invalid_input") from exc


def _even_at_least_2(value: float) -> int:
    return max(2, 2 * round(value / 2))


class _Progress:
    """Forwards progress to the context, never backwards, scaled to the render share."""

    def __init__(self, ctx: JobContext) -> None:
        self._ctx = ctx
        self.last = 0.0

    def __call__(self, fraction: float) -> None:
        self.last = max(self.last, min(1.0, fraction))
        self._ctx.progress(self.last)


class _Pacer:
    """Spreads ``latency_s`` of simulated work over the run, in short sleeps that report and check cancel."""

    def __init__(
        self, latency_s: float, ctx: JobContext, report: Callable[[float], None], sleep: Callable[[float], None]
    ) -> None:
        self._latency = latency_s
        self._ctx = ctx
        self._report = report
        self._sleep = sleep
        self._slept = 0.0
        self._fraction = 0.0

    def wait_until(self, fraction: float) -> None:
        """Sleep until ``fraction`` of the latency has passed in total, reporting progress toward it."""
        owed = self._latency * fraction - self._slept
        # Tiny debts wait for the next step: fewer, longer sleeps cost less than many short ones.
        if owed <= 0 or (owed < 0.02 and fraction < 1.0):
            return
        steps = max(1, math.ceil(owed / _SLEEP_SLICE_S))
        start_slept, start_fraction = self._slept, self._fraction
        for step in range(1, steps + 1):
            if self._ctx.cancelled():
                raise JobCancelled()
            self._sleep(owed / steps)
            self._slept = start_slept + owed * step / steps
            self._report(_RENDER_SHARE * (start_fraction + (fraction - start_fraction) * step / steps))
        self._fraction = fraction
