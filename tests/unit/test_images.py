"""Input images: decoding, checks by content, and the guarded URL fetch (against a real loopback server)."""

from __future__ import annotations

import base64
import contextlib
import http.server
import io
import ipaddress
import os
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.cases import png_header_claiming
from vidqueue.errors import InvalidImage
from vidqueue.media.images import CheckedImage, check_image, load_image
from vidqueue.media.netguard import BlockedAddress, blocked_reason, fetch, parse_networks


def png_bytes(width: int = 640, height: int = 480, colour: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(width: int = 640, height: int = 480) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 100, 50)).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def refusal(exc: pytest.ExceptionInfo[InvalidImage]) -> str:
    """The rule an InvalidImage names, checking it is about the image field."""
    (detail,) = exc.value.details
    assert detail.field == "payload.image"
    assert exc.value.code == "invalid_image"
    return detail.message


def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"no name should be resolved, got {host}")


class NoConnection(httpx.BaseTransport):
    """A transport that fails the test if anything is sent."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"no connection should be made, got {request.url}")


# --- checks by content ---


def test_a_png_passes_and_keeps_its_original_bytes() -> None:
    data = png_bytes(640, 480)
    image = check_image(data)
    assert image == CheckedImage(data=data, format="png", width=640, height=480, content_type="image/png")


def test_a_jpeg_passes_and_keeps_its_original_bytes() -> None:
    data = jpeg_bytes(300, 300)
    image = check_image(data)
    assert (image.data, image.format, image.width, image.height) == (data, "jpeg", 300, 300)
    assert image.content_type == "image/jpeg"
    assert image.extension == "jpg"


def test_sides_under_300_px_are_refused() -> None:
    with pytest.raises(InvalidImage) as exc:
        check_image(png_bytes(200, 400))
    assert refusal(exc) == "width and height must be at least 300 px (got 200x400)"
    assert "300 px" in exc.value.message


@pytest.mark.parametrize("size", [(751, 300), (300, 751), (1000, 300)])
def test_an_aspect_ratio_beyond_2_5_to_1_is_refused(size: tuple[int, int]) -> None:
    with pytest.raises(InvalidImage) as exc:
        check_image(png_bytes(*size))
    assert refusal(exc).startswith("aspect ratio must be between 1:2.5 and 2.5:1")


@pytest.mark.parametrize("size", [(750, 300), (300, 750)])
def test_an_aspect_ratio_of_exactly_2_5_is_accepted(size: tuple[int, int]) -> None:
    assert (check_image(png_bytes(*size)).width, check_image(png_bytes(*size)).height) == size


def test_a_gif_is_refused() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (400, 400), (1, 2, 3)).save(buf, "GIF")
    with pytest.raises(InvalidImage) as exc:
        check_image(buf.getvalue())
    assert refusal(exc) == "is not a JPEG or PNG image"


@pytest.mark.parametrize("data", [os.urandom(5000), b"just some text, named image.png", b""])
def test_bytes_that_are_not_an_image_are_refused(data: bytes) -> None:
    with pytest.raises(InvalidImage) as exc:
        check_image(data)
    assert refusal(exc) == "is not a JPEG or PNG image"


def test_a_png_signature_with_a_broken_header_is_refused() -> None:
    with pytest.raises(InvalidImage) as exc:
        check_image(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    assert refusal(exc).startswith("is not a JPEG or PNG image")


def test_an_image_over_the_byte_cap_is_refused() -> None:
    data = png_bytes(640, 480)
    with pytest.raises(InvalidImage) as exc:
        check_image(data, max_bytes=len(data) - 1)
    assert refusal(exc).startswith("must be at most")


def test_the_default_byte_cap_is_10_mb() -> None:
    with pytest.raises(InvalidImage) as exc:
        check_image(b"\xff\xd8\xff" + b"\x00" * (10 * 1024 * 1024))
    assert refusal(exc) == "must be at most 10 MB"


def test_a_pixel_bomb_is_refused_from_its_header_without_decoding() -> None:
    bomb = png_header_claiming(50_000, 50_000)
    assert len(bomb) < 200
    started = time.perf_counter()
    with pytest.raises(InvalidImage) as exc:
        check_image(bomb)
    assert time.perf_counter() - started < 0.5
    assert refusal(exc) == "must be at most 40 megapixels (got 50000x50000)"


def test_an_image_past_pillows_own_bomb_limit_is_refused_without_a_warning() -> None:
    # 100 MP is over Pillow's warning threshold (~89 MP); pytest turns any warning into an error here.
    with pytest.raises(InvalidImage) as exc:
        check_image(png_header_claiming(10_000, 10_000))
    assert "megapixels" in refusal(exc)


def test_a_header_that_lies_about_a_small_canvas_is_refused_on_decode() -> None:
    with pytest.raises(InvalidImage) as exc:
        check_image(png_header_claiming(400, 400))
    assert refusal(exc) == "could not be decoded: the file is truncated or corrupt"


@pytest.mark.parametrize("make", [png_bytes, jpeg_bytes])
def test_a_truncated_file_is_refused(make: object) -> None:
    data = make(800, 600)  # type: ignore[operator]
    with pytest.raises(InvalidImage) as exc:
        check_image(data[: len(data) // 2])
    assert refusal(exc) == "could not be decoded: the file is truncated or corrupt"


# --- base64 and data: URIs ---


def test_raw_base64_is_accepted() -> None:
    data = png_bytes()
    assert load_image(base64.b64encode(data).decode()).data == data


def test_a_data_uri_is_accepted() -> None:
    data = jpeg_bytes()
    assert load_image("data:image/jpeg;base64," + base64.b64encode(data).decode()).data == data


def test_base64_with_newlines_and_spaces_is_accepted() -> None:
    data = png_bytes()
    wrapped = base64.encodebytes(data).decode()  # 76-character lines
    assert "\n" in wrapped
    assert load_image("  " + wrapped.replace("\n", "\r\n ")).data == data
    assert load_image("data:image/png;base64,\n" + wrapped).data == data


def test_url_safe_base64_without_padding_is_accepted() -> None:
    data = png_bytes(641, 480)
    assert load_image(base64.urlsafe_b64encode(data).decode().rstrip("=")).data == data


def test_the_data_uri_type_does_not_matter_the_content_does() -> None:
    data = png_bytes()
    image = load_image("data:image/jpeg;base64," + base64.b64encode(data).decode())
    assert image.format == "png"


@pytest.mark.parametrize("value", ["not base64 at all!", "%%%%", "QUJD$", "a"])
def test_invalid_base64_is_refused(value: str) -> None:
    with pytest.raises(InvalidImage) as exc:
        load_image(value)
    message = refusal(exc)
    assert "base64" in message


def test_a_data_uri_that_is_not_base64_is_refused() -> None:
    with pytest.raises(InvalidImage) as exc:
        load_image("data:image/png,rawbytes")
    assert refusal(exc).startswith("must be base64-encoded")


def test_base64_of_a_gif_is_refused() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (400, 400)).save(buf, "GIF")
    with pytest.raises(InvalidImage) as exc:
        load_image(base64.b64encode(buf.getvalue()).decode())
    assert refusal(exc) == "is not a JPEG or PNG image"


def test_oversized_base64_is_refused_before_it_is_decoded() -> None:
    with pytest.raises(InvalidImage) as exc:
        load_image("A" * (4 * 1024 * 1024), max_bytes=1024 * 1024)
    assert refusal(exc) == "must be at most 1 MB"


@pytest.mark.parametrize("value", ["file:///etc/passwd", "ftp://example.com/a.png", "gopher://x/", ""])
def test_other_schemes_and_empty_values_are_refused(value: str) -> None:
    with pytest.raises(InvalidImage) as exc:
        load_image(value, transport=NoConnection(), resolver=no_dns)
    assert "http" in refusal(exc)


# --- the address guard ---


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"],
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "127.0.0.1",
        "169.254.169.254",
        "0.0.0.0",
        "100.64.0.1",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "64:ff9b::a9fe:a9fe",
    ],
)
def test_private_loopback_link_local_and_special_addresses_are_blocked(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/a.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/a.png",
        "http://[fe80::1]/a.png",
        "http://0.0.0.0/a.png",
        "http://[::ffff:127.0.0.1]/a.png",
        "https://127.0.0.1:8443/a.png",
    ],
)
def test_literal_private_addresses_are_refused_without_any_connection(url: str) -> None:
    with pytest.raises(InvalidImage) as exc:
        load_image(url, transport=NoConnection(), resolver=no_dns)
    assert refusal(exc).startswith("points to a private, loopback or link-local address, which is not allowed")


def test_numeric_host_forms_are_checked_as_what_they_connect_to() -> None:
    # "2130706433" and "127.1" are 127.0.0.1 to the socket layer.
    for url in ("http://2130706433/a.png", "http://127.1/a.png"):
        with pytest.raises(InvalidImage) as exc:
            load_image(url, transport=NoConnection())
        assert "not allowed" in refusal(exc)


def test_a_name_that_resolves_to_loopback_is_refused() -> None:
    with pytest.raises(InvalidImage) as exc:
        load_image("http://localhost/a.png", transport=NoConnection())
    assert "not allowed" in refusal(exc)


def test_a_name_with_any_private_answer_is_refused() -> None:
    def mixed(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.1.2.3"]

    with pytest.raises(InvalidImage) as exc:
        load_image("http://images.example/a.png", transport=NoConnection(), resolver=mixed)
    assert "10.1.2.3" in refusal(exc)


def test_an_unresolvable_host_is_reported() -> None:
    def nxdomain(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(InvalidImage) as exc:
        load_image("http://nowhere.invalid/a.png", transport=NoConnection(), resolver=nxdomain)
    assert refusal(exc).startswith("could not be fetched")


def test_the_connection_goes_to_the_vetted_address_with_the_name_as_host_and_sni() -> None:
    seen: list[httpx.Request] = []
    data = png_bytes()

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=data, headers={"content-type": "image/png"})

    image = load_image(
        "https://images.example/cat.png?size=big",
        transport=httpx.MockTransport(handler),
        resolver=lambda host, port: ["93.184.216.34"],
    )
    assert image.data == data
    (request,) = seen
    assert request.url.host == "93.184.216.34"
    assert request.url.raw_path == b"/cat.png?size=big"
    assert request.headers["host"] == "images.example"
    assert request.extensions["sni_hostname"] == "images.example"
    assert "cookie" not in request.headers


def test_a_redirect_to_a_private_address_is_refused_before_following_it() -> None:
    seen: list[str] = []
    names = {"images.example": "93.184.216.34", "metadata.internal": "169.254.169.254"}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"location": "http://metadata.internal/latest/meta-data/"})

    with pytest.raises(InvalidImage) as exc:
        load_image(
            "http://images.example/a.png",
            transport=httpx.MockTransport(handler),
            resolver=lambda host, port: [names[host]],
        )
    assert "metadata.internal resolves to 169.254.169.254" in refusal(exc)
    assert seen == ["http://93.184.216.34/a.png"]


# --- a real loopback server ---


class Handler(http.server.BaseHTTPRequestHandler):
    png = png_bytes(640, 480)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean

    def _send(self, status: int, body: bytes = b"", content_type: str = "image/png", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up, as timeout tests want
            self._route()

    def _route(self) -> None:
        path = self.path
        if path == "/ok.png":
            self._send(200, self.png)
        elif path == "/host":
            self._send(200, self.headers.get("Host", "").encode(), "text/plain")
        elif path == "/as-text":
            self._send(200, self.png, "text/plain")
        elif path == "/text.png":
            self._send(200, b"I am not a picture", "image/png")
        elif path == "/missing.png":
            self._send(404, b"not here", "text/plain")
        elif path == "/redirect-relative":
            self._send(302, location="/ok.png")
        elif path.startswith("/redirect-to/"):
            self._send(302, location=path[len("/redirect-to/") :])
        elif path == "/loop":
            self._send(302, location="/loop")
        elif path == "/cookie":
            self._send(302, location="/no-cookie-wanted", set_cookie="session=abc; Path=/")
        elif path == "/no-cookie-wanted":
            if "Cookie" in self.headers:
                self._send(400, b"cookie was sent", "text/plain")
            else:
                self._send(200, self.png)
        elif path == "/big":
            self._send(200, b"\x89PNG\r\n\x1a\n" + b"\x00" * (2 * 1024 * 1024))
        elif path == "/big-unsized":
            # HTTP/1.0 without Content-Length: the body runs until the connection closes.
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"\x00" * 65536)
        elif path == "/slow-body":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"\x00")
                self.wfile.flush()
                time.sleep(0.05)
        elif path == "/slow-headers":
            for char in b"HTTP/1.0 200 OK\r\nContent-Type: image/png\r\nX-Padding: " + b"x" * 100:
                self.wfile.write(bytes([char]))
                self.wfile.flush()
                time.sleep(0.05)
        else:
            self._send(404, b"", "text/plain")


class QuietServer(http.server.ThreadingHTTPServer):
    """A threaded test server that does not print the errors of clients that hang up on purpose."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_an_image_url_on_loopback_is_fetched_when_private_addresses_are_allowed(server: str) -> None:
    image = load_image(f"{server}/ok.png", allow_private=True)
    assert image.data == Handler.png
    assert image.format == "png"


def test_the_same_loopback_url_is_refused_by_default(server: str) -> None:
    with pytest.raises(InvalidImage) as exc:
        load_image(f"{server}/ok.png")
    assert refusal(exc).startswith("points to a private, loopback or link-local address")


def test_a_name_is_fetched_from_the_address_it_was_vetted_at(server: str) -> None:
    port = server.rsplit(":", 1)[1]
    fetched = fetch(
        f"http://images.vidqueue.test:{port}/host",
        allow_private=True,
        resolver=lambda host, port: ["127.0.0.1"],
    )
    assert fetched.data == f"images.vidqueue.test:{port}".encode()


def test_content_decides_not_the_content_type(server: str) -> None:
    assert load_image(f"{server}/as-text", allow_private=True).format == "png"
    with pytest.raises(InvalidImage) as exc:
        load_image(f"{server}/text.png", allow_private=True)
    assert refusal(exc) == "is not a JPEG or PNG image"


def test_an_http_error_is_reported(server: str) -> None:
    with pytest.raises(InvalidImage) as exc:
        load_image(f"{server}/missing.png", allow_private=True)
    assert refusal(exc) == "could not be fetched: the server answered HTTP 404"


def test_redirects_are_followed(server: str) -> None:
    assert load_image(f"{server}/redirect-relative", allow_private=True).data == Handler.png


def test_a_redirect_loop_stops_after_5_hops(server: str) -> None:
    with pytest.raises(InvalidImage) as exc:
        load_image(f"{server}/loop", allow_private=True)
    assert refusal(exc) == "could not be fetched: more than 5 redirects"


def test_cookies_are_not_carried_across_redirects(server: str) -> None:
    assert load_image(f"{server}/cookie", allow_private=True).data == Handler.png


def test_a_redirect_from_an_allowed_host_to_a_private_address_is_refused(server: str) -> None:
    loopback_only = parse_networks(["127.0.0.1/32"])
    # The allowed loopback host itself is fine...
    assert fetch(f"{server}/ok.png", allowed_networks=loopback_only).data == Handler.png
    # ...but where it redirects is checked again, before any connection (10.0.0.1 would hang, not refuse).
    started = time.perf_counter()
    with pytest.raises(BlockedAddress, match=r"10\.0\.0\.1 is private"):
        fetch(f"{server}/redirect-to/http://10.0.0.1/a.png", allowed_networks=loopback_only)
    with pytest.raises(BlockedAddress, match=r"169\.254\.169\.254 is link-local"):
        fetch(f"{server}/redirect-to/http://169.254.169.254/", allowed_networks=loopback_only)
    assert time.perf_counter() - started < 1.0


def test_a_redirect_to_another_scheme_is_refused(server: str) -> None:
    with pytest.raises(InvalidImage) as exc:
        load_image(f"{server}/redirect-to/file:///etc/passwd", allow_private=True)
    assert refusal(exc) == "must use http or https"


def test_a_body_over_the_cap_is_refused(server: str) -> None:
    with pytest.raises(InvalidImage) as exc:
        load_image(f"{server}/big", allow_private=True, max_bytes=1024 * 1024)
    assert refusal(exc) == "must be at most 1 MB"


def test_a_body_over_the_cap_without_a_length_is_cut_off(server: str) -> None:
    with pytest.raises(InvalidImage) as exc:
        load_image(f"{server}/big-unsized", allow_private=True, max_bytes=1024 * 1024)
    assert refusal(exc) == "must be at most 1 MB"


@pytest.mark.parametrize("path", ["/slow-body", "/slow-headers"])
def test_a_slow_server_fails_within_the_deadline(server: str, path: str) -> None:
    # Each byte arrives well within any per-read timeout; only a total deadline stops this.
    started = time.perf_counter()
    with pytest.raises(InvalidImage) as exc:
        load_image(f"{server}{path}", allow_private=True, timeout_s=0.6)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.6 + 0.5
    assert refusal(exc) == "could not be fetched within 0.6 s"


# --- https: the vetted address is dialled, the certificate is checked against the name ---


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=images.vidqueue.test",
            "-addext", "subjectAltName=DNS:images.vidqueue.test",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    httpd = QuietServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield str(httpd.server_address[1]), cert
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_https_to_a_vetted_address_verifies_the_certificate_for_the_name(tls_server: tuple[str, Path]) -> None:
    port, cert = tls_server
    trust = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=str(cert)))
    image = load_image(
        f"https://images.vidqueue.test:{port}/ok.png",
        allow_private=True,
        transport=trust,
        resolver=lambda host, port: ["127.0.0.1"],
    )
    assert image.data == Handler.png


def test_https_with_a_name_the_certificate_does_not_cover_fails(tls_server: tuple[str, Path]) -> None:
    port, cert = tls_server
    trust = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=str(cert)))
    with pytest.raises(InvalidImage) as exc:
        load_image(
            f"https://other.vidqueue.test:{port}/ok.png",
            allow_private=True,
            transport=trust,
            resolver=lambda host, port: ["127.0.0.1"],
        )
    assert refusal(exc).startswith("could not be fetched")
    assert "certificate" in refusal(exc).lower()


def test_a_slow_https_server_fails_within_the_deadline(tls_server: tuple[str, Path]) -> None:
    port, cert = tls_server
    trust = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=str(cert)))
    started = time.perf_counter()
    with pytest.raises(InvalidImage) as exc:
        load_image(
            f"https://images.vidqueue.test:{port}/slow-headers",
            allow_private=True,
            timeout_s=0.6,
            transport=trust,
            resolver=lambda host, port: ["127.0.0.1"],
        )
    assert time.perf_counter() - started < 0.6 + 0.5
    assert refusal(exc) == "could not be fetched within 0.6 s"
