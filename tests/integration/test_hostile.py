"""Hostile input against the real server: one table of what is sent and the exact refusal it must get.

Each row is sent to a server on loopback with private URLs refused (as in production), and must answer its status
with the standard error body (`error`, `code`, `details`) naming the field or the rule, never a 500 and never a
traceback. After the table the server must still be ready, and the requests it accepted before must be intact.

Rows already covered one by one elsewhere (malformed JSON, a 415, a missing model in test_api; small, odd or
corrupt images in test_images_api) appear here only where the hostile variant differs.

Redirects: with private URLs refused, a loopback server is itself refused at the first hop, so the row "a loopback
URL that redirects to the metadata address" proves nothing is fetched at all. That every redirect hop is vetted
again (a public host answering 302 to 169.254.169.254) needs a resolver the server does not let a test swap in;
tests/unit/test_images.py checks it against netguard directly.
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.cases import MASTER, PROMPT, TURBO, png_header_claiming
from tests.support import Server, running_server, submit, wait_for

pytestmark = pytest.mark.slow

MB = 1024 * 1024
JSON = "application/json"
Body = bytes | Iterator[bytes]


@dataclass(frozen=True)
class Hostile:
    """One row: how to build the call (lazily: some bodies are tens of MB) and what must come back."""

    method: str
    path: str
    body: Callable[[], Body] | None = None
    content_type: str | None = JSON
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Refusal:
    """The answer a row must get: its status, and the code, field and phrase when given."""

    status: int
    code: str
    field: str | None = None
    phrase: str | None = None


def submit_raw(text: bytes | Callable[[], Body], content_type: str | None = JSON, **headers: str) -> Hostile:
    """POST /requests with this exact body text."""
    body = text if callable(text) else (lambda: text)
    return Hostile("POST", "/requests", body, content_type, headers)


def submit_json(obj: Any, **headers: str) -> Hostile:
    """POST /requests with ``obj`` as JSON."""
    return submit_raw(json.dumps(obj).encode(), **headers)


def turbo(payload_json: str) -> bytes:
    """A submit to the image-to-video model with this payload text (raw, so it can hold NaN and the like)."""
    return f'{{"model": "{TURBO}", "payload": {payload_json}}}'.encode()


def turbo_image(url: str) -> Hostile:
    """A submit whose payload.image is ``url`` (``HOST`` stands for the loopback helper's host:port)."""
    return submit_json({"model": TURBO, "payload": {"prompt": PROMPT, "image": url}})


def streamed(size: int, declare_length: bool) -> Hostile:
    """A submit whose prompt is ``size`` bytes, streamed in 1 MB chunks (chunked, or with a Content-Length)."""
    head, tail = f'{{"model": "{TURBO}", "payload": {{"prompt": "'.encode(), b'"}}'

    def chunks() -> Iterator[bytes]:
        yield head
        block = b"a" * MB
        for _ in range(size // MB):
            yield block
        yield tail

    headers = {"Content-Length": str(len(head) + size // MB * MB + len(tail))} if declare_length else {}
    return submit_raw(chunks, **headers)


def many_keys(n: int, where: str) -> bytes:
    keys = ",".join(f'"k{i}":0' for i in range(n))
    if where == "payload":
        return turbo(f'{{"prompt": "{PROMPT}", {keys}}}')
    return f'{{"model": "{TURBO}", "payload": {{"prompt": "{PROMPT}"}}, {keys}}}'.encode()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


PIXEL_BOMB = "data:image/png;base64," + base64.b64encode(png_header_claiming(50_000, 50_000)).decode()
PRIVATE = "private, loopback or link-local address"

TABLE: list[tuple[str, Hostile, Refusal]] = [
    # Size. The 100 MB rows come first, so the server's peak memory before them is its idle one.
    ("body-100MB-chunked", streamed(100 * MB, declare_length=False), Refusal(413, "payload_too_large", None, "limit")),
    ("body-100MB-declared", streamed(100 * MB, declare_length=True), Refusal(413, "payload_too_large", None, "limit")),
    (
        "prompt-20MB",
        submit_raw(lambda: json.dumps({"model": TURBO, "payload": {"prompt": "a" * (20 * MB)}}).encode()),
        Refusal(413, "payload_too_large", None, "limit"),
    ),
    (
        "payload-1M-unknown-keys",
        submit_raw(lambda: many_keys(1_000_000, "payload")),
        Refusal(400, "invalid_request", "payload.k0", "(and 999999 more)"),
    ),
    (
        "body-100k-unknown-fields",
        submit_raw(lambda: many_keys(100_000, "body")),
        Refusal(400, "invalid_request", "body", "has 100000 fields that are not allowed"),
    ),
    # Nesting: past the JSON reader's depth, past what a stored payload can hold, and inside a known field.
    (
        "nesting-100k-lists",
        submit_raw(lambda: turbo(f'{{"prompt": {nested(100_000)}}}')),
        Refusal(400, "invalid_request", "body", "nested too deeply"),
    ),
    (
        "nesting-300-with-idempotency-key",
        submit_raw(turbo(f'{{"prompt": "{PROMPT}", "x": {nested(300)}}}'), **{"Idempotency-Key": "deep"}),
        Refusal(400, "invalid_request", "payload", "250 levels"),
    ),
    (
        "nesting-900-in-prompt",
        submit_raw(turbo(f'{{"prompt": {nested(900)}}}')),
        Refusal(400, "invalid_request", "payload.prompt", "must be a string"),
    ),
    # Text that is not Unicode.
    (
        "invalid-utf8",
        submit_raw(turbo('{"prompt": "a fox "}').replace(b"fox ", b"fox \xff\xfe\xc3")),
        Refusal(400, "invalid_request", "body", "not UTF-8"),
    ),
    (
        "lone-surrogate-in-prompt",
        submit_raw(turbo(r'{"prompt": "a fox \ud800"}')),
        Refusal(400, "invalid_request", "payload.prompt", "lone surrogate"),
    ),
    (
        "lone-surrogate-as-key",
        submit_raw(turbo(r'{"prompt": "a fox", "\udfff": 1}')),
        Refusal(400, "invalid_request", "payload.\\udfff", "lone surrogate"),
    ),
    # Numbers JSON does not have, or that no field can hold.
    *(
        (
            f"cfg_scale-{name}",
            submit_raw(turbo(f'{{"prompt": "{PROMPT}", "cfg_scale": {literal}}}')),
            Refusal(400, "invalid_request", "payload.cfg_scale", "must be a number"),
        )
        for name, literal in [("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"), ("1e400", "1e400")]
    ),
    (
        "priority-NaN",
        submit_raw(f'{{"model": "{TURBO}", "payload": {{"prompt": "{PROMPT}"}}, "priority": NaN}}'.encode()),
        Refusal(400, "invalid_request", "priority", "finite"),
    ),
    (
        "priority-10**30",
        submit_json({"model": TURBO, "payload": {"prompt": PROMPT}, "priority": 10**30}),
        Refusal(400, "invalid_request", "priority", "must be at most 100"),
    ),
    (
        "integer-of-5000-digits",
        submit_raw(turbo(f'{{"prompt": "{PROMPT}", "duration": {"9" * 5000}}}')),
        Refusal(400, "invalid_request", "body", "number in it is too long"),
    ),
    (
        "integer-past-64-bits-with-idempotency-key",
        submit_raw(turbo(f'{{"prompt": "{PROMPT}", "x": {10**30}}}'), **{"Idempotency-Key": "big"}),
        Refusal(400, "invalid_request", "payload", "64-bit"),
    ),
    # Input images: the SSRF guard and the pixel cap.
    (
        "image-url-redirecting-to-metadata",
        turbo_image("http://HOST/redirect-to-metadata"),
        Refusal(400, "invalid_image", "payload.image", PRIVATE),
    ),
    (
        "image-host-resolving-to-loopback",
        turbo_image("http://localhost:PORT/portrait.png"),
        Refusal(400, "invalid_image", "payload.image", "localhost resolves to"),
    ),
    (
        "image-url-metadata-address",
        turbo_image("http://169.254.169.254/latest/meta-data/"),
        Refusal(400, "invalid_image", "payload.image", "link-local"),
    ),
    (
        "image-url-loopback-as-decimal",
        turbo_image("http://2130706433:PORT/portrait.png"),
        Refusal(400, "invalid_image", "payload.image", "loopback"),
    ),
    (
        "image-url-loopback-as-ipv4-mapped-ipv6",
        turbo_image("http://[::ffff:127.0.0.1]:PORT/portrait.png"),
        Refusal(400, "invalid_image", "payload.image", "loopback"),
    ),
    (
        "image-url-file-scheme",
        turbo_image("file:///etc/passwd"),
        Refusal(400, "invalid_request", "payload.image", "must be an http(s) URL"),
    ),
    (
        "image-pixel-bomb",
        turbo_image(PIXEL_BOMB),
        Refusal(400, "invalid_image", "payload.image", "at most 40 megapixels (got 50000x50000)"),
    ),
    # Shapes of the body.
    ("content-type-text-plain", submit_raw(b"model=x", "text/plain"), Refusal(415, "unsupported_media_type")),
    ("empty-body", submit_raw(b""), Refusal(400, "invalid_request", "body", "is required")),
    ("json-list", submit_raw(b"[1, 2, 3]"), Refusal(400, "invalid_request", "body", "must be a JSON object")),
    (
        "payload-a-string",
        submit_json({"model": TURBO, "payload": "a fox"}),
        Refusal(400, "invalid_request", "payload", "must be a JSON object"),
    ),
    (
        "unknown-top-level-field",
        submit_json({"model": TURBO, "payload": {"prompt": PROMPT}, "webhook": "x"}),
        Refusal(400, "invalid_request", "webhook", "is not a known field"),
    ),
    (
        "unknown-model",
        submit_json({"model": "kling-v9", "payload": {"prompt": PROMPT}}),
        Refusal(404, "not_found", None, "kling-v9"),
    ),
    (
        "model-id-of-10KB",
        submit_json({"model": "m" * 10_240, "payload": {"prompt": PROMPT}}),
        Refusal(400, "invalid_request", "model", "at most 128"),
    ),
    (
        "prompt-of-2501-chars",
        submit_json({"model": MASTER, "payload": {"prompt": "x" * 2501}}),
        Refusal(400, "invalid_request", "payload.prompt", "at most 2500"),
    ),
    # Reads.
    (
        "garbage-cursor",
        Hostile("GET", "/requests?cursor=%25%25not-a-cursor!!", content_type=None),
        Refusal(400, "invalid_request", "cursor", "not a cursor"),
    ),
    (
        "request-id-of-10KB",
        Hostile("GET", "/requests/" + "x" * 10_240, content_type=None),
        Refusal(404, "not_found", None, "does not exist"),
    ),
]


@dataclass
class Helper:
    """A loopback HTTP server: an image, and a redirect to the cloud metadata address; it counts its hits."""

    port: int = 0
    hits: Counter[str] = field(default_factory=Counter)


@pytest.fixture(scope="module")
def helper() -> Iterator[Helper]:
    state = Helper()
    # An image the checks would accept, so only the guard can be what refuses the rows that point here.
    buf = io.BytesIO()
    Image.new("RGB", (400, 400), (30, 120, 200)).save(buf, "PNG")
    png = buf.getvalue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits[self.path] += 1
            if self.path == "/redirect-to-metadata":
                self.send_response(302)
                self.send_header("Location", "http://169.254.169.254/latest/meta-data/iam/security-credentials/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = int(httpd.server_address[1])
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server as in production: private URLs refused; one worker, so accepted requests really run."""
    tmp: Path = tmp_path_factory.mktemp("hostile")
    with running_server(tmp, workers=1, VIDQUEUE_ALLOW_PRIVATE_URLS="0") as srv:
        yield srv


@pytest.fixture(scope="module")
def accepted(guarded: Server) -> list[dict[str, Any]]:
    """Requests accepted before any hostile input arrives."""
    with guarded.client() as api:
        return [submit(api, MASTER, {"prompt": f"{PROMPT} #{i}", "duration": "5"}) for i in range(2)]


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def assert_error_shape(resp: httpx.Response) -> dict[str, Any]:
    """The standard error body, and nothing in the text that looks like a traceback."""
    assert "Traceback" not in resp.text and 'File "' not in resp.text, resp.text[:2000]
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert set(body) == {"error", "code", "details"}, body
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["code"], str) and body["code"]
    assert isinstance(body["details"], list)
    for detail in body["details"]:
        assert set(detail) == {"field", "message"} and all(isinstance(v, str) for v in detail.values()), detail
    return dict(body)


@pytest.mark.parametrize(("name", "call", "expected"), TABLE, ids=[row[0] for row in TABLE])
def test_hostile_input_gets_a_clear_refusal_and_never_a_500(
    guarded: Server, accepted: list[dict[str, Any]], helper: Helper, name: str, call: Hostile, expected: Refusal
) -> None:
    assert guarded.proc is not None
    headers = dict(call.headers)
    if call.content_type is not None:
        headers["Content-Type"] = call.content_type
    content = call.body() if call.body is not None else None
    if isinstance(content, bytes):
        loopback = f"127.0.0.1:{helper.port}".encode()
        content = content.replace(b"http://HOST/", b"http://" + loopback + b"/").replace(
            b":PORT/", f":{helper.port}/".encode()
        )
    hits_before = sum(helper.hits.values())
    peak_before = peak_rss_kb(guarded.proc.pid)
    started = time.monotonic()
    with guarded.client() as api:
        resp = api.request(call.method, call.path, content=content, headers=headers, timeout=60)
    elapsed = time.monotonic() - started

    assert resp.status_code == expected.status, resp.text[:2000]
    body = assert_error_shape(resp)
    assert body["code"] == expected.code, body
    if expected.field is not None:
        assert expected.field in [d["field"] for d in body["details"]], body
    if expected.phrase is not None:
        assert expected.phrase in body["error"], body
    assert len(resp.content) < 64 * 1024, f"a {len(resp.content)} byte answer to {name}"
    assert elapsed < 30, f"{name} took {elapsed:.1f} s"
    assert sum(helper.hits.values()) == hits_before, "the server connected to a URL it must refuse"
    if name.startswith("body-100MB"):
        # Refused while reading: the body was never held in memory.
        grown_mb = (peak_rss_kb(guarded.proc.pid) - peak_before) / 1024
        assert grown_mb < 50, f"the server's peak memory grew by {grown_mb:.0f} MB"


def test_after_the_hostile_table_the_server_is_ready_and_nothing_accepted_is_lost(
    guarded: Server, accepted: list[dict[str, Any]]
) -> None:
    assert httpx.get(guarded.url + "/readyz", timeout=10).status_code == 200
    with guarded.client() as api:
        for original in accepted:
            done = wait_for(api, original["request_id"], timeout=120)
            assert done["status"] == "success", done
            assert done["payload"] == original["payload"]
        listed = api.get("/requests", params={"limit": 100}).json()
        # Every hostile row was refused: the only requests are the ones accepted before.
        assert sorted(r["request_id"] for r in listed["requests"]) == sorted(r["request_id"] for r in accepted)
        assert listed["total"] == len(accepted)
