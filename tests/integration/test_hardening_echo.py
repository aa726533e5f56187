"""A base64 input image is stored, never echoed: answers and webhooks carry a signed URL of the stored input."""

from __future__ import annotations

import base64
import http.server
import io
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from PIL import Image

from tests.cases import PROMPT, TURBO
from tests.support import Server, free_port, running_server, submit, wait_for

SMALL = 20_000  # bytes: an answer that carries a URL, not a megabyte of base64


def noisy_png(colour: tuple[int, int, int], size: tuple[int, int] = (720, 720)) -> bytes:
    """A PNG of ``colour`` with a little noise, so it does not compress: about 1 MB once in base64."""
    noise = os.urandom(size[0] * size[1] * 3)
    raw = bytes(min(255, c + (n & 0x0F)) for c, n in zip(Image.new("RGB", size, colour).tobytes(), noise, strict=True))
    out = io.BytesIO()
    Image.frombytes("RGB", size, raw).save(out, format="PNG", compress_level=1)
    return out.getvalue()


class Hooks:
    """A loopback receiver that records every webhook body by path, and serves one image at /image.png."""

    def __init__(self, image: bytes) -> None:
        self.port = free_port()
        self.bodies: dict[str, list[bytes]] = {}
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.bodies.setdefault(self.path, []).append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(image)))
                self.end_headers()
                self.wfile.write(image)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def posts(self, path: str) -> list[bytes]:
        with self.lock:
            return list(self.bodies.get(path, []))

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"VIDQUEUE_WEBHOOK_POLL_INTERVAL_S": "0.1", "VIDQUEUE_EMULATOR_LATENCY_S": "0.2"}
    with running_server(tmp_path_factory.mktemp("echo"), workers=2, **env) as srv:
        yield srv


@pytest.fixture(scope="module")
def hooks() -> Iterator[Hooks]:
    small = io.BytesIO()
    Image.new("RGB", (400, 320), (30, 140, 200)).save(small, format="PNG")
    rec = Hooks(small.getvalue())
    yield rec
    rec.close()


def assert_stored_url(server: Server, value: Any, request_id: str, png: bytes) -> None:
    """``value`` is a signed URL of the request's stored input, and it downloads the stored image."""
    assert isinstance(value, str) and value.startswith(f"{server.url}/media/requests/{request_id}/input."), value[:200]
    got = httpx.get(value, timeout=10)
    assert got.status_code == 200
    stored = server.data_dir / "media" / "requests" / request_id / Path(value.split("?")[0]).name
    assert got.content == stored.read_bytes()
    # What was stored is the image sent (or its normalised copy): the same pixels.
    assert Image.open(io.BytesIO(got.content)).convert("RGB").tobytes() == Image.open(io.BytesIO(png)).tobytes()


def test_a_base64_image_is_answered_and_sent_as_a_url_of_the_stored_input(server: Server, hooks: Hooks) -> None:
    png = noisy_png((200, 40, 40))
    image = base64.b64encode(png).decode()
    assert len(image) > 900_000
    body = {"model": TURBO, "payload": {"prompt": PROMPT, "image": image}, "callback_url": hooks.url("/echo")}
    with server.client(**{"Idempotency-Key": "echo-1"}) as api:
        created = api.post("/requests", json=body)
        assert created.status_code == 200, created.text[:500]
        assert len(created.content) < SMALL
        rid = created.json()["request_id"]
        assert_stored_url(server, created.json()["payload"]["image"], rid, png)

        # A replay of the same body, as sent (the fingerprint is of the body, not of what is stored).
        again = api.post("/requests", json=body)
        assert again.status_code == 200 and again.json()["request_id"] == rid
        assert len(again.content) < SMALL
        assert_stored_url(server, again.json()["payload"]["image"], rid, png)

        done = wait_for(api, rid)
        assert done["status"] == "success", done
        one = api.get(f"/requests/{rid}")
        assert len(one.content) < SMALL
        assert_stored_url(server, one.json()["payload"]["image"], rid, png)

        listed = api.get("/requests", params={"limit": 100})
        assert listed.status_code == 200 and len(listed.content) < SMALL
        [mine] = [r for r in listed.json()["requests"] if r["request_id"] == rid]
        assert_stored_url(server, mine["payload"]["image"], rid, png)

    # The video starts with the image.
    video = httpx.get(done["outcome"]["video_url"], timeout=30).content
    with av.open(io.BytesIO(video)) as container:
        first = next(container.decode(video=0)).to_image()
    r, g, b = first.resize((1, 1)).getpixel((0, 0))  # type: ignore[misc]
    assert r > 150 and g < 100 and b < 100

    # Every webhook (queued, processing, success) carries the URL, not the base64.
    deadline = time.monotonic() + 10
    while len(hooks.posts("/echo")) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    posts = hooks.posts("/echo")
    assert [json.loads(p)["status"] for p in posts] == ["queued", "processing", "success"]
    for post in posts:
        assert len(post) < SMALL
        assert_stored_url(server, json.loads(post)["payload"]["image"], rid, png)


def test_an_image_url_is_kept_as_given(server: Server, hooks: Hooks) -> None:
    url = hooks.url("/image.png")
    with server.client() as api:
        created = submit(api, TURBO, {"prompt": PROMPT, "image": url})
        assert created["payload"]["image"] == url
        done = wait_for(api, created["request_id"])
        assert done["status"] == "success", done
        assert done["payload"]["image"] == url
        listed = api.get("/requests", params={"limit": 100}).json()["requests"]
        assert [r["payload"]["image"] for r in listed if r["request_id"] == created["request_id"]] == [url]
