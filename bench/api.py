"""API throughput and latency: vidqueue vs a bare FastAPI app doing the same SQLite insert and select.

Both servers run pinned to one core (the first CPU), one at a time, under the same uvicorn; the load generator
(a small keep-alive HTTP/1.1 client on asyncio) runs on another core. Submit = POST /requests, status =
GET /requests/{id}. Prints the ratios and writes bench/results/api.json.

    python bench/api.py [--seconds 5] [--concurrency 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
BASE = "/api/v1/ie/requestqueue/apikey"
BODY = json.dumps({"model": "Kling-Text2Video-V2-Master", "payload": {"prompt": "A red fox in fresh snow"}}).encode()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pin(cpu: int) -> Any:
    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} never became ready")


class Conn:
    """One keep-alive HTTP/1.1 connection that sends prepared requests and reads whole responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def call(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await self.reader.readexactly(length)
        return status, body


def _request(method: str, path: str, key: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {key}"]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _load(
    port: int, requests: list[bytes], seconds: float, concurrency: int
) -> tuple[list[float], list[bytes], int]:
    latencies: list[float] = []
    bodies: list[bytes] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    counter = 0

    async def client() -> None:
        nonlocal errors, counter
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conn = Conn(reader, writer)
        while time.perf_counter() < stop_at:
            req = requests[counter % len(requests)]
            counter += 1
            t0 = time.perf_counter()
            status, body = await conn.call(req)
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                errors += 1
            elif len(bodies) < 5000:
                bodies.append(body)
        writer.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, bodies, errors


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _summary(latencies: list[float], seconds: float, errors: int, cpu_s: float) -> dict[str, float]:
    qs = statistics.quantiles(latencies, n=100)
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": round(len(latencies) / seconds, 1),
        "p50_ms": round(qs[49] * 1000, 2),
        "p99_ms": round(qs[98] * 1000, 2),
        # The server's own CPU time per request: less sensitive than rps to other work on the machine.
        "cpu_us": round(cpu_s / len(latencies) * 1e6, 1),
    }


def _measured(pid: int, port: int, requests: list[bytes], seconds: float, concurrency: int) -> tuple[Any, ...]:
    before = _cpu_s(pid)
    lat, bodies, errors = asyncio.run(_load(port, requests, seconds, concurrency))
    return _summary(lat, seconds, errors, _cpu_s(pid) - before), bodies


def _run_phase(pid: int, port: int, key: str, path_prefix: str, seconds: float, concurrency: int) -> dict[str, Any]:
    submit = _request("POST", f"{path_prefix}/requests", key, BODY)
    # Warm up, then measure submits.
    asyncio.run(_load(port, [submit], 1.0, concurrency))
    result: dict[str, Any] = {}
    result["submit"], bodies = _measured(pid, port, [submit], seconds, concurrency)
    ids = [json.loads(b)["request_id"] for b in bodies[:2000]]
    gets = [_request("GET", f"{path_prefix}/requests/{rid}", key) for rid in ids]
    result["status"], _ = _measured(pid, port, gets, seconds, concurrency)
    return result


@contextmanager
def _fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the server of ``server_url`` (its URL), dropped afterwards."""
    import psycopg

    base = server_url.rsplit("/", 1)[0]
    name = f"vidqueue_bench_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_vidqueue(tmp: Path, seconds: float, concurrency: int, database_url: str | None = None) -> dict[str, Any]:
    """vidqueue serve --workers 0 (API only, so no worker competes for the core); on PostgreSQL with
    ``database_url`` (a server whose database is used only to create a fresh one for the run)."""
    if database_url is not None:
        with _fresh_database(database_url) as url:
            return _bench_vidqueue(tmp, seconds, concurrency, ["--database-url", url])
    return _bench_vidqueue(tmp, seconds, concurrency, [])


def _bench_vidqueue(tmp: Path, seconds: float, concurrency: int, store: list[str]) -> dict[str, Any]:
    port = _free_port()
    env = dict(os.environ)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vidqueue",
            "serve",
            "--port",
            str(port),
            "--workers",
            "0",
            "--data-dir",
            str(tmp),
            *store,
        ],
        stdout=subprocess.PIPE,
        env=env,
        preexec_fn=_pin(0),
    )
    try:
        _wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
        assert proc.stdout is not None
        key = ""
        while not key.startswith("vq_"):
            key = proc.stdout.readline().decode().strip()
        return _run_phase(proc.pid, port, key, BASE, seconds, concurrency)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def bench_bare(tmp: Path, seconds: float, concurrency: int) -> dict[str, Any]:
    """The baseline: bench/bare_app.py under the same uvicorn, on the same core."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bare_app:app",
            "--app-dir",
            str(HERE),
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env={**os.environ, "BARE_DB": str(tmp / "bare.db")},
        preexec_fn=_pin(0),
    )
    try:
        _wait_ready(f"http://127.0.0.1:{port}/healthz", proc)
        return _run_phase(proc.pid, port, "bare", "", seconds, concurrency)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def main() -> None:
    """Run both servers in turn and print the ratios."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3, help="bare/vidqueue pairs, interleaved; ratios are medians")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "api.json")
    parser.add_argument(
        "--database-url",
        help="run vidqueue on PostgreSQL (a fresh database on this server each round); the bare app stays on SQLite",
    )
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, set(cpus[1:]))  # the load generator stays off the server's core
    rounds = []
    for _ in range(args.rounds):
        # Interleaved, fresh databases each round: drift on a shared machine hits both sides alike.
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            bare = bench_bare(Path(a), args.seconds, args.concurrency)
            ours = bench_vidqueue(Path(b), args.seconds, args.concurrency, args.database_url)
        rounds.append(
            {
                "bare": bare,
                "vidqueue": ours,
                "submit_ratio": round(ours["submit"]["rps"] / bare["submit"]["rps"], 3),
                "status_ratio": round(ours["status"]["rps"] / bare["status"]["rps"], 3),
                # Bare CPU per request over ours: the same ratio, read from the servers' own CPU time.
                "submit_cpu_ratio": round(bare["submit"]["cpu_us"] / ours["submit"]["cpu_us"], 3),
                "status_cpu_ratio": round(bare["status"]["cpu_us"] / ours["status"]["cpu_us"], 3),
            }
        )
    ratios = {
        "submit_rps": statistics.median(r["submit_ratio"] for r in rounds),
        "status_rps": statistics.median(r["status_ratio"] for r in rounds),
        "submit_cpu": statistics.median(r["submit_cpu_ratio"] for r in rounds),
        "status_cpu": statistics.median(r["status_cpu_ratio"] for r in rounds),
    }
    result = {
        "command": (
            f"python bench/api.py --seconds {args.seconds:g} --concurrency {args.concurrency} --rounds {args.rounds}"
            + (f" --database-url {args.database_url}" if args.database_url else "")
        ),
        "vidqueue_store": "postgresql" if args.database_url else "sqlite",
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, server pinned to cpu 0",
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "rounds": rounds,
        "ratio": ratios,
        "goals": {"submit_rps": 0.6, "status_rps": 1.0},
        "goals_met": ratios["submit_rps"] >= 0.6 and ratios["status_rps"] >= 1.0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
