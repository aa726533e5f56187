"""Input images: read a URL, a ``data:`` URI or raw base64, and check the image by its content.

The checks follow the public model table: a JPEG or PNG (by content, not by name or Content-Type), at most
``max_bytes`` (of decoded bytes), both sides at least 300 px, an aspect ratio between 1:2.5 and 2.5:1. The
pixel count is read from the header and capped before anything is decoded, so a small file that claims a
huge canvas (a pixel bomb) costs nothing; a full decode then proves the file is not truncated or corrupt.
Every failure is an ``InvalidImage`` whose detail names the field and the rule. The original bytes are kept.

Memory: a full decode of a 40-megapixel image holds 120 MB of pixels, so at most ``DECODE_SLOTS`` decodes run at
once in a process (more callers wait their turn, they are not refused), a JPEG is decoded at 1/8 scale (every
byte of it is still read and entropy-decoded, which is what proves it whole), the decoded pixels are released as
soon as the check is done, and after a large decode glibc is asked to hand freed memory back to the system
(it keeps freed arenas otherwise, and the process would stay at its peak). Callers run this in a thread, never on
an event loop: a decode takes up to a second.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import io
import re
import struct
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import httpx
from PIL import Image, ImageFile, JpegImagePlugin, PngImagePlugin

from vidqueue.errors import FieldError, InvalidImage
from vidqueue.media.netguard import FetchError, IPNetwork, Resolver, fetch, format_bytes

ImageFormat = Literal["jpeg", "png"]

MIN_SIDE = 300
MAX_RATIO = 2.5
MAX_PIXELS = 40_000_000
MAX_BYTES = 10 * 1024 * 1024
DECODE_SLOTS = 2  # full decodes at once per process; each holds up to MAX_PIXELS * 3 bytes (4 for CMYK)
TRIM_AFTER_PIXELS = 4_000_000  # a decode this large has freed enough to be worth a malloc_trim

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):", re.ASCII)
_DATA_URI = re.compile(r"^data:([^,]*?),", re.IGNORECASE | re.DOTALL)
_BASE64_CHARS = re.compile(r"^[A-Za-z0-9+/_-]*={0,2}$", re.ASCII)
_DECODES = threading.BoundedSemaphore(DECODE_SLOTS)


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where there is none (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _find_malloc_trim()


@dataclass(frozen=True)
class CheckedImage:
    """An input image that passed every check: the original bytes and what they hold."""

    data: bytes
    format: ImageFormat
    width: int  # as stored in the file, before any EXIF rotation
    height: int
    content_type: str  # image/jpeg or image/png, from the content

    @property
    def extension(self) -> str:
        """The file name extension for this format (``jpg`` or ``png``)."""
        return "jpg" if self.format == "jpeg" else "png"


def load_image(
    value: str,
    *,
    allow_private: bool = False,
    timeout_s: float = 10.0,
    max_bytes: int = MAX_BYTES,
    field: str = "payload.image",
    transport: httpx.BaseTransport | None = None,
    resolver: Resolver | None = None,
    allowed_networks: Sequence[IPNetwork] = (),
    max_pixels: int = MAX_PIXELS,
) -> CheckedImage:
    """Read an http(s) URL, a data: URI or raw base64 and return the image if it passes every check."""
    text = value.strip()
    if not text:
        raise _invalid(field, "must be an http(s) URL or base64 image data")
    scheme = _URL.match(text)
    if scheme and scheme.group(1).lower() in ("http", "https"):
        try:
            fetched = fetch(
                text,
                allow_private=allow_private,
                allowed_networks=allowed_networks,
                timeout_s=timeout_s,
                max_bytes=max_bytes,
                resolver=resolver,
                transport=transport,
            )
        except FetchError as exc:
            raise _invalid(field, str(exc)) from exc
        data = fetched.data
    elif scheme and scheme.group(1).lower() == "data":
        data = _decode_data_uri(text, field, max_bytes)
    elif scheme:
        # "file:", "ftp:", "gopher:"… are never fetched (base64 has no colon, so this is not base64 either).
        raise _invalid(field, "must be an http or https URL, or base64 image data")
    else:
        data = _decode_base64(text, field, max_bytes)
    return check_image(data, max_bytes=max_bytes, max_pixels=max_pixels, field=field)


def check_image(
    data: bytes,
    *,
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    field: str = "payload.image",
) -> CheckedImage:
    """Check image bytes by content (JPEG or PNG, size, pixel cap, full decode, sides, aspect ratio)."""
    if len(data) > max_bytes:
        raise _invalid(field, f"must be at most {format_bytes(max_bytes)}")
    image_format: ImageFormat
    opener: type[ImageFile.ImageFile]
    # Identify by magic bytes and open with that one plugin: Image.open would try every format, and it
    # applies Pillow's process-wide bomb limit (with a warning below it) before we can apply ours.
    if data.startswith(_PNG_MAGIC):
        image_format, opener = "png", PngImagePlugin.PngImageFile
    elif data.startswith(_JPEG_MAGIC):
        image_format, opener = "jpeg", JpegImagePlugin.JpegImageFile
    else:
        raise _invalid(field, "is not a JPEG or PNG image")
    try:
        # Opening reads the header only; no pixel is decoded yet.
        image = opener(io.BytesIO(data))
    except (OSError, SyntaxError, ValueError, struct.error, EOFError, Image.DecompressionBombError) as exc:
        raise _invalid(field, "is not a JPEG or PNG image (the file header is not valid)") from exc
    try:
        width, height = image.size
        if width * height > max_pixels:
            raise _invalid(
                field,
                f"must be at most {max_pixels // 1_000_000} megapixels (got {width}x{height})",
            )
        if width < MIN_SIDE or height < MIN_SIDE:
            raise _invalid(field, f"width and height must be at least {MIN_SIDE} px (got {width}x{height})")
        if width * 2 > height * 5 or height * 2 > width * 5:  # ratio outside [1/2.5, 2.5], in integers
            raise _invalid(field, f"aspect ratio must be between 1:2.5 and 2.5:1 (got {width}x{height})")
        if image_format == "jpeg":
            # Decode at 1/8 scale (DCT scaling): the whole stream is still read and entropy-decoded, so a
            # truncated or corrupt file fails the same, for 1/64 of the pixel memory.
            image.draft(None, (max(1, width // 8), max(1, height // 8)))
        with _DECODES:
            try:
                image.load()
            except (
                OSError,
                SyntaxError,
                ValueError,
                struct.error,
                EOFError,
                MemoryError,
                Image.DecompressionBombError,
            ) as exc:
                raise _invalid(field, "could not be decoded: the file is truncated or corrupt") from exc
            finally:
                # Free the pixels now, inside the slot, not when the frame (or a traceback holding it) goes.
                image.close()
    finally:
        image.close()
    if _MALLOC_TRIM is not None and width * height >= TRIM_AFTER_PIXELS:
        _MALLOC_TRIM(0)
    return CheckedImage(
        data=data,
        format=image_format,
        width=width,
        height=height,
        content_type=f"image/{image_format}",
    )


def _decode_data_uri(text: str, field: str, max_bytes: int) -> bytes:
    match = _DATA_URI.match(text)
    if match is None:
        raise _invalid(field, "is not a valid data: URI (expected data:image/...;base64,...)")
    params = [p.strip().lower() for p in match.group(1).split(";")]
    if "base64" not in params[1:]:
        raise _invalid(field, "must be base64-encoded (data:image/...;base64,...)")
    return _decode_base64(text[match.end() :], field, max_bytes)


def _decode_base64(text: str, field: str, max_bytes: int) -> bytes:
    compact = "".join(text.split())
    # A cheap bound first, so an oversized string is refused without decoding it.
    if len(compact) // 4 * 3 > max_bytes + 3:
        raise _invalid(field, f"must be at most {format_bytes(max_bytes)}")
    if not compact or not _BASE64_CHARS.match(compact):
        raise _invalid(field, "is not a valid URL or base64 image data")
    # Accept the URL-safe alphabet and missing padding, both common in hand-made payloads.
    compact = compact.rstrip("=").replace("-", "+").replace("_", "/")
    if len(compact) % 4 == 1:
        raise _invalid(field, "is not valid base64 (its length is wrong)")
    compact += "=" * (-len(compact) % 4)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _invalid(field, f"is not valid base64 ({exc})") from exc
    if len(data) > max_bytes:
        raise _invalid(field, f"must be at most {format_bytes(max_bytes)}")
    return data


def _invalid(field: str, rule: str) -> InvalidImage:
    return InvalidImage(details=[FieldError(field, rule)])
