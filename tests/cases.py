"""Payload cases for the two seed models (CONTRACT section 6), shared by the unit and the integration tests.

Plain JSON-able data only, so the integration tests can post it to a live server as it is.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

TURBO = "kling-v2-5-turbo"
MASTER = "Kling-Text2Video-V2-Master"
MODEL_IDS = (TURBO, MASTER)
# What GET /models lists by default: the seed models, then the built-in open-weight models (emulated until routed).
OPEN_MODEL_IDS = (
    "wan2.1-t2v-1.3b",
    "wan2.1-t2v-14b",
    "wan2.1-i2v-14b-480p",
    "wan2.2-ti2v-5b",
    "wan2.2-t2v-a14b",
    "wan2.2-i2v-a14b",
    "ltx-video",
    "hunyuanvideo-1.5-t2v",
    "hunyuanvideo-1.5-i2v",
)
LISTED_MODEL_IDS = [*MODEL_IDS, *OPEN_MODEL_IDS]

PROMPT = "A red fox trotting through fresh snow at dawn"
TOO_LONG = "x" * 2501

# A 1x1 PNG: the right shape for the catalog, though the server's image check rejects it as too small.
TINY_PNG_BASE64 = "".join(
    [
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8",
        "z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==",
    ]
)


def _for_every_model(model: str) -> list[tuple[str, Any, str]]:
    """The rules both models share, each broken once."""
    return [
        # prompt
        (model, {}, "payload.prompt"),
        (model, {"duration": "5"}, "payload.prompt"),
        (model, {"prompt": ""}, "payload.prompt"),
        (model, {"prompt": "   \n\t "}, "payload.prompt"),
        (model, {"prompt": TOO_LONG}, "payload.prompt"),
        (model, {"prompt": 42}, "payload.prompt"),
        (model, {"prompt": None}, "payload.prompt"),
        (model, {"prompt": ["a", "fox"]}, "payload.prompt"),
        # negative_prompt
        (model, {"prompt": PROMPT, "negative_prompt": TOO_LONG}, "payload.negative_prompt"),
        (model, {"prompt": PROMPT, "negative_prompt": 7}, "payload.negative_prompt"),
        (model, {"prompt": PROMPT, "negative_prompt": None}, "payload.negative_prompt"),
        # duration
        (model, {"prompt": PROMPT, "duration": "7"}, "payload.duration"),
        (model, {"prompt": PROMPT, "duration": "5s"}, "payload.duration"),
        (model, {"prompt": PROMPT, "duration": "5.0"}, "payload.duration"),
        (model, {"prompt": PROMPT, "duration": ""}, "payload.duration"),
        (model, {"prompt": PROMPT, "duration": 7}, "payload.duration"),
        (model, {"prompt": PROMPT, "duration": 5.5}, "payload.duration"),
        (model, {"prompt": PROMPT, "duration": True}, "payload.duration"),
        (model, {"prompt": PROMPT, "duration": None}, "payload.duration"),
        # cfg_scale
        (model, {"prompt": PROMPT, "cfg_scale": -0.1}, "payload.cfg_scale"),
        (model, {"prompt": PROMPT, "cfg_scale": 1.1}, "payload.cfg_scale"),
        (model, {"prompt": PROMPT, "cfg_scale": 2}, "payload.cfg_scale"),
        (model, {"prompt": PROMPT, "cfg_scale": 0.35}, "payload.cfg_scale"),
        (model, {"prompt": PROMPT, "cfg_scale": 0.05}, "payload.cfg_scale"),
        (model, {"prompt": PROMPT, "cfg_scale": "0.5"}, "payload.cfg_scale"),
        (model, {"prompt": PROMPT, "cfg_scale": True}, "payload.cfg_scale"),
        (model, {"prompt": PROMPT, "cfg_scale": None}, "payload.cfg_scale"),
        # the nested cfg spelling
        (model, {"prompt": PROMPT, "cfg": {"scale": 0.35}}, "payload.cfg.scale"),
        (model, {"prompt": PROMPT, "cfg": {"scale": 1.5}}, "payload.cfg.scale"),
        (model, {"prompt": PROMPT, "cfg": {"scale": "0.5"}}, "payload.cfg.scale"),
        (model, {"prompt": PROMPT, "cfg": {"scale": 0.5, "weight": 1}}, "payload.cfg.weight"),
        (model, {"prompt": PROMPT, "cfg": {}}, "payload.cfg"),
        (model, {"prompt": PROMPT, "cfg": 0.5}, "payload.cfg"),
        (model, {"prompt": PROMPT, "cfg": [0.5]}, "payload.cfg"),
        (model, {"prompt": PROMPT, "cfg_scale": 0.7, "cfg": {"scale": 0.3}}, "payload.cfg.scale"),
        # unknown parameters
        (model, {"prompt": PROMPT, "seed": 42}, "payload.seed"),
        (model, {"prompt": PROMPT, "Prompt": PROMPT}, "payload.Prompt"),
        (model, {"prompt": PROMPT, "cfg.scale": 0.5}, "payload.cfg.scale"),
        # a payload that is not an object
        (model, [PROMPT], "payload"),
        (model, PROMPT, "payload"),
        (model, None, "payload"),
        (model, 5, "payload"),
    ]


VIOLATIONS: list[tuple[str, Any, str]] = [
    *_for_every_model(TURBO),
    (TURBO, {"prompt": PROMPT, "mode": "std"}, "payload.mode"),
    (TURBO, {"prompt": PROMPT, "mode": "PRO"}, "payload.mode"),
    (TURBO, {"prompt": PROMPT, "mode": 1}, "payload.mode"),
    (TURBO, {"prompt": PROMPT, "aspect_ratio": "16:9"}, "payload.aspect_ratio"),
    (TURBO, {"prompt": PROMPT, "image": 123}, "payload.image"),
    (TURBO, {"prompt": PROMPT, "image": ["https://example.com/a.png"]}, "payload.image"),
    (TURBO, {"prompt": PROMPT, "image": None}, "payload.image"),
    (TURBO, {"prompt": PROMPT, "image": ""}, "payload.image"),
    (TURBO, {"prompt": PROMPT, "image": "not an image"}, "payload.image"),
    (TURBO, {"prompt": PROMPT, "image": "ftp://example.com/a.png"}, "payload.image"),
    (TURBO, {"prompt": PROMPT, "image": "file:///etc/passwd"}, "payload.image"),
    (
        TURBO,
        {"prompt": PROMPT, "image": "data:text/plain;base64,aGVsbG8gd29ybGQgaGVsbG8gd29ybGQ="},
        "payload.image",
    ),
    *_for_every_model(MASTER),
    (MASTER, {"prompt": PROMPT, "aspect_ratio": "4:3"}, "payload.aspect_ratio"),
    (MASTER, {"prompt": PROMPT, "aspect_ratio": "16x9"}, "payload.aspect_ratio"),
    (MASTER, {"prompt": PROMPT, "aspect_ratio": 1.78}, "payload.aspect_ratio"),
    (MASTER, {"prompt": PROMPT, "image": "https://example.com/a.png"}, "payload.image"),
    (MASTER, {"prompt": PROMPT, "mode": "pro"}, "payload.mode"),
]

_TURBO_DEFAULTS = {"duration": "5", "negative_prompt": "", "mode": "pro", "cfg_scale": 0.5}
_MASTER_DEFAULTS = {"negative_prompt": "", "duration": "5", "aspect_ratio": "16:9", "cfg_scale": 0.5}


def _turbo(**accepted: Any) -> dict[str, Any]:
    return {**_TURBO_DEFAULTS, **accepted}


def _master(**accepted: Any) -> dict[str, Any]:
    return {**_MASTER_DEFAULTS, **accepted}


def _for_both(payload: dict[str, Any], **accepted: Any) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [(TURBO, payload, _turbo(**accepted)), (MASTER, payload, _master(**accepted))]


# Image-free on purpose: a live server also fetches and checks an image, which these cases are not about.
VALID: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    *_for_both({"prompt": PROMPT}, prompt=PROMPT),
    *_for_both({"prompt": "x"}, prompt="x"),
    *_for_both({"prompt": "x" * 2500}, prompt="x" * 2500),
    *_for_both({"prompt": "  a fox  "}, prompt="  a fox  "),
    *_for_both({"prompt": "狐狸在雪中奔跑 🦊"}, prompt="狐狸在雪中奔跑 🦊"),
    *_for_both({"prompt": PROMPT, "duration": "10"}, prompt=PROMPT, duration="10"),
    *_for_both({"prompt": PROMPT, "duration": 5}, prompt=PROMPT, duration="5"),
    *_for_both({"prompt": PROMPT, "duration": 10}, prompt=PROMPT, duration="10"),
    *_for_both({"prompt": PROMPT, "duration": 10.0}, prompt=PROMPT, duration="10"),
    *_for_both({"prompt": PROMPT, "negative_prompt": "blurry"}, prompt=PROMPT, negative_prompt="blurry"),
    *_for_both({"prompt": PROMPT, "negative_prompt": "n" * 2500}, prompt=PROMPT, negative_prompt="n" * 2500),
    *_for_both({"prompt": PROMPT, "negative_prompt": ""}, prompt=PROMPT, negative_prompt=""),
    *_for_both({"prompt": PROMPT, "cfg_scale": 0}, prompt=PROMPT, cfg_scale=0.0),
    *_for_both({"prompt": PROMPT, "cfg_scale": 1}, prompt=PROMPT, cfg_scale=1.0),
    *_for_both({"prompt": PROMPT, "cfg_scale": 0.7}, prompt=PROMPT, cfg_scale=0.7),
    *_for_both({"prompt": PROMPT, "cfg_scale": 0.30000000000000004}, prompt=PROMPT, cfg_scale=0.3),
    *_for_both({"prompt": PROMPT, "cfg": {"scale": 0.2}}, prompt=PROMPT, cfg_scale=0.2),
    *_for_both({"prompt": PROMPT, "cfg": {"scale": 1}}, prompt=PROMPT, cfg_scale=1.0),
    *_for_both(
        {"prompt": PROMPT, "cfg_scale": 0.3, "cfg": {"scale": 0.30000000000000004}},
        prompt=PROMPT,
        cfg_scale=0.3,
    ),
    (TURBO, {"prompt": PROMPT, "mode": "pro"}, _turbo(prompt=PROMPT)),
    (
        TURBO,
        {"prompt": PROMPT, "duration": "10", "negative_prompt": "blurry", "mode": "pro", "cfg_scale": 0.9},
        _turbo(prompt=PROMPT, duration="10", negative_prompt="blurry", cfg_scale=0.9),
    ),
    (MASTER, {"prompt": PROMPT, "aspect_ratio": "9:16"}, _master(prompt=PROMPT, aspect_ratio="9:16")),
    (MASTER, {"prompt": PROMPT, "aspect_ratio": "1:1"}, _master(prompt=PROMPT, aspect_ratio="1:1")),
    (
        MASTER,
        {
            "prompt": PROMPT,
            "negative_prompt": "blurry",
            "duration": 10,
            "aspect_ratio": "1:1",
            "cfg_scale": 0.1,
        },
        _master(prompt=PROMPT, negative_prompt="blurry", duration="10", aspect_ratio="1:1", cfg_scale=0.1),
    ),
]

# `image` values whose shape the catalog accepts or rejects (kling-v2-5-turbo); pixels are checked later.
IMAGE_SHAPES_OK: list[str] = [
    "https://example.com/fox.png",
    "http://example.com/fox.jpg?size=large#top",
    "https://cdn.example.com:8443/a/b/c.jpeg",
    TINY_PNG_BASE64,
    "data:image/png;base64," + TINY_PNG_BASE64,
    "data:image/jpeg;base64,/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAAMCAgICAgMCAgIDAwMDBAYEBAQEBAgGBgUGCQgKCgkICQkKDA8=",
    TINY_PNG_BASE64[:40] + "\n" + TINY_PNG_BASE64[40:80] + "\r\n" + TINY_PNG_BASE64[80:] + "\n",
    "/9j/4AAQSkZJRgABAQEASABIAAD",
]
IMAGE_SHAPES_BAD: list[Any] = [
    "",
    " ",
    "fox.png",
    "not an image",
    "aGVsbG8=",  # base64, but far too short to be an image
    "https://",
    "https:// example.com/a.png",
    " https://example.com/a.png",
    "HTTPS//example.com/a.png",
    "ftp://example.com/a.png",
    "file:///etc/passwd",
    "data:image/png;base64,",
    "data:image/png;base64,not base64 at all!",
    "data:text/plain;base64," + TINY_PNG_BASE64,
    "data:image/png," + TINY_PNG_BASE64,
    TINY_PNG_BASE64 + "===",
    TINY_PNG_BASE64 + "!",
    "<svg xmlns='http://www.w3.org/2000/svg'/>",
    123,
    True,
    None,
    {"url": "https://example.com/a.png"},
]


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose header claims a canvas of width x height (a pixel bomb)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )
