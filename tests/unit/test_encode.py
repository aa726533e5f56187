"""Frames to MP4 and back: what the encoder writes is what a decoder reads."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from vidqueue.errors import JobFailed
from vidqueue.media.encode import (
    encode_mp4,
    iter_decoded_rgb,
    probe,
    rgb_to_yuv420,
    write_frame_thumbnail,
    write_thumbnail,
    yuv420_planes,
    yuv420_shape,
)

W, H, FPS = 320, 180, 24


def moving_frames(count: int, width: int = W, height: int = H) -> list[np.ndarray]:
    """yuv420p frames with a bright bar that moves, so every frame differs."""
    frames = []
    for i in range(count):
        frame = np.full(yuv420_shape(width, height), 128, np.uint8)
        y, _, _ = yuv420_planes(frame)
        y[...] = 40
        x = (i * 8) % (width - 16)
        y[:, x : x + 16] = 220
        frames.append(frame)
    return frames


def top_level_boxes(data: bytes) -> list[str]:
    """The types of an MP4 file's top-level boxes, in order."""
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:  # 64-bit size follows the type
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        boxes.append(kind.decode("latin-1"))
        if size == 0:
            break
        offset += size
    return boxes


def test_encoded_video_decodes_to_the_same_frame_count_size_and_fps(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    info = encode_mp4(moving_frames(48), width=W, height=H, fps=FPS, path=path)
    probed = probe(path)
    assert probed == info
    assert (probed.frames, probed.width, probed.height, probed.fps) == (48, W, H, FPS)
    assert probed.duration == pytest.approx(2.0)
    assert probed.bytes == path.stat().st_size


def test_encoded_stream_is_h264_in_yuv420p(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    encode_mp4(moving_frames(10), width=W, height=H, fps=FPS, path=path)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert container.format.name.startswith("mov,mp4")


def test_index_comes_before_media_data_for_fast_start(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    encode_mp4(moving_frames(24), width=W, height=H, fps=FPS, path=path)
    boxes = top_level_boxes(path.read_bytes())
    assert "moov" in boxes and "mdat" in boxes
    assert boxes.index("moov") < boxes.index("mdat")


def churn_memory() -> None:
    """Allocate and free frame-sized buffers full of noise, as other work in the process would."""
    junk = []
    for _ in range(100):
        frame = av.VideoFrame(640, 480, "yuv420p")
        for plane in frame.planes:
            plane.update(os.urandom(plane.buffer_size))
        junk.append(frame)
    del junk


@pytest.mark.parametrize("preset", ["veryfast", "medium"])
def test_encoding_the_same_frames_again_gives_identical_bytes(tmp_path: Path, preset: str) -> None:
    # Deliberately not the first encode in the process, and with freed noise around: an encoder that reads
    # uninitialised memory shows it here.
    frames = moving_frames(30)
    outputs = []
    for i in range(3):
        path = tmp_path / f"{i}.mp4"
        encode_mp4(frames, width=W, height=H, fps=FPS, path=path, preset=preset)
        outputs.append(path.read_bytes())
        churn_memory()
    assert outputs[0] == outputs[1] == outputs[2]


def test_rgb_frames_come_back_with_their_colours(tmp_path: Path) -> None:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:, : W // 2] = (200, 40, 40)
    rgb[:, W // 2 :] = (30, 60, 210)
    path = tmp_path / "v.mp4"
    encode_mp4([rgb] * 5, width=W, height=H, fps=FPS, path=path, pixel_format="rgb24")
    first = next(iter_decoded_rgb(path)).astype(int)
    assert np.abs(first[H // 2, W // 4] - (200, 40, 40)).max() <= 6
    assert np.abs(first[H // 2, 3 * W // 4] - (30, 60, 210)).max() <= 6


def test_yuv_conversion_matches_the_decoder_colours(tmp_path: Path) -> None:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[...] = (20, 180, 90)
    path = tmp_path / "v.mp4"
    encode_mp4([rgb_to_yuv420(rgb)] * 3, width=W, height=H, fps=FPS, path=path)
    first = next(iter_decoded_rgb(path)).astype(int)
    assert np.abs(first[H // 2, W // 2] - (20, 180, 90)).max() <= 4


def test_odd_frame_sizes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        encode_mp4(moving_frames(1), width=W + 1, height=H, fps=FPS, path=tmp_path / "v.mp4")


def test_a_frame_of_the_wrong_shape_fails_and_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    frames = [*moving_frames(3), np.zeros((10, 10), np.uint8)]
    with pytest.raises(ValueError, match="frame 3"):
        encode_mp4(frames, width=W, height=H, fps=FPS, path=path)
    assert not path.exists()


def test_no_frames_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    with pytest.raises(ValueError, match="no frames"):
        encode_mp4([], width=W, height=H, fps=FPS, path=path)
    assert not path.exists()


def test_probe_of_a_file_that_is_not_a_video_fails_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "not.mp4"
    path.write_bytes(b"this is not a video")
    with pytest.raises(JobFailed, match="not a readable video"):
        probe(path)


def test_thumbnail_is_a_jpeg_with_its_long_side_at_most_640(tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    encode_mp4(moving_frames(30, 1280, 720), width=1280, height=720, fps=FPS, path=video)
    thumb = write_thumbnail(video, tmp_path / "t.jpg")
    with Image.open(thumb) as image:
        assert image.format == "JPEG"
        assert image.size == (640, 360)


def test_frame_thumbnail_keeps_a_small_frame_at_its_size(tmp_path: Path) -> None:
    thumb = write_frame_thumbnail(moving_frames(1)[0], tmp_path / "t.jpg")
    with Image.open(thumb) as image:
        assert image.format == "JPEG"
        assert image.size == (W, H)
