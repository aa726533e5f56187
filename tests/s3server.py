"""A real S3-compatible server on a loopback port for tests: moto's server, run as a subprocess.

    with S3Server() as s3:                      # or the session fixture: def test_x(s3_server: S3Server)
        s3.make_bucket("media")
        S3Storage("media", endpoint_url=s3.endpoint_url)

Code under test finds credentials through boto3's standard chain, so they travel in the environment: ``CREDENTIALS``
(also ``S3Server.env``, for subprocesses) holds the values; the ``s3_server`` fixture sets them for the session.
A test module picks the fixture up with ``from tests.s3server import s3_server_fixture  # noqa: F401`` and asks
for ``s3_server`` (the function has another name than the fixture so that ruff's F811 stays quiet), or a
conftest lists ``pytest_plugins = ["tests.s3server"]``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import boto3
import httpx
import pytest
from botocore.config import Config

from tests.support import free_port

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Ambient AWS settings that would override or confuse the test credentials and endpoint.
AMBIENT = (
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


class S3Server:
    """moto's S3-compatible server on 127.0.0.1, started in a fresh temporary folder."""

    def __init__(self, host: str = "127.0.0.1", startup_timeout_s: float = 30.0) -> None:
        self.host = host
        self.port = 0
        self.startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._workdir: Path | None = None

    @property
    def endpoint_url(self) -> str:
        """The server's base URL, e.g. ``http://127.0.0.1:54321``."""
        if not self.port:
            raise RuntimeError("the S3 server is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that give a process (or a subprocess) credentials this server accepts."""
        env = dict(CREDENTIALS)
        if self._workdir is not None:
            # No profile file of the machine running the tests may change regions, endpoints or credentials.
            env["AWS_CONFIG_FILE"] = str(self._workdir / "aws-config")
            env["AWS_SHARED_CREDENTIALS_FILE"] = str(self._workdir / "aws-credentials")
        env["AWS_EC2_METADATA_DISABLED"] = "true"
        return env

    @property
    def log(self) -> str:
        """What the server has printed so far."""
        if self._workdir is None:
            return ""
        path = self._workdir / "moto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> S3Server:
        """Start the server and wait until it answers HTTP; raises RuntimeError (with its log) if it does not."""
        if self._proc is not None:
            return self
        self._workdir = Path(tempfile.mkdtemp(prefix="s3server-"))
        last_error = ""
        # Another process may grab the free port between our probe and the server's bind; try a few.
        for _ in range(3):
            self.port = free_port()
            self._log = (self._workdir / "moto.log").open("ab")
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
                cwd=self._workdir,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
            if self._wait_ready():
                return self
            last_error = self.log
            self._terminate()
        self.stop()
        raise RuntimeError(f"moto's S3 server did not start; its output:\n{last_error[-4000:]}")

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        self._terminate()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self.port = 0

    def client(self, **kwargs: Any) -> Any:
        """A boto3 S3 client for this server with the test credentials (path-style, SigV4)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
            **kwargs,
        )

    def make_bucket(self, name: str) -> str:
        """Create the bucket ``name`` (no error if it exists) and return its name."""
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)
        return name

    def reset(self) -> None:
        """Forget every bucket and object (moto's reset endpoint)."""
        httpx.post(f"{self.endpoint_url}/moto-api/reset", timeout=10, trust_env=False).raise_for_status()

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _wait_ready(self) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                httpx.get(f"{self.endpoint_url}/", timeout=1, trust_env=False)
                return True
            except httpx.TransportError:
                time.sleep(0.05)
        return False

    def _terminate(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout=5)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


@pytest.fixture(scope="session", name="s3_server")
def s3_server_fixture() -> Iterator[S3Server]:
    """One S3 server for the session, with its credentials in this process's environment while it runs."""
    with S3Server() as server, pytest.MonkeyPatch.context() as env:
        for name in AMBIENT:
            env.delenv(name, raising=False)
        for name, value in server.env.items():
            env.setenv(name, value)
        yield server
