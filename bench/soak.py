"""Soak: a steady stream of submits and polls for a bounded time while worker processes are killed at random.

    python bench/soak.py [--duration 120] [--rate 4] [--poll-rate 20] [--workers 3] [--kill-every 8]
                         [--latency 1.0] [--database-url postgresql://…] [--out bench/results/soak.json]
                         [--storage-fault-every 20 --storage-fault-s 8]

It starts the real `vidqueue serve` on a loopback port (SQLite and local files by default, or a PostgreSQL
database), with its worker processes and the emulator engine. For ``--duration`` seconds it submits ``--rate``
requests a second (each with an Idempotency-Key, retried on a dropped connection or a 503, as a careful client
would), polls random unfinished requests ``--poll-rate`` times a second, and SIGKILLs one worker process at random
intervals (mean ``--kill-every`` s; the server restarts it). Every request carries a callback_url to a receiver on
loopback. Then it waits for every accepted request to end and for its webhooks to arrive.

Storage-fault mode (``--storage-fault-every S --storage-fault-s D``): every S seconds the media folder becomes
unwritable for D seconds (a read-only bind mount over itself when run as root, else its mode bits), then writable
again. Workers that finish a video meanwhile must keep it and store it once storage is back: no request may be
generated twice, which the emulator's journal (one line per generation started) tells. Use ``--kill-every 0``
with it, since a killed worker's request is rightly generated again.

Reported: submitted, finished (success), failed (by code), lost (accepted but never ended, or gone: must be 0),
5xx answers (must be 0), kills, storage faults, double generations (requests the journal shows started more than
once: must be 0 without kills), webhooks missing (a request without its terminal webhook), and latency p50/p99
of the API calls and of submit-to-success. Exit status 1 when any of those musts fails.
"""

# ruff: noqa: E402
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

import argparse
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

RESULTS = HERE / "results" / "soak.json"
BASE = "/api/v1/ie/requestqueue/apikey"
MODEL = "kling-v2-5-turbo"
TERMINAL = {"success", "failed", "cancelled"}


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by nearest rank, or None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


@dataclass
class Tally:
    """What the soak saw, shared by its threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    accepted: dict[str, float] = field(default_factory=dict)  # request id → when the submit was sent
    ended: dict[str, dict[str, Any]] = field(default_factory=dict)
    submit_attempts: int = 0
    refused: Counter[int] = field(default_factory=Counter)  # 4xx statuses (limits would show here)
    server_errors: list[str] = field(default_factory=list)
    transport_errors: int = 0
    call_ms: list[float] = field(default_factory=list)
    done_s: list[float] = field(default_factory=list)
    kills: int = 0
    storage_faults: int = 0
    hooks: dict[str, list[str]] = field(default_factory=dict)  # request id → statuses POSTed to the receiver

    def note(self, request_id: str, resp: httpx.Response | None) -> None:
        """Record a request that a read found ended."""
        if resp is None or resp.status_code != 200 or resp.json()["status"] not in TERMINAL:
            return
        body = resp.json()
        with self.lock:
            self.ended[request_id] = body
            if body["status"] == "success":
                self.done_s.append(body["finished_at"] - body["created_at"])

    def call(self, client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response | None:
        """One API call, timed; a 5xx is recorded, a dropped connection answers None."""
        start = time.perf_counter()
        try:
            resp = client.request(method, url, **kwargs)
        except httpx.TransportError:
            with self.lock:
                self.transport_errors += 1
            return None
        with self.lock:
            self.call_ms.append((time.perf_counter() - start) * 1000)
            if resp.status_code >= 500:
                self.server_errors.append(f"{method} {url} → {resp.status_code}: {resp.text[:200]}")
        return resp


class Server:
    """`vidqueue serve` in its own process group."""

    def __init__(self, data_dir: Path, port: int, workers: int, env: dict[str, str], database_url: str | None) -> None:
        self.url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "vidqueue", "serve", "--port", str(port), "--data-dir", str(data_dir)]
        cmd += ["--workers", str(workers)]
        if database_url:
            cmd += ["--database-url", database_url]
        self.log = data_dir / "serve.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            cmd,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )
        self.key = self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("serve exited:\n" + self.log.read_text())
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit("serve did not become ready:\n" + self.log.read_text())
        for line in self.log.read_text().splitlines():
            if line.startswith("vq_"):
                return line.strip()
        raise SystemExit("serve printed no API key (use an empty data dir)")

    def worker_pids(self) -> list[int]:
        """The worker processes (children of serve)."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False)
        return [int(p) for p in out.stdout.split()]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL of the group if it lingers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def receiver(tally: Tally) -> ThreadingHTTPServer:
    """A webhook receiver on loopback that notes each request's statuses."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            with tally.lock:
                tally.hooks.setdefault(body["request_id"], []).append(body["status"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def submitter(api: httpx.Client, tally: Tally, rate: float, until: float, hook: str) -> None:
    """Submit at a steady rate; each submit is retried under its Idempotency-Key until it is answered."""
    n = 0
    start = time.monotonic()
    while time.monotonic() < until:
        n += 1
        key = str(uuid.uuid4())
        body = {"model": MODEL, "payload": {"prompt": f"soak {n}", "duration": "5"}, "callback_url": hook}
        sent = time.time()
        for _try in range(20):
            with tally.lock:
                tally.submit_attempts += 1
            resp = tally.call(api, "POST", "/requests", json=body, headers={"Idempotency-Key": key})
            if resp is None or resp.status_code == 503:
                time.sleep(0.5)
                continue
            if resp.status_code == 200:
                with tally.lock:
                    tally.accepted[resp.json()["request_id"]] = sent
            else:
                with tally.lock:
                    tally.refused[resp.status_code] += 1
            break
        # Steady pacing: the n-th submit goes at start + n / rate, however long the calls took.
        time.sleep(max(0.0, start + n / rate - time.monotonic()))


def poller(api: httpx.Client, tally: Tally, rate: float, stop: threading.Event) -> None:
    """Poll random unfinished requests; note how each ended."""
    while not stop.is_set():
        with tally.lock:
            open_ids = [rid for rid in tally.accepted if rid not in tally.ended]
        if open_ids:
            rid = random.choice(open_ids)
            tally.note(rid, tally.call(api, "GET", f"/requests/{rid}"))
        stop.wait(1 / rate)


def killer(server: Server, tally: Tally, every_s: float, until: float) -> None:
    """SIGKILL a random worker process at random intervals (exponential, mean ``every_s``; 0: never)."""
    if every_s <= 0:
        return
    rng = random.Random(7)
    while True:
        wait = rng.expovariate(1 / every_s)
        if time.monotonic() + wait >= until:
            return
        time.sleep(wait)
        pids = server.worker_pids()
        if pids:
            try:
                os.kill(rng.choice(pids), signal.SIGKILL)
                with tally.lock:
                    tally.kills += 1
            except ProcessLookupError:
                pass


def _run(*cmd: str) -> None:
    subprocess.run(list(cmd), check=True, capture_output=True)


def storage_faults(media: Path, tally: Tally, every_s: float, fault_s: float, until: float) -> None:
    """Make the media folder unwritable for ``fault_s`` every ``every_s`` seconds until ``until``."""
    as_root = os.geteuid() == 0  # root ignores mode bits: a read-only bind mount is what stops it
    while time.monotonic() + every_s + fault_s < until:
        time.sleep(every_s)
        if as_root:
            _run("mount", "--bind", str(media), str(media))
            _run("mount", "-o", "remount,bind,ro", str(media))
        else:
            media.chmod(0o555)
        with tally.lock:
            tally.storage_faults += 1
        try:
            time.sleep(fault_s)
        finally:
            if as_root:
                _run("umount", str(media))
            else:
                media.chmod(0o755)


def double_generations(journal: Path) -> dict[str, int]:
    """Requests the emulator's journal shows started more than once, with how many times."""
    if not journal.exists():
        return {}
    lines = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    starts = Counter(line["request_id"] for line in lines if line["event"] == "start")
    return {rid: n for rid, n in starts.items() if n > 1}


def settle(api: httpx.Client, tally: Tally, timeout: float) -> list[str]:
    """Read every accepted request until it ends (or the timeout); answer the ids that never ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with tally.lock:
            open_ids = [rid for rid in tally.accepted if rid not in tally.ended]
        if not open_ids:
            return []
        for rid in open_ids:
            tally.note(rid, tally.call(api, "GET", f"/requests/{rid}"))
        time.sleep(0.5)
    with tally.lock:
        return [rid for rid in tally.accepted if rid not in tally.ended]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the soak and answer its report."""
    tally = Tally()
    hooks = receiver(tally)
    hook_url = f"http://127.0.0.1:{hooks.server_address[1]}/soak"
    env = {
        "VIDQUEUE_EMULATOR_LATENCY_S": str(args.latency),
        "VIDQUEUE_ALLOW_PRIVATE_URLS": "1",  # the receiver is on loopback
        # A killed worker's request is handed back at once by the server; a generous attempt limit keeps a request
        # that happens to be hit twice from ending worker_lost in a run that kills on purpose.
        "VIDQUEUE_MAX_ATTEMPTS": "5",
        "VIDQUEUE_LEASE_S": "10",
        "VIDQUEUE_HEARTBEAT_S": "2",
        "VIDQUEUE_WEBHOOK_RETRY_BASE_S": "0.5",
        "VIDQUEUE_LOG_LEVEL": "warning",
    }
    with tempfile.TemporaryDirectory(prefix="vq-soak-") as tmp:
        journal = Path(tmp) / "journal.jsonl"
        env["VIDQUEUE_EMULATOR_JOURNAL"] = str(journal)
        server = Server(Path(tmp) / "data", free_port(), args.workers, env, args.database_url)
        started = time.monotonic()
        try:
            api = httpx.Client(
                base_url=server.url + BASE, headers={"Authorization": f"Bearer {server.key}"}, timeout=30
            )
            until = time.monotonic() + args.duration
            stop_polling = threading.Event()
            threads = [
                threading.Thread(target=submitter, args=(api, tally, args.rate, until, hook_url)),
                threading.Thread(target=killer, args=(server, tally, args.kill_every, until)),
                *(
                    threading.Thread(target=poller, args=(api, tally, args.poll_rate / 2, stop_polling))
                    for _ in range(2)
                ),
            ]
            if args.storage_fault_every > 0:
                media = Path(tmp) / "data" / "media"
                fault_args = (media, tally, args.storage_fault_every, args.storage_fault_s, until)
                threads.insert(2, threading.Thread(target=storage_faults, args=fault_args))
            ends_with_submits = len(threads) - 2
            for t in threads:
                t.start()
            for t in threads[:ends_with_submits]:
                t.join()
            stop_polling.set()
            for t in threads[ends_with_submits:]:
                t.join()
            lost = settle(api, tally, timeout=args.settle_s)
            # Webhooks: every ended request's terminal status must reach the receiver.
            deadline = time.monotonic() + args.settle_s
            missing: list[str] = []
            while time.monotonic() < deadline:
                with tally.lock:
                    missing = [
                        rid for rid, body in tally.ended.items() if body["status"] not in tally.hooks.get(rid, [])
                    ]
                if not missing:
                    break
                time.sleep(0.5)
            api.close()
        finally:
            server.stop()
            hooks.shutdown()
        wall = time.monotonic() - started
        doubles = double_generations(journal)
    statuses = Counter(body["status"] for body in tally.ended.values())
    failures = Counter(body.get("error") or "" for body in tally.ended.values() if body["status"] == "failed")
    return {
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "settings": {
            "duration_s": args.duration,
            "rate_per_s": args.rate,
            "poll_rate_per_s": args.poll_rate,
            "workers": args.workers,
            "kill_every_s": args.kill_every,
            "emulator_latency_s": args.latency,
            "store": "postgresql" if args.database_url else "sqlite",
            "storage_fault_every_s": args.storage_fault_every,
            "storage_fault_s": args.storage_fault_s,
        },
        "wall_s": round(wall, 1),
        "submitted": len(tally.accepted),
        "submit_calls": tally.submit_attempts,
        "refused_4xx": dict(tally.refused),
        "finished": statuses.get("success", 0),
        "failed": statuses.get("failed", 0),
        "failed_by_error": dict(failures),
        "cancelled": statuses.get("cancelled", 0),
        "lost": len(lost),
        "lost_ids": lost[:20],
        "server_errors_5xx": len(tally.server_errors),
        "server_error_samples": tally.server_errors[:5],
        "transport_errors": tally.transport_errors,
        "kills": tally.kills,
        "storage_faults": tally.storage_faults,
        "double_generations": len(doubles),
        "double_generation_samples": dict(list(doubles.items())[:5]),
        "webhooks_missing": len(missing),
        "api_calls": len(tally.call_ms),
        "api_latency_ms": {
            "p50": round(statistics.median(tally.call_ms), 2) if tally.call_ms else None,
            "p99": round(percentile(tally.call_ms, 99) or 0, 2),
        },
        "submit_to_success_s": {
            "p50": round(statistics.median(tally.done_s), 2) if tally.done_s else None,
            "p99": round(percentile(tally.done_s, 99) or 0, 2),
        },
    }


def main() -> None:
    """Parse flags, run, print and save the report; exit 1 when anything was lost or a 5xx was answered."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of submitting (default 120)")
    parser.add_argument("--rate", type=float, default=4.0, help="submits per second (default 4)")
    parser.add_argument("--poll-rate", type=float, default=20.0, help="polls per second (default 20)")
    parser.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    parser.add_argument("--kill-every", type=float, default=8.0, help="mean seconds between worker kills (default 8)")
    parser.add_argument("--latency", type=float, default=0.5, help="emulator seconds per video (default 0.5)")
    parser.add_argument("--settle-s", type=float, default=180.0, help="how long to wait for the backlog to end")
    parser.add_argument("--database-url", help="a PostgreSQL database (default: SQLite in a temporary folder)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"where to write the report (default {RESULTS})")
    parser.add_argument(
        "--storage-fault-every", type=float, default=0.0, help="seconds between media-storage faults (default 0: none)"
    )
    parser.add_argument("--storage-fault-s", type=float, default=8.0, help="how long each storage fault lasts")
    args = parser.parse_args()
    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    ok = report["lost"] == 0 and report["server_errors_5xx"] == 0 and report["webhooks_missing"] == 0
    if report["kills"] == 0:
        ok = ok and report["double_generations"] == 0
    print("PASS: 0 lost, 0 5xx, no double generation, every webhook arrived" if ok else "FAIL", file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
