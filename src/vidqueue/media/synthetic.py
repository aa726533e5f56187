"""Cheap, deterministic synthetic video frames: a moving backdrop or a slow zoom into an image, a caption,
a label, a timecode and a progress bar.

Frames are built straight in yuv420p (see ``media.encode``) so the encoder needs no colour conversion.
Everything costly is done once in ``SyntheticClip.__init__``: the backdrop is a texture larger than the frame
that each frame cuts a moving window from, and every piece of text is rendered once into a premultiplied
overlay, so a frame costs a few array copies and small blends (about a millisecond at 720p).
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

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
RGB = tuple[int, int, int]

_TIMECODE_CHARS = "0123456789:."


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
        return cls(
            width=width,
            height=height,
            inv_y=(256 - a_y).astype(np.uint16),
            pre_y=(y * a_y).astype(np.uint16),
            inv_c=(256 - a_c).astype(np.uint16),
            pre_u=(u * a_c).astype(np.uint16),
            pre_v=(v * a_c).astype(np.uint16),
        )

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
    angle: float
    phase: float
    wave: tuple[float, float]
    shapes: tuple[tuple[RGB, float, float, float, float], ...]  # colour, x0, y0, vx, vy (fractions)
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
                rnd.random(),
                rnd.uniform(-0.25, 0.25),
                rnd.uniform(-0.25, 0.25),
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
            angle=rnd.uniform(0, 2 * math.pi),
            phase=rnd.uniform(0, 2 * math.pi),
            wave=(rnd.uniform(1.5, 3.5), rnd.uniform(1.5, 3.5)),
            shapes=shapes,
            zoom_to=(rnd.uniform(0.3, 0.7), rnd.uniform(0.3, 0.7)),
        )


class SyntheticClip:
    """Renders frame ``i`` of a clip on demand, as one yuv420p array."""

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
        self._margin = _even(short * 0.04)
        self._bar_h = _even(max(4, short * 0.008))
        # The backdrop moves on a circle of this radius; the texture is that much larger on every side.
        self._travel = _even(short * 0.1)
        self._image_planes: tuple[Image.Image, Image.Image, Image.Image] | None = None
        self._first: np.ndarray | None = None
        if image is not None:
            self._prepare_image(image)
        else:
            self._prepare_backdrop()
        self._caption = _caption_overlay(caption, width - 2 * self._margin, short)
        self._label = _label_overlay(label, sublabel, short)
        self._timecode = _TimecodeFont(_even(short * 0.035))
        self._accent_yuv = _rgb_to_yuv_triplet(self.style.accent)

    def render(self, index: int, out: np.ndarray | None = None) -> np.ndarray:
        """Frame ``index`` (0-based) as a yuv420p array; written into ``out`` when given."""
        frame = np.empty(yuv420_shape(self.width, self.height), np.uint8) if out is None else out
        if self._first is not None and index == 0:
            # With an input image the first frame is that image, untouched.
            frame[...] = self._first
            return frame
        t = index / max(1, self.frames - 1)
        if self._image_planes is not None:
            self._zoomed(t, frame)
        else:
            self._backdrop(t, frame)
            self._shapes(index, frame)
        self._decorate(index, frame)
        return frame

    # --- backdrop (text to video) ---

    def _prepare_backdrop(self) -> None:
        pad = self._travel
        th, tw = self.height + 2 * pad, self.width + 2 * pad
        # The texture is smooth, so it is computed at a quarter of the size and scaled up: ~16x less math.
        sh, sw = max(2, th // 4), max(2, tw // 4)
        yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
        yy /= sh
        xx /= sw
        c1, c2, c3 = (np.array(c, np.float32) for c in self.style.colours)
        ramp = np.clip(0.5 + (xx - 0.5) * math.cos(self.style.angle) + (yy - 0.5) * math.sin(self.style.angle), 0, 1)
        fx, fy = self.style.wave
        waves = 0.5 + 0.5 * np.sin(2 * math.pi * fx * xx + self.style.phase) * np.cos(2 * math.pi * fy * yy)
        rgb = c1 * (1 - ramp[..., None]) + c2 * ramp[..., None]
        rgb = rgb * (1 - 0.45 * waves[..., None]) + c3 * (0.45 * waves[..., None])
        small = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
        texture = rgb_to_yuv420(np.asarray(small.resize((tw, th), Image.Resampling.BILINEAR)))
        ty, tu, tv = yuv420_planes(texture)
        self._tex = (ty.copy(), tu.copy(), tv.copy())
        radius = min(self.width, self.height) // 8
        self._shape_overlays = [
            (Overlay.from_rgba(_disc(radius, colour, 190)), x0, y0, vx, vy)
            for colour, x0, y0, vx, vy in self.style.shapes
        ]

    def _backdrop(self, t: float, frame: np.ndarray) -> None:
        pad = self._travel
        angle = 2 * math.pi * t + self.style.phase
        ox = _even(pad + pad * math.cos(angle))
        oy = _even(pad + pad * math.sin(angle))
        ty, tu, tv = self._tex
        y, u, v = yuv420_planes(frame)
        h, w = self.height, self.width
        y[...] = ty[oy : oy + h, ox : ox + w]
        u[...] = tu[oy // 2 : oy // 2 + h // 2, ox // 2 : ox // 2 + w // 2]
        v[...] = tv[oy // 2 : oy // 2 + h // 2, ox // 2 : ox // 2 + w // 2]

    def _shapes(self, index: int, frame: np.ndarray) -> None:
        seconds = index / self.fps
        for overlay, x0, y0, vx, vy in self._shape_overlays:
            x = _bounce(x0 + vx * seconds) * (self.width - overlay.width)
            y = _bounce(y0 + vy * seconds) * (self.height - overlay.height)
            overlay.apply(frame, _even(x, floor=True), _even(y, floor=True))

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

    # --- caption, label, timecode, progress bar ---

    def _decorate(self, index: int, frame: np.ndarray) -> None:
        m = self._margin
        self._label.apply(frame, m, m)
        bottom = self.height - self._bar_h - m
        self._caption.apply(frame, m, bottom - self._caption.height)
        seconds = index / self.fps
        stamp = f"{int(seconds // 60):02d}:{seconds % 60:05.2f}"
        self._timecode.draw(frame, stamp, right=self.width - m, top=m)
        # Progress bar along the bottom edge: how far into the clip this frame is.
        y, u, v = yuv420_planes(frame)
        filled = _even(self.width * (index + 1) / self.frames)
        bar = self._bar_h
        ay, au, av_ = self._accent_yuv
        y[self.height - bar :, :filled] = ay
        u[(self.height - bar) // 2 :, : filled // 2] = au
        v[(self.height - bar) // 2 :, : filled // 2] = av_
        y[self.height - bar :, filled:] = 16


class _TimecodeFont:
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


def _caption_overlay(text: str, max_width: int, short_side: int) -> Overlay:
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


def _label_overlay(label: str, sublabel: str, short_side: int) -> Overlay:
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


def _disc(radius: int, colour: RGB, opacity: int) -> np.ndarray:
    size = _even(2 * radius + 2)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    centre = (size - 1) / 2
    dist = np.sqrt((xx - centre) ** 2 + (yy - centre) ** 2)
    # A one-pixel soft edge keeps the disc from looking jagged.
    alpha = np.clip(radius - dist + 0.5, 0, 1) * opacity
    rgba = np.empty((size, size, 4), np.uint8)
    rgba[..., :3] = colour
    rgba[..., 3] = np.rint(alpha).astype(np.uint8)
    return rgba


def _rgb_to_yuv_triplet(colour: RGB) -> tuple[int, int, int]:
    y, u, v = yuv420_planes(rgb_to_yuv420(np.full((2, 2, 3), colour, np.uint8)))
    return int(y[0, 0]), int(u[0, 0]), int(v[0, 0])


def _bounce(x: float) -> float:
    """Fold any number into 0..1 like a ball bouncing between two walls."""
    x %= 2.0
    return 2.0 - x if x > 1.0 else x


def _even(value: float, *, floor: bool = False) -> int:
    n = math.floor(value) if floor else round(value)
    return int(n) - (int(n) % 2)
