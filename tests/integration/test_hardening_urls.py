"""URLs the server is handed (``payload.image``, ``callback_url``): bad host names, and HTTPS behind a private CA.

- A host that is not a valid name (malformed IDNA such as ``xn--``, an empty label, a label over 63 characters, a
  name over 253) is a 400 naming the field, never a 500 from an IDNA error escaping the URL check; so is an image
  URL that redirects to such a host or to a URL that does not parse.
- Image URLs and webhooks over HTTPS trust what the system trusts, ``SSL_CERT_FILE`` included: with it pointing at
  a private CA an image served on loopback with that CA's certificate is fetched (and the request succeeds), and
  the webhook reaches a receiver with such a certificate; without it the same submit is a 400 naming
  ``payload.image`` that says the certificate is not trusted.

Both servers allow private URLs (the TLS helper is on loopback); host names are refused before any lookup, so that
changes nothing for them.
"""

from __future__ import annotations

import datetime
import http.server
import io
import ipaddress
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image

from tests.cases import MASTER, PROMPT, TURBO
from tests.support import Server, running_server, submit, wait_for

pytestmark = pytest.mark.slow

BAD_HOSTS: list[tuple[str, str]] = [
    ("xn--", "http://xn--/"),
    ("xn--ls8h.xn--", "http://xn--ls8h.xn--/"),
    ("xn--zz", "https://xn--zz.example/cat.png"),
    ("disallowed-codepoint", "http://xn--ls8h.example/"),
    ("label-of-64", "http://" + "a" * 64 + ".example/cat.png"),
    ("name-of-300", "http://" + ("a" * 59 + ".") * 5 + "example/"),
    ("empty-label", "http://a..b/"),
    ("leading-dot", "http://.example/"),
    ("space-in-host", "http://exa mple.com/"),
    ("port-out-of-range", "http://example.com:99999/"),
]


# -- a private CA, and an HTTPS helper on loopback with a certificate it signed ----------------------------------


LOOPBACK = ipaddress.IPv4Address("127.0.0.1")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    """A private CA (its certificate written to ca.pem) and a server certificate for 127.0.0.1 signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("vidqueue test CA"))
        .issuer_name(_name("vidqueue test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(LOOPBACK)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_path, cert_path, key_path


@dataclass
class TlsHelper:
    """An HTTPS server on loopback: a PNG, redirects to a given Location, and a webhook receiver."""

    port: int = 0
    ca: Path = Path()
    hits: Counter[str] = field(default_factory=Counter)
    hooks: list[dict[str, Any]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsHelper]:
    folder = tmp_path_factory.mktemp("pki")
    ca, cert, key = make_ca_and_server_cert(folder)
    state = TlsHelper(ca=ca)
    buf = io.BytesIO()
    Image.new("RGB", (480, 360), (200, 90, 40)).save(buf, "PNG")
    png = buf.getvalue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits[self.path] += 1
            parts = urlsplit(self.path)
            if parts.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", parse_qs(parts.query)["to"][0])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.hooks.append({"path": self.path, "headers": dict(self.headers), "body": body})
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # The handshake runs at accept(); a client that refuses the certificate fails it there, which the
    # server shrugs off (an OSError from get_request) and goes on serving.
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    state.port = int(httpd.server_address[1])
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def trusting(tls: TlsHelper, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with SSL_CERT_FILE naming the private CA; one worker, so requests really run."""
    tmp: Path = tmp_path_factory.mktemp("trusting")
    with running_server(tmp, workers=1, SSL_CERT_FILE=str(tls.ca), VIDQUEUE_ALLOW_PRIVATE_URLS="1") as srv:
        yield srv


@pytest.fixture(scope="module")
def untrusting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that trusts only the system store (no SSL_CERT_FILE or SSL_CERT_DIR from this environment)."""
    tmp: Path = tmp_path_factory.mktemp("untrusting")
    with ExitStack() as stack:
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        patch.delenv("SSL_CERT_FILE", raising=False)
        patch.delenv("SSL_CERT_DIR", raising=False)
        srv = stack.enter_context(running_server(tmp, workers=0, VIDQUEUE_ALLOW_PRIVATE_URLS="1"))
        patch.undo()  # the server took its environment at start
        yield srv


def refusal(resp: httpx.Response, field_name: str, code: str) -> str:
    """Assert a 400 in the standard error shape naming ``field_name``; answer the field's message."""
    assert resp.status_code == 400, resp.text[:2000]
    assert "Traceback" not in resp.text and 'File "' not in resp.text, resp.text[:2000]
    body = resp.json()
    assert set(body) == {"error", "code", "details"}, body
    assert body["code"] == code, body
    messages = {d["field"]: d["message"] for d in body["details"]}
    assert field_name in messages, body
    return str(messages[field_name])


# -- host names ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "url"), BAD_HOSTS, ids=[row[0] for row in BAD_HOSTS])
def test_a_bad_host_name_as_image_url_is_a_400_naming_payload_image(untrusting: Server, name: str, url: str) -> None:
    with untrusting.client() as api:
        resp = api.post("/requests", json={"model": TURBO, "payload": {"prompt": PROMPT, "image": url}})
    if name == "space-in-host":  # not even a URL to the payload's own check, which answers first
        assert "must be an http(s) URL" in refusal(resp, "payload.image", "invalid_request")
        return
    message = refusal(resp, "payload.image", "invalid_image")
    expected = "invalid port" if name == "port-out-of-range" else "has an invalid host name"
    assert expected in message, message


@pytest.mark.parametrize(("name", "url"), BAD_HOSTS, ids=[row[0] for row in BAD_HOSTS])
def test_a_bad_host_name_as_callback_url_is_a_400_naming_callback_url(untrusting: Server, name: str, url: str) -> None:
    with untrusting.client() as api:
        resp = api.post("/requests", json={"model": MASTER, "payload": {"prompt": PROMPT}, "callback_url": url})
    message = refusal(resp, "callback_url", "invalid_request")
    expected = "invalid port" if name == "port-out-of-range" else "has an invalid host name"
    assert expected in message, message


@pytest.mark.parametrize(
    ("location", "phrase"),
    [
        ("http://xn--/cat.png", "invalid url"),
        ("http://xn--ls8h.example/", "invalid url"),
        ("http://a..b/cat.png", "empty label"),
        ("http://[::1", "invalid url"),
        ("http://\u00e9x.xn--/", "invalid url"),
    ],
)
def test_a_redirect_to_a_bad_url_is_a_400_naming_payload_image(
    trusting: Server, tls: TlsHelper, location: str, phrase: str
) -> None:
    image = str(httpx.URL(tls.url("/redirect"), params={"to": location}))
    with trusting.client() as api:
        resp = api.post("/requests", json={"model": TURBO, "payload": {"prompt": PROMPT, "image": image}})
    message = refusal(resp, "payload.image", "invalid_image")
    assert phrase in message.lower(), message


# -- a private certificate authority ----------------------------------------------------------------------------


def test_with_ssl_cert_file_an_image_and_a_webhook_behind_a_private_ca_go_through(
    trusting: Server, tls: TlsHelper
) -> None:
    before = tls.hits["/still.png"]
    with trusting.client() as api:
        resp = api.post(
            "/requests",
            json={
                "model": TURBO,
                "payload": {"prompt": PROMPT, "image": tls.url("/still.png"), "duration": "5"},
                "callback_url": tls.url("/hook"),
            },
        )
        assert resp.status_code == 200, resp.text
        assert tls.hits["/still.png"] == before + 1
        done = wait_for(api, resp.json()["request_id"], timeout=120)
    assert done["status"] == "success", done
    assert done["outcome"]["video_url"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(b'"success"' in h["body"] for h in tls.hooks):
        time.sleep(0.1)
    assert any(h["path"] == "/hook" and b'"success"' in h["body"] for h in tls.hooks), tls.hooks


def test_without_ssl_cert_file_the_same_image_is_a_400_saying_the_certificate_is_not_trusted(
    untrusting: Server, tls: TlsHelper
) -> None:
    with untrusting.client() as api:
        payload = {"prompt": PROMPT, "image": tls.url("/still.png")}
        resp = api.post("/requests", json={"model": TURBO, "payload": payload})
        message = refusal(resp, "payload.image", "invalid_image")
        assert "certificate is not trusted" in message, message
        # The server is fine afterwards.
        assert submit(api, MASTER, {"prompt": PROMPT})["status"] == "queued"
