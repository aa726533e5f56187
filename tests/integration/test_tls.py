"""`vidqueue serve` on HTTPS (issue 18, part 3): a self-signed certificate, https media URLs, downloads over TLS."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import Server, decode_video, fast_env, free_port, run_cli, solid_png_b64, submit, wait_for

pytestmark = pytest.mark.slow


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (as `openssl req -x509` makes one), and its key."""
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def trust(pem: tuple[Path, Path]) -> ssl.SSLContext:
    """A client context that trusts the test certificate (and nothing else)."""
    return ssl.create_default_context(cafile=str(pem[0]))


def https_server(root: Path, pem: tuple[Path, Path], trust: ssl.SSLContext, *, by_env: bool) -> Server:
    """A server on HTTPS, given its certificate by flags or by VIDQUEUE_SSL_* variables."""
    cert, key = pem
    tls_env = {"VIDQUEUE_SSL_CERTFILE": str(cert), "VIDQUEUE_SSL_KEYFILE": str(key)} if by_env else {}
    flags = [] if by_env else ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
    return Server(
        data_dir=root / "data",
        port=free_port(),
        env=fast_env(**tls_env),
        workers=1,
        args=flags,
        scheme="https",
        verify=trust,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pem: tuple[Path, Path], trust: ssl.SSLContext) -> Iterator[Server]:
    srv = https_server(tmp_path_factory.mktemp("https"), pem, trust, by_env=False).start()
    try:
        yield srv
    finally:
        srv.stop()


def test_an_https_server_answers_https_media_urls_that_download_and_decode_over_tls(
    server: Server, trust: ssl.SSLContext
) -> None:
    with server.client() as api:
        created = submit(api, "kling-v2-5-turbo", {"prompt": "a lighthouse at dusk", "image": solid_png_b64()})
        done = wait_for(api, created["request_id"])
    assert done["status"] == "success", done
    prefix = f"https://127.0.0.1:{server.port}/"
    outcome = done["outcome"]
    urls = [outcome["video_url"], outcome["thumbnail_image_url"], *(m["url"] for m in outcome["media_urls"])]
    urls.append(done["payload"]["image"])  # the stored input image, as a signed URL too
    assert all(u.startswith(prefix) for u in urls), urls

    with httpx.Client(verify=trust, timeout=30) as tls:
        video = tls.get(outcome["video_url"])
        assert video.status_code == 200
        assert video.headers["content-type"] == "video/mp4"
        frames, width, height = decode_video(video.content)
        assert frames > 0 and width > 0 and height > 0
        assert tls.get(done["payload"]["image"]).content[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_https_server_refuses_plain_http_and_clients_that_do_not_trust_it(server: Server) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{server.port}/readyz", timeout=5)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{server.url}/readyz", timeout=5)


def test_the_certificate_can_come_from_vidqueue_ssl_variables(
    tmp_path: Path, pem: tuple[Path, Path], trust: ssl.SSLContext
) -> None:
    srv = https_server(tmp_path, pem, trust, by_env=True).start()
    try:
        with srv.client() as api:
            created = submit(api, "kling-v2-5-turbo", {"prompt": "a lighthouse at dawn", "duration": 5})
            done = wait_for(api, created["request_id"])
        assert done["outcome"]["video_url"].startswith(f"https://127.0.0.1:{srv.port}/media/")
    finally:
        srv.stop()


def test_a_certificate_that_does_not_load_stops_serve_with_one_line(tmp_path: Path, pem: tuple[Path, Path]) -> None:
    cert, key = pem
    base = ["serve", "--data-dir", str(tmp_path / "data"), "--port", str(free_port()), "--workers", "0"]
    missing = run_cli(*base, "--ssl-certfile", str(tmp_path / "nope.pem"), "--ssl-keyfile", str(key), env=fast_env())
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: cannot read the TLS certificate or key") and "nope.pem" in missing.stderr
    assert "Traceback" not in missing.stderr

    swapped = run_cli(*base, "--ssl-certfile", str(key), "--ssl-keyfile", str(cert), env=fast_env())
    assert swapped.returncode == 2
    assert swapped.stderr.startswith("error: the TLS certificate") and "Traceback" not in swapped.stderr

    alone = run_cli(*base, "--ssl-certfile", str(cert), env=fast_env())
    assert alone.returncode == 2
    assert "ssl_certfile and ssl_keyfile go together" in alone.stderr
