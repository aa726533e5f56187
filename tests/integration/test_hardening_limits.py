"""Limits under concurrency (issue 17, finding 1), against the real server on SQLite and on PostgreSQL.

The check used to read the organisation's counts before the input image was fetched and decoded, and the insert
came after: 30 concurrent image submits all read "0 so far" and all got in past a limit of 5 a minute. Now the
store checks the limits again in the insert's own transaction, one submit of an organisation at a time, so exactly
the limit gets in, image or not, and a refused submit leaves no stored image behind.
"""

from __future__ import annotations

import base64
import io
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageDraw

from tests import pg
from tests.cases import PROMPT, TURBO
from tests.support import Server, running_server

CONCURRENT = 30


def jpeg_b64(width: int = 600, height: int = 400) -> str:
    """A 600x400 JPEG with some detail, as base64 (decoding it takes the submit a few milliseconds)."""
    image = Image.new("RGB", (width, height), (40, 90, 160))
    draw = ImageDraw.Draw(image)
    for x in range(0, width, 30):
        draw.line((x, 0, width - x, height), fill=(220, 180 - x % 120, 60), width=3)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return base64.b64encode(out.getvalue()).decode()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Server settings naming the database: the default SQLite file, or a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        yield {}
        return
    with pg.database("vq_limits") as url:
        yield {"VIDQUEUE_DATABASE_URL": url}


def burst(server: Server, key: str, body: dict[str, object]) -> list[httpx.Response]:
    """CONCURRENT submits of ``body`` at once, each on its own connection."""

    def one(_: int) -> httpx.Response:
        with server.client(key) as api:
            return api.post("/requests", json=body, timeout=60)

    with ThreadPoolExecutor(CONCURRENT) as pool:
        return list(pool.map(one, range(CONCURRENT)))


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    """How many responses had each status code."""
    return Counter(r.status_code for r in responses)


def stored_inputs(server: Server) -> int:
    """Input images in the server's media folder."""
    return sum(1 for _ in (server.data_dir / "media").rglob("input.*"))


@pytest.mark.parametrize("image", [False, True], ids=["text", "image"])
def test_per_minute_limit_holds_exactly_under_concurrent_submits(
    tmp_path: Path, database: dict[str, str], image: bool
) -> None:
    payload: dict[str, object] = {"prompt": PROMPT}
    if image:
        payload["image"] = jpeg_b64()
    env = {"VIDQUEUE_REQUESTS_PER_MINUTE": "5", **database}
    with running_server(tmp_path, workers=0, **env) as server:
        key = server.create_key("burst")
        answers = burst(server, key, {"model": TURBO, "payload": payload})
        assert statuses(answers) == Counter({200: 5, 429: CONCURRENT - 5}), [r.text for r in answers[:3]]
        for refused in (r for r in answers if r.status_code == 429):
            assert refused.json()["code"] == "rate_limited" and int(refused.headers["Retry-After"]) >= 1
        with server.client(key) as api:
            assert api.get("/requests").json()["total"] == 5
        # A submit refused after its image was stored takes the image with it.
        assert stored_inputs(server) == (5 if image else 0)


def test_active_and_queue_caps_hold_exactly_under_concurrent_image_submits(
    tmp_path: Path, database: dict[str, str]
) -> None:
    body = {"model": TURBO, "payload": {"prompt": PROMPT, "image": jpeg_b64()}}
    env = {"VIDQUEUE_MAX_ACTIVE_PER_ORG": "3", "VIDQUEUE_MAX_QUEUED": "5", **database}
    with ExitStack() as stack:
        server = stack.enter_context(running_server(tmp_path, workers=0, **env))
        first, second = server.create_key("first"), server.create_key("second")
        # No worker runs: every accepted request stays queued, so the counts only grow.
        answers = burst(server, first, body)
        assert statuses(answers) == Counter({200: 3, 429: CONCURRENT - 3})
        assert {r.json()["code"] for r in answers if r.status_code == 429} == {"too_many_active"}
        # Another organisation has its own 3, but the queue as a whole takes 5: 2 more, then 503 queue_full.
        answers = burst(server, second, body)
        assert statuses(answers) == Counter({200: 2, 503: CONCURRENT - 2})
        assert {r.json()["code"] for r in answers if r.status_code == 503} == {"queue_full"}
        assert stored_inputs(server) == 5
