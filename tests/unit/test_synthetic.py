"""Synthetic frames: a text clip's frame drawn as an update of the one before equals the frame drawn whole."""

from __future__ import annotations

import numpy as np
import pytest

from vidqueue.media.encode import yuv420_shape
from vidqueue.media.synthetic import SyntheticClip


@pytest.mark.parametrize(("width", "height"), [(1280, 720), (720, 1280), (720, 720), (320, 192)])
@pytest.mark.parametrize("caption", ["a red fox", "word " * 200])
def test_an_updated_frame_equals_the_frame_drawn_whole(width: int, height: int, caption: str) -> None:
    clip = SyntheticClip(width=width, height=height, frames=120, fps=24, seed=11, caption=caption, sublabel="m")
    frame = np.empty(yuv420_shape(width, height), np.uint8)
    for index in range(120):
        clip.update(index, frame)
        assert np.array_equal(frame, clip.render(index)), f"frame {index}"


def test_an_update_reports_every_changed_pixel() -> None:
    clip = SyntheticClip(width=1280, height=720, frames=120, fps=24, seed=5, caption="a red fox", sublabel="m")
    frame = clip.render(0)
    for index in range(1, 120):
        before = frame.copy()
        damage = clip.update(index, frame)
        assert damage is not None
        covered = np.zeros((720, 1280), bool)
        for area in damage:
            covered[area.y0 : area.y1, area.x0 : area.x1] = True
        luma_changed = frame[:720] != before[:720]
        assert not (luma_changed & ~covered).any(), f"frame {index}"
        assert luma_changed.any()


def test_an_image_clip_reports_no_damage_because_everything_changes() -> None:
    from PIL import Image

    image = Image.new("RGB", (320, 192), (200, 40, 40))
    clip = SyntheticClip(width=320, height=192, frames=24, fps=24, seed=1, caption="x", image=image)
    assert not clip.incremental
    frame = np.empty(yuv420_shape(320, 192), np.uint8)
    assert clip.update(0, frame) is None
    assert clip.update(1, frame) is None
