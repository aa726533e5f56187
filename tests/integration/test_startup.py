"""What `vidqueue serve` tells the person who started it: where to go once it listens, and a busy port in one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import UPSTREAM_KEYS, fast_env, free_port, run_cli, stop_process


class Serve:
    """`vidqueue serve` with stdout and stderr kept apart, read line by line as they come."""

    def __init__(self, data_dir: Path, port: int, workers: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        cmd = [sys.executable, "-m", "vidqueue", "serve", "--port", str(port), "--data-dir", str(data_dir)]
        self.proc = subprocess.Popen(
            [*cmd, "--workers", str(workers)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**{k: v for k, v in os.environ.items() if k not in UPSTREAM_KEYS}, **fast_env()},
            start_new_session=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr), daemon=True).start()

    def _pump(self, stream: Iterator[str], into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def stdout_until(self, text: str, timeout: float = 60) -> list[str]:
        """stdout's lines up to the first that holds ``text`` (waiting for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = list(self.stdout)
            for i, line in enumerate(lines):
                if text in line:
                    return lines[: i + 1]
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} on stdout:\n{''.join(self.stdout)}{''.join(self.stderr)}")


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """A first run of `serve` (an empty data dir) with one worker."""
    server = Serve(tmp_path_factory.mktemp("serve") / "data", free_port(), workers=1)
    try:
        yield server
    finally:
        stop_process(server.proc)


def test_serve_prints_the_api_console_and_docs_urls_on_stdout_once_it_listens(serve: Serve) -> None:
    lines = serve.stdout_until("/docs")
    # Said once the server listens: the very next call is answered.
    assert httpx.get(serve.url + "/healthz", timeout=5).status_code == 200
    text = "".join(lines)
    assert f"{serve.url}\n" in text  # the API's base URL, as the SDK and CLI take it
    assert f"{serve.url}/ui/\n" in text
    assert f"{serve.url}/docs\n" in text
    assert "with 1 worker." in text
    assert "1 workers" not in text + "".join(serve.stderr)


def test_the_first_run_still_prints_the_new_key_alone_on_a_line_of_stdout(serve: Serve) -> None:
    lines = serve.stdout_until("/docs")
    keys = [line.strip() for line in lines if line.startswith("vq_")]
    assert len(keys) == 1
    resp = httpx.get(
        serve.url + "/api/v1/ie/requestqueue/apikey/models", headers={"Authorization": f"Bearer {keys[0]}"}
    )
    assert resp.status_code == 200


def test_the_root_redirects_to_the_console(serve: Serve) -> None:
    serve.stdout_until("/docs")
    resp = httpx.get(serve.url + "/", follow_redirects=False)
    assert resp.status_code in (302, 307), resp.text
    assert resp.headers["location"] == "/ui/"
    console = httpx.get(serve.url + "/", follow_redirects=True)
    assert console.status_code == 200
    assert console.url.path == "/ui/"
    assert "text/html" in console.headers["content-type"]


def assert_one_line_naming_the_port(out: subprocess.CompletedProcess[str], port: int) -> None:
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert str(port) in lines[0] and "--port" in lines[0] and "in use" in lines[0]
    assert "Traceback" not in out.stderr + out.stdout
    assert "started worker" not in out.stderr  # no worker was started before the port was tried
    assert out.stdout == ""


def test_a_busy_port_stops_serve_in_one_line_with_a_port_hint_before_any_worker(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        started = time.monotonic()
        out = run_cli("serve", "--port", str(port), "--data-dir", str(tmp_path / "data"), "--workers", "2")
    assert_one_line_naming_the_port(out, port)
    assert time.monotonic() - started < 30
    # Nothing was set up either: no store, no key printed.
    assert not (tmp_path / "data").exists()


def test_a_second_serve_on_the_same_port_is_refused_and_the_first_goes_on(serve: Serve, tmp_path: Path) -> None:
    serve.stdout_until("/docs")
    out = run_cli("serve", "--port", str(serve.port), "--data-dir", str(tmp_path / "data"), "--workers", "2")
    assert_one_line_naming_the_port(out, serve.port)
    assert httpx.get(serve.url + "/readyz", timeout=5).status_code == 200
