"""Cheap, deterministic synthetic video frames: a banded backdrop with sliding shapes, or a slow zoom into an
image, under a caption, a label, a timecode and a progress stripe.

Frames are built straight in yuv420p (see ``media.encode``) so no encoder needs a colour conversion. Everything
costly is done once in ``SyntheticClip.__init__`` (or once per process, for pieces that depend only on the
frame size and the text: the label, the caption, the timecode glyphs), and every piece of text is rendered once
into a premultiplied overlay. A text clip's frame is then an update of the one before: a few small copies where
the shapes, the timecode and the stripe moved, reported as damage for ``media.h264``.
"""

from __future__ import annotations

import colorsys
import functools
import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vidqueue.media.encode import rgb_to_yuv420, yuv420_planes, yuv420_shape
from vidqueue.media.h264 import Damage

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
RGB = tuple[int, int, int]

_TIMECODE_CHARS = "0123456789:."
_TIMECODE_LENGTH = len("00:00.00")


@functools.lru_cache(maxsize=16)
def font(size: int) -> Font:
    """Pillow's built-in scalable font at ``size`` px (no font file to ship or find)."""
    return ImageFont.load_default(size=size)


@dataclass(frozen=True)
class Overlay:
    """An RGBA picture prepared for fast blending onto yuv420p frames (alpha in 0..256, colour premultiplied)."""

    width: int
    height: int
    inv_y: np.ndarray  # 256 - alpha, uint16 (h, w)
    pre_y: np.ndarray  # Y * alpha, uint16 (h, w)
    inv_c: np.ndarray  # for the half-size chroma planes (h/2, w/2)
    pre_u: np.ndarray
    pre_v: np.ndarray

    @classmethod
    def from_rgba(cls, rgba: np.ndarray) -> Overlay:
        """Prepare an (h, w, 4) uint8 RGBA array with even sides."""
        height, width = rgba.shape[:2]
        if height % 2 or width % 2:
            raise ValueError(f"overlay sides must be even, got {width}x{height}")
        yuv = rgb_to_yuv420(np.ascontiguousarray(rgba[..., :3]))
        y, u, v = yuv420_planes(yuv)
        alpha = rgba[..., 3].astype(np.uint32)
        a_y = (alpha * 256 + 127) // 255
        a_c = a_y.reshape(height // 2, 2, width // 2, 2).sum(axis=(1, 3)) // 4
        arrays = [(256 - a_y), (y * a_y), (256 - a_c), (u * a_c), (v * a_c)]
        inv_y, pre_y, inv_c, pre_u, pre_v = (a.astype(np.uint16) for a in arrays)
        for array in (inv_y, pre_y, inv_c, pre_u, pre_v):
            array.flags.writeable = False  # overlays are cached and shared between clips
        return cls(width, height, inv_y, pre_y, inv_c, pre_u, pre_v)

    def apply(self, frame: np.ndarray, x: int, y: int) -> None:
        """Blend onto a yuv420p frame in place with the top-left corner at (x, y), both even and in bounds."""
        planes = yuv420_planes(frame)
        pairs = (
            (planes[0][y : y + self.height, x : x + self.width], self.inv_y, self.pre_y),
            (planes[1][y // 2 : (y + self.height) // 2, x // 2 : (x + self.width) // 2], self.inv_c, self.pre_u),
            (planes[2][y // 2 : (y + self.height) // 2, x // 2 : (x + self.width) // 2], self.inv_c, self.pre_v),
        )
        for region, inv, pre in pairs:
            # bg*(256-a) + fg*a stays within 255*256, so uint16 holds it.
            mixed = region * inv
            mixed += pre
            mixed >>= 8
            region[...] = mixed


@dataclass(frozen=True)
class ClipStyle:
    """Colours and motion picked from the seed."""

    colours: tuple[RGB, RGB, RGB]
    accent: RGB
    phase: float
    bands: float  # soft horizontal bands over the backdrop, per frame height
    shapes: tuple[tuple[RGB, float, int], ...]  # colour, phase (of a return trip), pixels a frame (4, 8 or 16)
    zoom_to: tuple[float, float]  # where the image zoom drifts to (fractions of the frame)

    @classmethod
    def from_seed(cls, seed: int) -> ClipStyle:
        """A palette and motion derived from ``seed`` only."""
        rnd = random.Random(seed)
        hue = rnd.random()

        def colour(h: float, s: float, v: float) -> RGB:
            r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
            return (round(r * 255), round(g * 255), round(b * 255))

        spread = rnd.uniform(0.12, 0.35)
        shapes = tuple(
            (
                colour(hue + 0.5 + rnd.uniform(-0.15, 0.15), 0.55, 0.95),
                rnd.random(),
                rnd.choice((4, 8, 16)),
            )
            for _ in range(3)
        )
        return cls(
            colours=(
                colour(hue, 0.75, 0.55),
                colour(hue + spread, 0.65, 0.80),
                colour(hue - spread, 0.55, 0.35),
            ),
            accent=colour(hue + 0.5, 0.7, 0.95),
            phase=rnd.uniform(0, 2 * math.pi),
            bands=rnd.uniform(1.5, 3.5),
            shapes=shapes,
            zoom_to=(rnd.uniform(0.3, 0.7), rnd.uniform(0.3, 0.7)),
        )


@dataclass(frozen=True)
class _Sprite:
    """A prerendered square that slides along one band of rows, its pixels already blended onto the backdrop."""

    top: int
    size: int
    phase: float
    step: int
    planes: tuple[np.ndarray, np.ndarray, np.ndarray]


class SyntheticClip:
    """Renders frame ``i`` of a clip as one yuv420p array, whole or as an update of frame ``i - 1``.

    Without an image the backdrop is rows of flat colour (a gradient with soft bands) under a label, a caption, a
    timecode, a progress stripe and shapes that slide sideways: nothing moves but those, and what moves moves
    by whole pixels, which ``update`` reports so the exact encoder (``media.h264``) codes a frame in the
    macroblocks that changed. With an image, the camera zooms slowly into it and every pixel changes.
    """

    def __init__(
        self,
        *,
        width: int,
        height: int,
        frames: int,
        fps: int,
        seed: int,
        caption: str,
        label: str = "EMULATED",
        sublabel: str = "",
        image: Image.Image | None = None,
        zoom: float = 0.12,
    ) -> None:
        if width % 2 or height % 2 or width < 64 or height < 64:
            raise ValueError(f"frame sides must be even and at least 64, got {width}x{height}")
        self.width = width
        self.height = height
        self.frames = frames
        self.fps = fps
        self.style = ClipStyle.from_seed(seed)
        self._zoom = zoom
        short = min(width, height)
        # Text clips keep their pieces on the 16-pixel macroblock grid where the frame is large enough, so a
        # change touches few macroblocks.
        self._margin = _even(short * 0.04)
        if image is None and short * 0.04 >= 8:
            self._margin = 16 * round(short * 0.04 / 16)
        self._bar_h = _even(max(4, short * 0.008))
        self._caption = caption_overlay(caption, width - 2 * self._margin, short)
        self._label = label_overlay(label, sublabel, short)
        self._timecode = timecode_font(_even(short * 0.035))
        self._accent_yuv = _rgb_to_yuv_triplet(self.style.accent)
        self._image_planes: tuple[Image.Image, Image.Image, Image.Image] | None = None
        self._first: np.ndarray | None = None
        self._sprites: list[_Sprite] = []
        if image is not None:
            self._prepare_image(image)
        else:
            self._base = self._prepare_backdrop()
            self._base_planes = yuv420_planes(self._base)
            self._glyphs: dict[tuple[int, str], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    @property
    def incremental(self) -> bool:
        """Whether ``update`` reports what changed (text clips); image clips change everywhere."""
        return self._image_planes is None

    def render(self, index: int, out: np.ndarray | None = None) -> np.ndarray:
        """Frame ``index`` (0-based) as a yuv420p array; written into ``out`` when given."""
        frame = np.empty(yuv420_shape(self.width, self.height), np.uint8) if out is None else out
        if self._image_planes is not None:
            if self._first is not None and index == 0:
                # With an input image the first frame is that image, untouched.
                frame[...] = self._first
                return frame
            self._zoomed(index / max(1, self.frames - 1), frame)
            self._decorate(index, frame)
            return frame
        frame[...] = self._base
        planes = yuv420_planes(frame)
        for sprite in self._sprites:
            _put(planes, self._sprite_x(sprite, index), sprite.top, sprite.planes)
        for position, char in enumerate(self._stamp(index)):
            self._put_glyph(planes, position, char)
        self._fill_bar(planes, 0, self._filled(index))
        return frame

    def update(self, index: int, frame: np.ndarray) -> list[Damage] | None:
        """Turn ``frame``, holding frame ``index - 1``, into frame ``index``; what changed, or None for all of it."""
        if index == 0 or not self.incremental:
            self.render(index, frame)
            return None
        damage: list[Damage] = []
        planes = yuv420_planes(frame)
        for sprite in self._sprites:
            old, new = self._sprite_x(sprite, index - 1), self._sprite_x(sprite, index)
            if old == new:
                continue
            top, size = sprite.top, sprite.size
            _put(planes, old, top, _cut(self._base_planes, old, top, size, size))
            _put(planes, new, top, sprite.planes)
            # Only the two edges change, each in one column of macroblocks: where the square left and where
            # it arrived, both its old picture moved by the step.
            lo, hi = min(old, new), max(old, new)
            damage.append(Damage(lo, top, hi, top + size, new - old, 0))
            damage.append(Damage(lo + size, top, hi + size, top + size, new - old, 0))
        before, after = self._stamp(index - 1), self._stamp(index)
        changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
        for position in changed:
            self._put_glyph(planes, position, after[position])
        if changed:
            cell, top = self._timecode.cell, self._margin
            left = self.width - self._margin - cell * len(after)
            damage.append(
                Damage(left + cell * changed[0], top, left + cell * (changed[-1] + 1), top + self._timecode.height)
            )
        old_fill, new_fill = self._filled(index - 1), self._filled(index)
        if new_fill != old_fill:
            self._fill_bar(planes, old_fill, new_fill)
            # The stripe grows: its new end is its old end moved right.
            damage.append(Damage(old_fill, self.height - self._bar_h, new_fill, self.height, new_fill - old_fill, 0))
        return damage

    def _put_glyph(self, planes: tuple[np.ndarray, np.ndarray, np.ndarray], position: int, char: str) -> None:
        """Draw one timecode character, from a cache of it blended onto the backdrop at that position."""
        cell, top = self._timecode.cell, self._margin
        x = self.width - self._margin - cell * (_TIMECODE_LENGTH - position)
        patch = self._glyphs.get((position, char))
        if patch is None:
            box = np.empty(yuv420_shape(cell, self._timecode.height), np.uint8)
            _put(yuv420_planes(box), 0, 0, _cut(self._base_planes, x, top, cell, self._timecode.height))
            self._timecode.glyphs[char].apply(box, 0, 0)
            patch = self._glyphs[(position, char)] = yuv420_planes(box)
        _put(planes, x, top, patch)

    def _stamp(self, index: int) -> str:
        seconds = index / self.fps
        return f"{int(seconds // 60):02d}:{seconds % 60:05.2f}"

    def _filled(self, index: int) -> int:
        return _even(self.width * (index + 1) / self.frames)

    def _fill_bar(self, planes: tuple[np.ndarray, np.ndarray, np.ndarray], start: int, end: int) -> None:
        y, u, v = planes
        top = self.height - self._bar_h
        ay, au, av_ = self._accent_yuv
        y[top:, start:end] = ay
        u[top // 2 :, start // 2 : end // 2] = au
        v[top // 2 :, start // 2 : end // 2] = av_

    # --- backdrop and sliding shapes (text to video) ---

    def _prepare_backdrop(self) -> np.ndarray:
        h, w = self.height, self.width
        # Every row is one colour: a gradient with soft bands. Rows that do not change along x are what make
        # the picture cheap to code and let shapes slide sideways without uncovering anything new.
        t = (np.arange(h, dtype=np.float32) + 0.5) / h
        c1, c2, c3 = (np.array(c, np.float32) for c in self.style.colours)
        bands = 0.5 + 0.5 * np.sin(2 * math.pi * self.style.bands * t + self.style.phase)
        rgb = c1 * (1 - t[:, None]) + c2 * t[:, None]
        rgb = rgb * (1 - 0.45 * bands[:, None]) + c3 * (0.45 * bands[:, None])
        column = np.repeat(np.clip(np.rint(rgb), 0, 255).astype(np.uint8)[:, None, :], 2, axis=1)
        col_y, col_u, col_v = yuv420_planes(rgb_to_yuv420(column))
        base = np.empty(yuv420_shape(w, h), np.uint8)
        y, u, v = yuv420_planes(base)
        y[...] = col_y[:, :1]
        u[...] = col_u[:, :1]
        v[...] = col_v[:, :1]
        y[h - self._bar_h :, :] = 16  # the empty progress stripe
        m = self._margin
        self._label.apply(base, m, m)
        caption_top = h - self._bar_h - m - self._caption.height
        self._caption.apply(base, m, caption_top)
        # The shapes slide in bands of whole macroblock rows between the top pieces and the caption.
        top_free = _align_up(m + max(self._label.height, self._timecode.height) + m // 2, 16)
        bottom_free = (caption_top - m // 2) // 16 * 16
        room = bottom_free - top_free
        short = min(w, h)
        size = min(16 * max(1, round(short * 0.11 / 16)), room // 16 * 16, (w - 2 * m) // 2 // 16 * 16)
        if size < 16:
            return base
        count = min(len(self.style.shapes), (room + 16) // (size + 16))
        spacing = (room - size) / max(1, count - 1) if count > 1 else 0.0
        for k, (colour, phase, step) in enumerate(self.style.shapes[:count]):
            top = top_free + (16 * round(k * spacing / 16) if count > 1 else (room - size) // 32 * 16)
            patch = np.empty(yuv420_shape(size, size), np.uint8)
            py, pu, pv = yuv420_planes(patch)
            py[...] = y[top : top + size, :1]
            pu[...] = u[top // 2 : (top + size) // 2, :1]
            pv[...] = v[top // 2 : (top + size) // 2, :1]
            # A plain square: its edges are the only pixels that change as it slides, one macroblock column each.
            Overlay.from_rgba(np.full((size, size, 4), (*colour, 190), np.uint8)).apply(patch, 0, 0)
            self._sprites.append(_Sprite(top, size, phase, step, (py.copy(), pu.copy(), pv.copy())))
        return base

    def _sprite_x(self, sprite: _Sprite, index: int) -> int:
        # Whole steps along the track and back: each frame moves the square by exactly one step from a position
        # on that step, which (margins and sizes being multiples of 16) keeps each moving edge inside one column
        # of macroblocks.
        stops = (self.width - 2 * self._margin - sprite.size) // sprite.step
        at = (round(sprite.phase * 2 * stops) + index) % (2 * stops) if stops else 0
        return self._margin + sprite.step * (at if at <= stops else 2 * stops - at)

    # --- slow zoom into an image (image to video) ---

    def _prepare_image(self, image: Image.Image) -> None:
        rgb = image.convert("RGB")
        if rgb.size != (self.width, self.height):
            rgb = rgb.resize((self.width, self.height), Image.Resampling.LANCZOS)
        first = rgb_to_yuv420(np.asarray(rgb))
        self._first = first
        y, u, v = yuv420_planes(first)
        self._image_planes = (Image.fromarray(y.copy()), Image.fromarray(u.copy()), Image.fromarray(v.copy()))

    def _zoomed(self, t: float, frame: np.ndarray) -> None:
        assert self._image_planes is not None
        ease = t * t * (3 - 2 * t)  # smoothstep: the camera starts and stops gently
        scale = 1.0 + self._zoom * ease
        w, h = self.width / scale, self.height / scale
        fx, fy = self.style.zoom_to
        # The crop drifts from the centre towards a seeded point, staying inside the image.
        cx = self.width / 2 + (fx - 0.5) * (self.width - w) * ease
        cy = self.height / 2 + (fy - 0.5) * (self.height - h) * ease
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        half_box = (box[0] / 2, box[1] / 2, box[2] / 2, box[3] / 2)
        for plane, src, size, b in zip(
            yuv420_planes(frame),
            self._image_planes,
            ((self.width, self.height), (self.width // 2, self.height // 2), (self.width // 2, self.height // 2)),
            (box, half_box, half_box),
            strict=True,
        ):
            plane[...] = np.asarray(src.resize(size, Image.Resampling.BILINEAR, box=b))

    def _decorate(self, index: int, frame: np.ndarray) -> None:
        m = self._margin
        self._label.apply(frame, m, m)
        bottom = self.height - self._bar_h - m
        self._caption.apply(frame, m, bottom - self._caption.height)
        self._timecode.draw(frame, self._stamp(index), right=self.width - m, top=m)
        planes = yuv420_planes(frame)
        planes[0][self.height - self._bar_h :, :] = 16
        self._fill_bar(planes, 0, self._filled(index))


class TimecodeFont:
    """Glyph overlays for the timecode, rendered once, white on a dark box."""

    def __init__(self, size: int) -> None:
        f = font(size)
        cell = _even(max(f.getlength(c) for c in _TIMECODE_CHARS) + 2)
        self.cell = cell
        self.height = _even(size * 1.3)
        self.glyphs: dict[str, Overlay] = {}
        for char in _TIMECODE_CHARS:
            img = Image.new("RGBA", (cell, self.height), (0, 0, 0, 150))
            draw = ImageDraw.Draw(img)
            draw.text((cell / 2, self.height / 2), char, font=f, fill=(255, 255, 255, 255), anchor="mm")
            self.glyphs[char] = Overlay.from_rgba(np.asarray(img))

    def draw(self, frame: np.ndarray, text: str, *, right: int, top: int) -> None:
        x = right - self.cell * len(text)
        for char in text:
            self.glyphs[char].apply(frame, x, top)
            x += self.cell


@functools.lru_cache(maxsize=8)
def timecode_font(size: int) -> TimecodeFont:
    """The timecode glyphs at ``size`` px, built once per process."""
    return TimecodeFont(size)


@functools.lru_cache(maxsize=64)
def caption_overlay(text: str, max_width: int, short_side: int) -> Overlay:
    """The caption box for ``text``; the same prompt at the same size is rendered once per process."""
    size = max(12, round(short_side * 0.042))
    f = font(size)
    pad = _even(size * 0.5)
    lines = wrap_text(" ".join(text.split()), f, max_width - 2 * pad, max_lines=3)
    line_h = round(size * 1.25)
    width = _even(max_width)
    height = _even(2 * pad + line_h * max(1, len(lines)))
    img = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    draw.rounded_rectangle((0, 0, width - 1, height - 1), radius=pad, fill=(0, 0, 0, 140))
    for i, line in enumerate(lines):
        draw.text((pad, pad + i * line_h), line, font=f, fill=(255, 255, 255, 255))
    return Overlay.from_rgba(np.asarray(img))


@functools.lru_cache(maxsize=32)
def label_overlay(label: str, sublabel: str, short_side: int) -> Overlay:
    """The label box (the "EMULATED" badge with the model under it), built once per process for each model."""
    size = max(12, round(short_side * 0.04))
    small = max(10, round(size * 0.55))
    f, fs = font(size), font(small)
    pad = _even(size * 0.4)
    width = _even(max(f.getlength(label), fs.getlength(sublabel) if sublabel else 0) + 2 * pad)
    height = _even(2 * pad + size * 1.1 + (small * 1.3 if sublabel else 0))
    img = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    draw.rounded_rectangle((0, 0, width - 1, height - 1), radius=pad, fill=(200, 30, 40, 215))
    draw.text((pad, pad), label, font=f, fill=(255, 255, 255, 255))
    if sublabel:
        draw.text((pad, pad + size * 1.15), sublabel, font=fs, fill=(255, 235, 235, 255))
    return Overlay.from_rgba(np.asarray(img))


def wrap_text(text: str, f: Font, max_width: float, *, max_lines: int) -> list[str]:
    """Greedy word wrap by rendered width; long words break anywhere; overflow ends with an ellipsis."""
    if not text:
        return []
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if f.getlength(candidate) <= max_width:
            current = candidate
            continue
        if current:
            lines.append(current)
            current = ""
        # A word wider than the line (a URL, or a language without spaces) is split by characters.
        for char in word:
            if f.getlength(current + char) > max_width and current:
                lines.append(current)
                current = ""
            current += char
        if len(lines) > max_lines:
            break
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and f.getlength(last + "…") > max_width:
            last = last[:-1]
        lines = [*lines[: max_lines - 1], last.rstrip() + "…"]
    return lines


def _put(
    planes: tuple[np.ndarray, np.ndarray, np.ndarray],
    x: int,
    y: int,
    patch: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """Copy a yuv420p patch (its three planes) into a frame's planes with its top-left corner at even (x, y)."""
    height, width = patch[0].shape
    planes[0][y : y + height, x : x + width] = patch[0]
    rows, cols = slice(y // 2, (y + height) // 2), slice(x // 2, (x + width) // 2)
    planes[1][rows, cols] = patch[1]
    planes[2][rows, cols] = patch[2]


def _cut(
    planes: tuple[np.ndarray, np.ndarray, np.ndarray], x: int, y: int, width: int, height: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the three planes of a frame's region at even (x, y), sides even."""
    rows, cols = slice(y // 2, (y + height) // 2), slice(x // 2, (x + width) // 2)
    return planes[0][y : y + height, x : x + width], planes[1][rows, cols], planes[2][rows, cols]


def _rgb_to_yuv_triplet(colour: RGB) -> tuple[int, int, int]:
    y, u, v = yuv420_planes(rgb_to_yuv420(np.full((2, 2, 3), colour, np.uint8)))
    return int(y[0, 0]), int(u[0, 0]), int(v[0, 0])


def _even(value: float) -> int:
    n = round(value)
    return int(n) - (int(n) % 2)


def _align_up(value: int, step: int) -> int:
    return -(-value // step) * step
