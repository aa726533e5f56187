"""Input images through the real server: URLs from a loopback HTTP server, base64 and data: URIs, and refusals."""

from __future__ import annotations

import base64
import http.server
import io
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.cases import MASTER, PROMPT, TURBO
from tests.support import Server, running_server, submit, wait_for

FETCH_TIMEOUT_S = 2


def image_bytes(width: int, height: int, fmt: str, colour: tuple[int, int, int] = (30, 120, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, fmt)
    return buf.getvalue()


PORTRAIT_PNG = image_bytes(600, 900, "PNG")
LANDSCAPE_JPEG = image_bytes(1000, 500, "JPEG")
SQUARE_GIF = image_bytes(600, 600, "GIF")


@dataclass
class ImageHost:
    """A loopback HTTP server with fixed files, a path that drips forever and one that never answers."""

    port: int
    files: dict[str, tuple[bytes, str]]
    hits: Counter[str] = field(default_factory=Counter)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture(scope="module")
def image_host() -> Iterator[ImageHost]:
    release = threading.Event()
    files = {
        "/portrait.png": (PORTRAIT_PNG, "image/png"),
        "/landscape.jpg": (LANDSCAPE_JPEG, "image/jpeg"),
        "/gif-named.png": (SQUARE_GIF, "image/png"),  # a GIF under a PNG name and Content-Type
    }
    host = ImageHost(port=0, files=files)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            host.hits[self.path] += 1
            if self.path in files:
                body, content_type = files[self.path]
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif self.path == "/drip.png":
                # Headers and a start at once, then one byte every 0.2 s: no single read ever times out.
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(PORTRAIT_PNG)))
                self.end_headers()
                self.wfile.write(PORTRAIT_PNG[:64])
                self.wfile.flush()
                for i in range(64, len(PORTRAIT_PNG)):
                    if release.wait(0.2):
                        return
                    try:
                        self.wfile.write(PORTRAIT_PNG[i : i + 1])
                        self.wfile.flush()
                    except OSError:
                        return
            elif self.path == "/silent.png":
                release.wait(60)  # accepts the connection, never answers
            else:
                self.send_error(404)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    host.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield host
    finally:
        release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that may fetch from loopback (fast_env's default), with a short image fetch timeout."""
    tmp: Path = tmp_path_factory.mktemp("images")
    with running_server(tmp, workers=2, VIDQUEUE_IMAGE_FETCH_TIMEOUT_S=str(FETCH_TIMEOUT_S)) as srv:
        yield srv


@pytest.fixture()
def api(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def total(api: httpx.Client) -> int:
    resp = api.get("/requests", params={"limit": 1})
    assert resp.status_code == 200, resp.text
    return int(resp.json()["total"])


def post(api: httpx.Client, model: str, payload: dict[str, Any]) -> httpx.Response:
    return api.post("/requests", json={"model": model, "payload": payload})


def assert_refused_image(resp: httpx.Response, code: str = "invalid_image") -> str:
    """A 400 whose details name payload.image; answers that detail's message."""
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["error"]
    assert body["code"] == code, body
    fields = {d["field"]: d["message"] for d in body["details"]}
    assert "payload.image" in fields, body
    return fields["payload.image"]


def assert_aspect(outcome: dict[str, Any], width: int, height: int) -> None:
    video = outcome["video"]
    assert max(video["width"], video["height"]) == 1280
    assert video["width"] % 2 == 0 and video["height"] % 2 == 0
    assert abs(video["width"] / video["height"] - width / height) < 0.01, video


# -- accepted images ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "size"),
    [("/portrait.png", (600, 900)), ("/landscape.jpg", (1000, 500))],
)
def test_image_url_is_fetched_once_and_the_video_follows_its_aspect(
    api: httpx.Client, image_host: ImageHost, path: str, size: tuple[int, int]
) -> None:
    url = image_host.url(path)
    before = image_host.hits[path]
    created = submit(api, TURBO, {"prompt": PROMPT, "image": url})
    assert created["status"] == "queued"
    assert created["payload"]["image"] == url
    done = wait_for(api, created["request_id"])
    assert done["status"] == "success", done
    assert done["payload"]["image"] == url
    assert_aspect(done["outcome"], *size)
    # Fetched at submit time and kept: the worker never went back to the URL.
    assert image_host.hits[path] == before + 1
    video = httpx.get(done["outcome"]["video_url"], timeout=30)
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"


@pytest.mark.parametrize(
    "encode",
    [
        lambda data: base64.b64encode(data).decode(),
        lambda data: "data:image/png;base64," + base64.b64encode(data).decode(),
    ],
    ids=["raw-base64", "data-uri"],
)
def test_base64_image_is_accepted_and_the_video_follows_its_aspect(api: httpx.Client, encode: Any) -> None:
    image = encode(PORTRAIT_PNG)
    created = submit(api, TURBO, {"prompt": PROMPT, "image": image})
    # Not echoed: the answer carries a signed URL of the stored image, which downloads the bytes that were sent.
    stored = created["payload"]["image"]
    assert stored.startswith("http") and "/input.png" in stored
    assert httpx.get(stored, timeout=30).content == PORTRAIT_PNG
    done = wait_for(api, created["request_id"])
    assert done["status"] == "success", done
    assert_aspect(done["outcome"], 600, 900)


def test_jpeg_data_uri_is_accepted(api: httpx.Client) -> None:
    image = "data:image/jpeg;base64," + base64.b64encode(LANDSCAPE_JPEG).decode()
    created = submit(api, TURBO, {"prompt": PROMPT, "image": image})
    done = wait_for(api, created["request_id"])
    assert done["status"] == "success", done
    assert_aspect(done["outcome"], 1000, 500)


# -- refused images ----------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("image", "hint"),
    [
        (b64(image_bytes(200, 200, "PNG")), "300"),
        (b64(image_bytes(299, 600, "PNG")), "300"),
        (b64(image_bytes(1000, 300, "PNG")), "aspect ratio"),
        ("data:image/jpeg;base64," + b64(image_bytes(400, 1100, "JPEG")), "aspect ratio"),
        (b64(b"This is plain text, not a picture of anything at all.\n" * 4), "JPEG or PNG"),
        (b64(SQUARE_GIF), "JPEG or PNG"),
        ("data:image/gif;base64," + b64(SQUARE_GIF), "JPEG or PNG"),
        (b64(PORTRAIT_PNG[: len(PORTRAIT_PNG) // 2]), "corrupt"),
    ],
    ids=["200x200", "299-wide", "1000x300", "400x1100-jpeg", "text", "gif", "gif-data-uri", "truncated-png"],
)
def test_bad_base64_image_answers_400_and_queues_nothing(api: httpx.Client, image: str, hint: str) -> None:
    before = total(api)
    message = assert_refused_image(post(api, TURBO, {"prompt": PROMPT, "image": image}))
    assert hint in message
    assert total(api) == before


@pytest.mark.parametrize(
    ("path", "hint"),
    [("/missing.png", "404"), ("/gif-named.png", "JPEG or PNG")],
)
def test_bad_image_url_answers_400_and_queues_nothing(
    api: httpx.Client, image_host: ImageHost, path: str, hint: str
) -> None:
    before = total(api)
    message = assert_refused_image(post(api, TURBO, {"prompt": PROMPT, "image": image_host.url(path)}))
    assert hint in message
    assert total(api) == before


@pytest.mark.parametrize("path", ["/drip.png", "/silent.png"])
def test_image_url_that_never_finishes_answers_400_within_the_fetch_timeout(
    server: Server, api: httpx.Client, image_host: ImageHost, path: str
) -> None:
    before = total(api)
    answer: list[httpx.Response] = []

    def slow_submit() -> None:
        with server.client() as own:
            answer.append(post(own, TURBO, {"prompt": PROMPT, "image": image_host.url(path)}))

    started = time.monotonic()
    thread = threading.Thread(target=slow_submit)
    thread.start()
    time.sleep(0.3)
    # The fetch waits aside: the API keeps answering meanwhile.
    assert api.get("/models").status_code == 200
    assert time.monotonic() - started < FETCH_TIMEOUT_S
    thread.join(timeout=30)
    elapsed = time.monotonic() - started
    assert answer, "the submit never answered"
    message = assert_refused_image(answer[0])
    assert elapsed < FETCH_TIMEOUT_S + 3, elapsed
    assert f"could not be fetched within {FETCH_TIMEOUT_S} s" in message
    assert total(api) == before


def test_image_is_not_a_parameter_of_the_text_to_video_master_model(api: httpx.Client, image_host: ImageHost) -> None:
    before_hits = sum(image_host.hits.values())
    before = total(api)
    for image in (image_host.url("/portrait.png"), b64(PORTRAIT_PNG)):
        message = assert_refused_image(post(api, MASTER, {"prompt": PROMPT, "image": image}), "invalid_request")
        assert "not a parameter" in message
    assert total(api) == before
    assert sum(image_host.hits.values()) == before_hits  # refused before anything was fetched


# -- the SSRF guard ----------------------------------------------------------------------------------------


def test_loopback_image_url_is_refused_unless_private_urls_are_allowed(tmp_path: Path, image_host: ImageHost) -> None:
    with running_server(tmp_path, workers=0, VIDQUEUE_ALLOW_PRIVATE_URLS="0") as guarded, guarded.client() as api:
        before_hits = sum(image_host.hits.values())
        for host in ("127.0.0.1", "localhost"):
            resp = post(api, TURBO, {"prompt": PROMPT, "image": image_host.url("/portrait.png", host)})
            message = assert_refused_image(resp)
            assert "private" in message and "loopback" in message, message
        assert total(api) == 0
        assert sum(image_host.hits.values()) == before_hits  # no connection was made at all
        # Inline image data does not touch the network, so the guard does not apply to it.
        accepted = submit(api, TURBO, {"prompt": PROMPT, "image": b64(PORTRAIT_PNG)})
        assert accepted["status"] == "queued"
        assert total(api) == 1
