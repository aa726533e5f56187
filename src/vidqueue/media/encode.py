"""Frames to MP4 (H.264, yuv420p, +faststart), reading a video back, and JPEG thumbnails.

Frames are numpy arrays. The fast path takes them already in yuv420p planar layout, one array of shape
``(height * 3 // 2, width)``: the Y plane, then U and V (each a quarter of Y) stacked below it, which is
exactly what ``av.VideoFrame.from_ndarray(..., format="yuv420p")`` reads, so the encoder gets them without a
colour conversion per frame. RGB frames ``(height, width, 3)`` are accepted too and converted by swscale.
Colours follow BT.709 with limited ("TV") range, and the stream is tagged so, which is what players assume
for HD video.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
from PIL import Image

from vidqueue.errors import JobFailed
from vidqueue.media.types import VideoInfo

PixelFormat = Literal["yuv420p", "rgb24"]

# FFmpeg's AVColorSpace / AVColorPrimaries / AVColorTransferCharacteristic / AVColorRange values.
_BT709 = 1
_RANGE_MPEG = 1

# BT.709 luma weights; the limited range puts Y in 16..235 and U, V in 16..240.
_KR, _KB = 0.2126, 0.0722
_KG = 1.0 - _KR - _KB


def yuv420_shape(width: int, height: int) -> tuple[int, int]:
    """The array shape of one yuv420p frame of this size."""
    return (height * 3 // 2, width)


def rgb_to_yuv420(rgb: np.ndarray) -> np.ndarray:
    """Convert an RGB uint8 image (h, w, 3) with even sides to one yuv420p array (BT.709, limited range)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (h, w, 3) RGB array, got shape {rgb.shape}")
    height, width = _check_even(rgb.shape[0], rgb.shape[1])
    weights = np.array([_KR, _KG, _KB], np.float32) / 255.0
    f = rgb.astype(np.float32)
    y = f @ weights
    # Chroma is taken from the mean of each 2x2 block, as 4:2:0 subsampling does; the maths is linear, so
    # averaging RGB first gives the same result for a quarter of the work.
    half = (f[0::2, 0::2] + f[1::2, 0::2] + f[0::2, 1::2] + f[1::2, 1::2]) * 0.25
    y_half = half @ weights
    cb = (half[..., 2] / 255.0 - y_half) / (2.0 * (1.0 - _KB))
    cr = (half[..., 0] / 255.0 - y_half) / (2.0 * (1.0 - _KR))
    out = np.empty(yuv420_shape(width, height), dtype=np.uint8)
    y_plane, u_plane, v_plane = yuv420_planes(out)
    y_plane[...] = np.clip(np.rint(16.0 + 219.0 * y), 0, 255)
    u_plane[...] = np.clip(np.rint(128.0 + 224.0 * cb), 0, 255)
    v_plane[...] = np.clip(np.rint(128.0 + 224.0 * cr), 0, 255)
    return out


def yuv420_planes(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Writable views of the Y (h, w), U (h/2, w/2) and V (h/2, w/2) planes of one contiguous yuv420p array."""
    if not frame.flags.c_contiguous:
        raise ValueError("a yuv420p frame must be a C-contiguous array")
    rows, width = frame.shape
    height = rows * 2 // 3
    # The chroma planes are packed back to back after Y, not row-aligned, hence the flat view.
    flat = frame.reshape(-1)
    luma = width * height
    chroma = luma // 4
    y = flat[:luma].reshape(height, width)
    u = flat[luma : luma + chroma].reshape(height // 2, width // 2)
    v = flat[luma + chroma :].reshape(height // 2, width // 2)
    return y, u, v


def encode_mp4(
    frames: Iterable[np.ndarray],
    *,
    width: int,
    height: int,
    fps: int,
    path: Path,
    pixel_format: PixelFormat = "yuv420p",
    preset: str = "veryfast",
    crf: int = 23,
    threads: int = 0,
    keyframe_interval_s: float = 2.0,
) -> VideoInfo:
    """Encode frames into an H.264 MP4 at ``path`` (one frame per given array) and describe the result.

    ``threads=0`` lets x264 pick by core count; pass a fixed count for byte-identical output across machines.
    """
    _check_even(height, width)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path.parent.mkdir(parents=True, exist_ok=True)
    expected = yuv420_shape(width, height) if pixel_format == "yuv420p" else (height, width, 3)
    count = 0
    # faststart moves the index (moov) before the media data in a second pass, so a browser can start
    # playing before the whole file has arrived; it needs a real file, not a buffer.
    with (
        removed_on_failure(path),
        av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container,
    ):
        stream = container.add_stream(
            "libx264",
            rate=fps,
            options={
                "preset": preset,
                "crf": str(crf),
                "g": str(max(1, round(fps * keyframe_interval_s))),
                # x264's macroblock-tree rate control reads memory it has not written on some CPUs (seen
                # with AVX-512), so the same frames could give different bytes from run to run; without it
                # the output is byte-identical, at a few percent of bitrate.
                "x264-params": "mbtree=0",
            },
        )
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        ctx = stream.codec_context
        ctx.thread_count = threads
        ctx.time_base = Fraction(1, fps)
        ctx.colorspace = _BT709
        ctx.color_primaries = _BT709
        ctx.color_trc = _BT709
        ctx.color_range = _RANGE_MPEG
        # yuv420p arrays are copied into one frame reused for every picture: x264 copies its input before
        # encode() returns, and a fresh frame each time costs an allocation and page faults (a third of a
        # millisecond at 720p) for nothing.
        slot = _yuv420_slot(width, height) if pixel_format == "yuv420p" else None
        for array in frames:
            if array.shape != expected or array.dtype != np.uint8:
                raise ValueError(
                    f"frame {count}: expected a uint8 array of shape {expected}, got {array.dtype} {array.shape}"
                )
            if slot is not None:
                frame, planes = slot
                for plane, source in zip(planes, yuv420_planes(np.ascontiguousarray(array)), strict=True):
                    plane[...] = source
            else:
                frame = _to_video_frame(array, pixel_format, threads)
            frame.pts = count
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
            count += 1
        for packet in stream.encode(None):
            container.mux(packet)
    return written(path, count, fps=fps, width=width, height=height)


def probe(path: Path) -> VideoInfo:
    """Decode the first video stream of ``path`` and report what it really holds."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise JobFailed(f"{path.name} has no video stream", code="engine_error")
            stream = container.streams.video[0]
            frames = sum(1 for _ in container.decode(stream))
            ctx = stream.codec_context
            rate = stream.average_rate or stream.guessed_rate
            fps = round(float(rate)) if rate else 0
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif fps:
                duration = frames / fps
            else:
                duration = float(container.duration or 0) / av.time_base
            return VideoInfo(
                duration=round(duration, 3),
                width=int(ctx.width),
                height=int(ctx.height),
                fps=fps,
                frames=frames,
                codec=str(ctx.name),
                bytes=path.stat().st_size,
            )
    except av.FFmpegError as exc:
        raise JobFailed(f"{path.name} is not a readable video: {exc}", code="engine_error") from exc


def write_thumbnail(
    video: Path,
    path: Path,
    *,
    position: float = 1 / 3,
    max_side: int = 640,
    quality: int = 85,
) -> Path:
    """Write a JPEG of the frame at ``position`` (a fraction of the duration) of ``video``, long side ≤ max_side."""
    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            target = None
            if stream.duration is not None and stream.time_base is not None:
                target = float(stream.duration * stream.time_base) * position
            chosen: Any = None  # PyAV's to_image() is untyped
            for frame in container.decode(stream):
                chosen = frame
                if target is None or frame.time is None or frame.time >= target:
                    break
            if chosen is None:
                raise JobFailed(f"{video.name} has no frames", code="engine_error")
            image = chosen.to_image()
    except (av.FFmpegError, IndexError) as exc:
        raise JobFailed(f"{video.name} is not a readable video: {exc}", code="engine_error") from exc
    return save_jpeg_thumbnail(image, path, max_side=max_side, quality=quality)


def write_frame_thumbnail(
    frame: np.ndarray,
    path: Path,
    *,
    pixel_format: PixelFormat = "yuv420p",
    max_side: int = 640,
    quality: int = 85,
) -> Path:
    """Write a JPEG of one in-memory frame (yuv420p or rgb24 array), long side ≤ max_side."""
    if pixel_format == "yuv420p":
        height, width = frame.shape[0] * 2 // 3, frame.shape[1]
        scale = min(1.0, max_side / max(width, height))
        # One swscale pass converts to RGB and scales down by area averaging: a seventh of the time of a full-size
        # RGB picture and a Lanczos resize.
        image = (
            _to_video_frame(frame, pixel_format, 1)
            .reformat(
                width=max(1, round(width * scale)),
                height=max(1, round(height * scale)),
                format="rgb24",
                interpolation="AREA",
                threads=1,
            )
            .to_image()
        )
    else:
        image = Image.fromarray(np.ascontiguousarray(frame))
    return save_jpeg_thumbnail(image, path, max_side=max_side, quality=quality)


def save_jpeg_thumbnail(image: Image.Image, path: Path, *, max_side: int = 640, quality: int = 85) -> Path:
    """Save ``image`` as a JPEG at ``path``, scaled down so its long side is at most ``max_side``."""
    image = image.convert("RGB")
    if max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=quality, optimize=True)
    return path


def iter_decoded_rgb(video: Path) -> Iterator[np.ndarray]:
    """Yield the frames of ``video`` as RGB arrays (h, w, 3); for checks and tests."""
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def _yuv420_slot(width: int, height: int) -> tuple[Any, tuple[np.ndarray, ...]]:
    """A yuv420p frame tagged BT.709 limited range, and writable numpy views of its three planes."""
    frame: Any = av.VideoFrame(width, height, "yuv420p")
    frame.colorspace = _BT709
    frame.color_range = _RANGE_MPEG
    views = []
    for plane, (w, h) in zip(
        frame.planes, ((width, height), (width // 2, height // 2), (width // 2, height // 2)), strict=True
    ):
        # Rows may be padded for alignment: view the buffer by its line size, then keep the picture's columns.
        views.append(np.frombuffer(plane, np.uint8).reshape(h, plane.line_size)[:, :w])
    return frame, tuple(views)


def _to_video_frame(array: np.ndarray, pixel_format: PixelFormat, threads: int) -> Any:
    if pixel_format == "yuv420p":
        frame = av.VideoFrame.from_ndarray(array, format="yuv420p")
    else:
        rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
        frame = av.video.reformatter.VideoReformatter().reformat(
            rgb,
            format="yuv420p",
            dst_colorspace=_BT709,
            dst_color_range=_RANGE_MPEG,
            threads=threads,
        )
    # Tag the frame the way its pixels were made so swscale / players never reinterpret them.
    frame.colorspace = _BT709
    frame.color_range = _RANGE_MPEG
    return frame


def _check_even(height: int, width: int) -> tuple[int, int]:
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise ValueError(f"width and height must be positive and even for yuv420p, got {width}x{height}")
    return height, width


@contextlib.contextmanager
def removed_on_failure(path: Path) -> Iterator[None]:
    """Writing ``path``: on any failure the half-written file is removed, and an FFmpeg error becomes JobFailed."""
    try:
        yield
    except BaseException as exc:
        with contextlib.suppress(OSError):
            path.unlink()
        if isinstance(exc, av.FFmpegError):
            raise JobFailed(f"Video encoding failed: {exc}", code="engine_error") from exc
        raise


def written(path: Path, count: int, *, fps: int, width: int, height: int) -> VideoInfo:
    """The VideoInfo of an H.264 MP4 just written with ``count`` frames; a file with none is removed and refused."""
    if count == 0:
        with contextlib.suppress(OSError):
            path.unlink()
        raise ValueError("no frames to encode")
    return VideoInfo(
        duration=round(count / fps, 3),
        width=width,
        height=height,
        fps=fps,
        frames=count,
        codec="h264",
        bytes=path.stat().st_size,
    )
