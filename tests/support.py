"""Helpers for tests that run the real server: start it on a loopback port, call it, wait on requests."""

from __future__ import annotations

import io
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import httpx

BASE = "/api/v1/ie/requestqueue/apikey"
# Credentials that would route models to a real upstream; a test server gets them only when a test gives them.
UPSTREAM_KEYS = ("KLING_ACCESS_KEY", "KLING_SECRET_KEY", "GMI_API_KEY")
SDK_BASE = "/api/v1/ie/requestqueue"
TERMINAL = {"success", "failed", "cancelled"}


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fast_env(**extra: str) -> dict[str, str]:
    """Settings that make a test server quick to react (short leases, polls and progress intervals)."""
    env = {
        "VIDQUEUE_LEASE_S": "4",
        "VIDQUEUE_HEARTBEAT_S": "1",
        "VIDQUEUE_POLL_INTERVAL_S": "0.1",
        "VIDQUEUE_PROGRESS_INTERVAL_S": "0.2",
        "VIDQUEUE_SWEEP_INTERVAL_S": "0.5",
        "VIDQUEUE_ALLOW_PRIVATE_URLS": "1",
        # Stop at once: no drain, and running requests handed straight back (test_shutdown sets both itself).
        "VIDQUEUE_DRAIN_S": "0",
        "VIDQUEUE_SHUTDOWN_GRACE_S": "0",
    }
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, inherit: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run `vidqueue …` as a subprocess, with ``env`` over this process's environment (or alone: ``inherit=False``)."""
    inherited = {k: v for k, v in os.environ.items() if k not in UPSTREAM_KEYS} if inherit else {}
    full_env = {**inherited, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "vidqueue", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def stop_process(proc: subprocess.Popen[str] | None, timeout: float = 20) -> None:
    """SIGTERM a process started in its own session; SIGKILL its whole group if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@dataclass
class Server:
    """A `vidqueue serve` subprocess."""

    data_dir: Path
    port: int
    env: dict[str, str]
    workers: int = 2
    proc: subprocess.Popen[str] | None = None
    key: str | None = None
    output: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)  # more `vidqueue serve` flags
    # For a server on HTTPS: "https", and the context that trusts its certificate.
    scheme: str = "http"
    verify: ssl.SSLContext | bool = True

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> Server:
        """Start the server and wait until it answers /readyz."""
        cmd = [
            sys.executable,
            "-m",
            "vidqueue",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--workers",
            str(self.workers),
            *self.args,
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**{k: v for k, v in os.environ.items() if k not in UPSTREAM_KEYS}, **self.env},
            start_new_session=True,  # its own process group, so a test can kill the server and its workers
        )
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + "".join(self.output))
            try:
                if httpx.get(self.url + "/readyz", timeout=1, verify=self.verify).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError("server did not become ready:\n" + "".join(self.output))
        # serve prints the first-run key before its "is ready" lines, on the same pipe; a reader thread collects
        # them, and under load it can lag behind /readyz: wait for the ready line, so a key printed is a key read.
        while time.monotonic() < deadline and not any(line.startswith("vidqueue is ready") for line in self.output):
            time.sleep(0.02)
        for line in list(self.output):
            if line.startswith("vq_"):
                self.key = line.strip()
        return self

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def log(self) -> str:
        """Everything the server (and its workers) printed so far."""
        return "".join(self.output)

    def wait_for_log(self, fragment: str, count: int = 1, timeout: float = 10) -> int:
        """Wait until ``count`` lines hold ``fragment`` (log lines are written in batches); answer how many do."""
        deadline = time.monotonic() + timeout
        while True:
            seen = sum(1 for line in list(self.output) if fragment in line)
            if seen >= count or time.monotonic() > deadline:
                return seen
            time.sleep(0.05)

    def worker_pids(self) -> list[int]:
        """Pids of the server's worker processes (its children)."""
        assert self.proc is not None
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False)
        return [int(p) for p in out.stdout.split()]

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL of the group)."""
        stop_process(self.proc)

    def kill(self) -> None:
        """SIGKILL the server and every process in its group (workers too)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def client(self, key: str | None = None, base: str = BASE, **headers: str) -> httpx.Client:
        """An HTTP client for the API under a base path, authenticated with ``key`` (default: the first key)."""
        auth = {"Authorization": f"Bearer {key or self.key}"} if (key or self.key) else {}
        return httpx.Client(base_url=self.url + base, headers={**auth, **headers}, timeout=30, verify=self.verify)

    def create_key(self, org: str) -> str:
        """A new key for an organisation, made with `vidqueue keys create` against the running server's data."""
        out = run_cli("keys", "create", "--org", org, "--data-dir", str(self.data_dir), env=self.env)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()[-1]


@dataclass
class WorkerProcess:
    """A `vidqueue worker` subprocess: a worker alone, as on a machine of its own."""

    data_dir: Path
    env: dict[str, str]
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)

    def start(self, timeout: float = 60) -> WorkerProcess:
        """Start the worker and wait until it says it is ready."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vidqueue", "worker", "--data-dir", str(self.data_dir), *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**{k: v for k, v in os.environ.items() if k not in UPSTREAM_KEYS}, **self.env},
            start_new_session=True,
        )
        ready = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                if " ready for " in line:
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("worker did not start:\n" + "".join(self.output))
        return self

    @property
    def worker_id(self) -> str:
        """The id the worker claims under (as `worker_id_for` makes it)."""
        from vidqueue.worker.supervisor import worker_id_for

        assert self.proc is not None
        return worker_id_for(self.proc.pid)

    def kill(self) -> None:
        """SIGKILL the worker, as a machine that dies would."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        """Stop the worker (SIGTERM; SIGKILL if it lingers)."""
        stop_process(self.proc)


def decode_video(data: bytes) -> tuple[int, int, int]:
    """Decode an MP4 fully: (frames, width, height)."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, stream.codec_context.width, stream.codec_context.height


@contextmanager
def running_server(tmp: Path, workers: int = 2, **env: str) -> Iterator[Server]:
    """A started server in ``tmp``, stopped afterwards."""
    server = Server(data_dir=tmp / "data", port=free_port(), env=fast_env(**env), workers=workers)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def diffusers_server(root: Path, config: Path, lease_s: int = 30) -> Iterator[Server]:
    """A server with one worker on the diffusers ``config`` (tiny local pipelines), the hub offline."""
    env = {"VIDQUEUE_CONFIG": str(config), "HF_HUB_OFFLINE": "1", "VIDQUEUE_LEASE_S": str(lease_s)}
    with running_server(root, workers=1, **env) as server:
        yield server


def solid_png_b64(width: int = 400, height: int = 320) -> str:
    """A one-colour PNG as base64, as a payload's ``image`` carries it."""
    import base64

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 140, 200)).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def wait_for(
    client: httpx.Client, request_id: str, statuses: set[str] = TERMINAL, timeout: float = 60
) -> dict[str, Any]:
    """Poll a request until its status is one of ``statuses``."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        resp = client.get(f"/requests/{request_id}")
        assert resp.status_code == 200, resp.text
        body = resp.json()
        if body["status"] in statuses:
            return body
        time.sleep(0.05)
    raise AssertionError(f"request {request_id} still {body.get('status')} after {timeout}s: {body}")


def submit(client: httpx.Client, model: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Submit and return the new request, asserting a 200."""
    resp = client.post("/requests", json={"model": model, "payload": payload})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


class CuttingProxy:
    """A TCP proxy on loopback in front of a server that can drop a media transfer midway, like a bad network.

    ``arm(n)`` makes the next ``n`` responses to ``GET /media/…`` stop after ``cut_after`` bytes, with the
    connection closed under the client. ``heads`` records the head of every HTTP request that went through.
    """

    def __init__(self, target_port: int, cut_after: int = 150_000) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.heads: list[str] = []
        self.cuts = 0
        self._armed = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        """The proxy's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def arm(self, times: int = 1) -> None:
        """Cut the next ``times`` media responses."""
        with self._lock:
            self._armed = times

    def close(self) -> None:
        """Stop accepting connections."""
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        state = {"sent": 0, "cut_at": -1}

        def client_to_server() -> None:
            while data := _recv(conn):
                text = data.decode("latin-1")
                if text.split(" ", 1)[0] in ("GET", "POST", "HEAD", "DELETE", "PUT"):
                    self.heads.append(text.split("\r\n\r\n", 1)[0])
                    with self._lock:
                        if text.startswith("GET /media/") and self._armed > 0:
                            self._armed -= 1
                            state["cut_at"] = state["sent"] + self.cut_after
                try:
                    upstream.sendall(data)
                except OSError:
                    break
            _shut(upstream)

        threading.Thread(target=client_to_server, daemon=True).start()
        while data := _recv(upstream):
            cut_at = state["cut_at"]
            if cut_at >= 0 and state["sent"] + len(data) >= cut_at:
                conn.sendall(data[: cut_at - state["sent"]])
                self.cuts += 1
                break
            state["sent"] += len(data)
            try:
                conn.sendall(data)
            except OSError:
                break
        _shut(conn)
        _shut(upstream)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _shut(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def run_bench(script: str, *args: str, out: Path) -> subprocess.CompletedProcess[str]:
    """Run ``bench/<script>`` with ``args`` and ``--out out`` from the checkout, as its docs say to."""
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, str(root / "bench" / script), *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=root,
    )
