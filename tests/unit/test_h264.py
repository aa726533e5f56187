"""The exact H.264 writer: its streams decode to exactly the frames it was given, in a form browsers play."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from vidqueue.media.encode import yuv420_planes, yuv420_shape
from vidqueue.media.h264 import Damage, ExactH264Encoder, FrameUpdate, encode_exact_mp4


def decoded_yuv(video: Path) -> list[np.ndarray]:
    with av.open(str(video)) as container:
        return [frame.to_ndarray(format="yuv420p") for frame in container.decode(video=0)]


def banded(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A frame whose rows are each one colour, with a patch of noise."""
    frame = np.empty(yuv420_shape(width, height), np.uint8)
    y, u, v = yuv420_planes(frame)
    y[...] = rng.integers(16, 236, height)[:, None]
    u[...] = rng.integers(16, 241, height // 2)[:, None]
    v[...] = rng.integers(16, 241, height // 2)[:, None]
    y[4:20, 6:30] = rng.integers(16, 236, (16, 24))
    return frame


def moved(frame: np.ndarray, x0: int, y0: int, x1: int, y1: int, dx: int, dy: int) -> np.ndarray:
    """``frame`` with the rectangle's content taken from (dx, dy) up-left of it (edges repeated)."""
    out = frame.copy()
    for plane_out, plane_in, scale in zip(yuv420_planes(out), yuv420_planes(frame), (1, 2, 2), strict=True):
        rows = np.clip(np.arange(y0 // scale, y1 // scale) - dy // scale, 0, plane_in.shape[0] - 1)
        cols = np.clip(np.arange(x0 // scale, x1 // scale) - dx // scale, 0, plane_in.shape[1] - 1)
        plane_out[y0 // scale : y1 // scale, x0 // scale : x1 // scale] = plane_in[np.ix_(rows, cols)]
    return out


def random_clip(seed: int) -> tuple[int, int, list[FrameUpdate], list[np.ndarray]]:
    """Frames with rectangles moving by random even offsets and small new patches, with their damage."""
    rng = np.random.default_rng(seed)
    width, height = 16 * int(rng.integers(2, 10)), 16 * int(rng.integers(2, 8))
    first = banded(width, height, rng) if seed % 3 else rng.integers(16, 236, yuv420_shape(width, height), np.uint8)
    frames, updates = [first], [FrameUpdate(first)]
    for _ in range(8):
        frame, damage = frames[-1], []
        for _ in range(int(rng.integers(0, 4))):
            dx, dy = 2 * int(rng.integers(-9, 10)), 2 * int(rng.integers(-9, 10)) * int(rng.random() < 0.5)
            x0, y0 = 2 * int(rng.integers(0, width // 2)), 2 * int(rng.integers(0, height // 2))
            x1 = min(width, x0 + 2 * int(rng.integers(1, width // 2 + 1)))
            y1 = min(height, y0 + 2 * int(rng.integers(1, height // 2 + 1)))
            frame = moved(frame, x0, y0, x1, y1, dx, dy)
            damage.append(Damage(x0, y0, x1, y1, dx, dy))
        if rng.random() < 0.5:
            frame = frame.copy()
            x, y = int(rng.integers(0, width - 4)), int(rng.integers(0, height - 4))
            yuv420_planes(frame)[0][y : y + 4, x : x + 4] = rng.integers(16, 236, (4, 4))
            damage.append(Damage(x, y, x + 4, y + 4))
        frames.append(frame)
        updates.append(FrameUpdate(frame, damage if rng.random() < 0.8 else None))
    return width, height, updates, frames


@pytest.mark.parametrize("seed", range(40))
def test_decoded_frames_equal_the_given_frames_exactly(tmp_path: Path, seed: int) -> None:
    width, height, updates, frames = random_clip(seed)
    video = tmp_path / "video.mp4"
    info = encode_exact_mp4(updates, width=width, height=height, fps=24, path=video)
    decoded = decoded_yuv(video)
    assert len(decoded) == len(frames) == info.frames
    for index, (got, want) in enumerate(zip(decoded, frames, strict=True)):
        assert np.array_equal(got, want), f"frame {index}"


def test_a_wrong_motion_hint_still_decodes_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    first = banded(64, 48, rng)
    second = moved(first, 0, 0, 64, 48, 6, 0)
    # The hint says the content moved 10 pixels; it moved 6: the writer checks and codes the pixels instead.
    updates = [FrameUpdate(first), FrameUpdate(second, [Damage(0, 0, 64, 48, 10, 0)])]
    video = tmp_path / "video.mp4"
    encode_exact_mp4(updates, width=64, height=48, fps=24, path=video)
    assert all(np.array_equal(a, b) for a, b in zip(decoded_yuv(video), [first, second], strict=True))


def test_the_stream_is_constrained_baseline_yuv420p_bt709_with_the_index_first(tmp_path: Path) -> None:
    frames = [banded(96, 64, np.random.default_rng(i)) for i in range(48)]
    video = tmp_path / "video.mp4"
    info = encode_exact_mp4((FrameUpdate(f) for f in frames), width=96, height=64, fps=24, path=video)
    assert (info.frames, info.duration, info.fps, info.codec) == (48, 2.0, 24, "h264")
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        assert (ctx.name, ctx.profile, ctx.pix_fmt, ctx.width, ctx.height) == (
            "h264",
            "Constrained Baseline",
            "yuv420p",
            96,
            64,
        )
        assert stream.average_rate == 24
        assert float(stream.duration * stream.time_base) == pytest.approx(2.0)
        frame = next(container.decode(stream))
        assert (frame.colorspace, frame.color_range) == (1, 1)  # BT.709, limited range
    data = video.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # +faststart


def test_an_unchanged_frame_costs_a_few_bytes() -> None:
    encoder = ExactH264Encoder(1280, 720, 24)
    frame = banded(1280, 720, np.random.default_rng(1))
    first = encoder.encode(frame)
    assert len(first) < 30_000  # banded rows are predicted, only the noise patch is stored
    assert len(encoder.encode(frame, [])) < 16
    assert len(encoder.encode(frame)) < 16


def test_the_same_frames_give_the_same_bytes(tmp_path: Path) -> None:
    width, height, updates, _ = random_clip(3)
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    encode_exact_mp4(updates, width=width, height=height, fps=24, path=a)
    encode_exact_mp4(updates, width=width, height=height, fps=24, path=b)
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize(("width", "height"), [(1280, 722), (100, 64), (0, 64)])
def test_sizes_that_are_not_whole_macroblocks_are_refused(width: int, height: int) -> None:
    with pytest.raises(ValueError, match="multiples of 16"):
        ExactH264Encoder(width, height, 24)


def test_motion_by_odd_pixels_is_refused() -> None:
    encoder = ExactH264Encoder(64, 64, 24)
    frame = banded(64, 64, np.random.default_rng(0))
    encoder.encode(frame)
    with pytest.raises(ValueError, match="even"):
        encoder.encode(frame, [Damage(0, 0, 16, 16, 3, 0)])


def test_a_failed_write_leaves_no_file(tmp_path: Path) -> None:
    video = tmp_path / "video.mp4"

    def frames() -> list[FrameUpdate]:
        good = banded(64, 64, np.random.default_rng(0))
        return [FrameUpdate(good), FrameUpdate(np.zeros((10, 10), np.uint8))]

    with pytest.raises(ValueError):
        encode_exact_mp4(frames(), width=64, height=64, fps=24, path=video)
    assert not video.exists()
