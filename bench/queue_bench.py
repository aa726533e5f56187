"""Queue throughput and insert-to-start latency: vidqueue vs PgQueuer on one PostgreSQL database, and on SQLite.

    python bench/queue_bench.py [--jobs 5000] [--workers 4] [--latency-samples 200] [--rounds 3] [--quick]

Throughput: N jobs are inserted first; then K consumer processes (already started, set up and idle) are told to
go at once, and the clock runs until the database says all N are done (polled every 20 ms). vidqueue's consumers
run the real ``vidqueue.worker.loop.Worker`` with a no-op engine; PgQueuer's run its ``QueueManager`` with a
no-op async entrypoint on the asyncpg driver, with its defaults and again with batch size 1.

Latency: one idle consumer, an empty queue, single inserts spaced 20-50 ms apart; latency = the ``time.time()``
at which the engine's ``generate`` (PgQueuer: the entrypoint) starts in the consumer, minus the ``time.time()``
taken just before the insert call in this process.

Without ``--database-url`` a throwaway database ``vq_bench_<random>`` is made on
postgresql://postgres@127.0.0.1:5432 and dropped at the end. A given database must be a scratch one: the bench
installs PgQueuer's tables and vidqueue's schema there if missing, and deletes the rows it added after each run.
Writes bench/results/queue.json (``--out``) and prints a table.
"""

# ruff: noqa: E402
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import queue
import random
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
RESULTS = HERE / "results" / "queue.json"
MODEL = "vq-bench-noop"  # the one model id the no-op engine serves
ENTRYPOINT = "vq_bench_noop"  # PgQueuer's entrypoint
ORG = "bench"
POLL_S = 0.02  # how often the throughput clock looks at the database
GOAL_RATIO = 0.5
GOAL_P50_MS = 20.0
SYSTEMS = ("vidqueue_pg", "pgqueuer", "pgqueuer_batch1", "vidqueue_sqlite")
LATENCY_SYSTEMS = ("vidqueue_pg", "pgqueuer", "vidqueue_sqlite")


# ---------------------------------------------------------------------------------------------------------------
# Consumers: `python bench/queue_bench.py _consumer vidqueue|pgqueuer ...`, one process each.
#
# Protocol on the pipes: the consumer sets up, prints "ready", and waits for a line on stdin; then it runs until
# stdin closes (the parent closing it, or dying). With --report it prints "start <key> <time.time()>" as each job's
# handler starts.
# ---------------------------------------------------------------------------------------------------------------


def _await_go_then_watch(stop: Callable[[], None]) -> None:
    """Block until the parent says go; then call ``stop`` from a thread once stdin closes."""
    print("ready", flush=True)
    if not sys.stdin.readline():
        stop()
        return

    def watch() -> None:
        while sys.stdin.readline():
            pass
        stop()

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def consume_vidqueue(url: str, report: bool, concurrency: int, log_level: str) -> None:
    """Run the real vidqueue Worker with a no-op engine until stdin closes."""
    from vidqueue.config import WorkerSettings
    from vidqueue.engines.base import GeneratedMedia, Job, JobContext
    from vidqueue.logs import setup_logging
    from vidqueue.media.storage import LocalStorage
    from vidqueue.media.types import VideoInfo
    from vidqueue.store import open_store
    from vidqueue.worker.loop import Worker

    setup_logging(log_level)
    info = VideoInfo(duration=0.0, width=0, height=0, fps=0, frames=0, codec="none", bytes=0)

    class NoopEngine:
        """Answers at once with no video: what is left to time is the queue."""

        kind = "noop"
        shared_limit: int | None = None

        def __init__(self) -> None:
            self.concurrency = concurrency

        def models(self) -> set[str]:
            return {MODEL}

        def setup(self) -> None:
            pass

        def generate(self, job: Job, ctx: JobContext) -> GeneratedMedia:
            if report:
                started = time.time()
                print(f"start {job.request_id} {started!r}", flush=True)
            return GeneratedMedia(videos=[], info=info)

    with tempfile.TemporaryDirectory(prefix="vq-bench-worker-") as tmp:
        store = open_store(url)
        worker = Worker(
            store,
            {MODEL: NoopEngine()},
            LocalStorage(Path(tmp) / "media", "http://127.0.0.1:8000", b"bench-secret"),
            WorkerSettings(),
            f"bench-{os.getpid()}",
            workdir=Path(tmp) / "work",
        )
        worker.setup()
        _await_go_then_watch(worker.stopping.set)
        try:
            worker.run()
        finally:
            store.close()


def consume_pgqueuer(url: str, report: bool, batch_size: int | None) -> None:
    """Run PgQueuer's QueueManager with a no-op entrypoint until stdin closes."""
    import asyncpg
    from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager

    async def main() -> None:
        conn = await asyncpg.connect(url)
        qm = QueueManager(Queries(AsyncpgDriver(conn)))

        @qm.entrypoint(ENTRYPOINT)
        async def noop(job: Job) -> None:
            if report:
                started = time.time()
                print(f"start {(job.payload or b'').decode()} {started!r}", flush=True)

        loop = asyncio.get_running_loop()
        go = loop.create_future()

        def stop() -> None:
            loop.call_soon_threadsafe(qm.shutdown.set)

        def wait_go() -> None:
            _await_go_then_watch(stop)
            loop.call_soon_threadsafe(go.set_result, None)

        threading.Thread(target=wait_go, name="go", daemon=True).start()
        await go
        try:
            if batch_size is None:
                await qm.run()
            else:
                await qm.run(batch_size=batch_size)
        finally:
            await conn.close()

    asyncio.run(main())


def consumer_main(argv: list[str]) -> None:
    """Entry point of one consumer process."""
    parser = argparse.ArgumentParser(prog="queue_bench.py _consumer")
    parser.add_argument("system", choices=["vidqueue", "pgqueuer"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    if args.system == "vidqueue":
        consume_vidqueue(args.url, args.report, args.concurrency, args.log_level)
    else:
        consume_pgqueuer(args.url, args.report, args.batch_size)


# ---------------------------------------------------------------------------------------------------------------
# The parent: consumer processes, inserts, clocks.
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Consumers:
    """K consumer processes; their stdout lines arrive on ``lines`` as they come."""

    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    lines: queue.Queue[str] = field(default_factory=queue.Queue)

    def start(self, argv: list[str], count: int, logdir: Path) -> None:
        for i in range(count):
            log = logdir / f"consumer-{len(self.logs)}.log"
            self.logs.append(log)
            with log.open("w") as err:
                proc = subprocess.Popen(
                    [sys.executable, str(Path(__file__).resolve()), "_consumer", *argv],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    text=True,
                    bufsize=1,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            self.procs.append(proc)
            threading.Thread(target=self._read, args=(proc,), name=f"read-{i}", daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        ready = 0
        while ready < len(self.procs):
            self.check_alive()
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"consumers not ready after {timeout:g} s{self.tails()}") from None
                continue
            if line == "ready":
                ready += 1

    def go(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a consumer exited early with {proc.returncode}{self.tails()}")

    def tails(self) -> str:
        text = ""
        for log in self.logs:
            with contextlib.suppress(OSError):
                tail = log.read_text()[-2000:]
                if tail.strip():
                    text += f"\n--- {log.name}\n{tail}"
        return text

    def stop(self) -> None:
        """Close every consumer's stdin (they stop and exit); kill those still there after 20 s."""
        for proc in self.procs:
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.close()
        deadline = time.monotonic() + 20
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.procs.clear()


@contextlib.contextmanager
def consumers(argv: list[str], count: int, logdir: Path) -> Iterator[Consumers]:
    group = Consumers()
    try:
        group.start(argv, count, logdir)
        group.wait_ready()
        yield group
    finally:
        group.stop()


class System:
    """One queue under test: how to insert, how to count finished jobs, how to start its consumers."""

    name: str

    def consumer_argv(self, report: bool) -> list[str]:
        raise NotImplementedError

    def insert_many(self, n: int) -> None:
        raise NotImplementedError

    def insert_one(self, key: str) -> None:
        raise NotImplementedError

    def done(self) -> int:
        raise NotImplementedError

    def failed(self) -> int:
        return 0

    def reset(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Vidqueue(System):
    """vidqueue's store (PostgreSQL or SQLite); inserts through ``store.enqueue`` as the API does."""

    def __init__(self, name: str, url: str, concurrency: int, log_level: str) -> None:
        from vidqueue.store import NewRequest, open_store

        self.name = name
        self.url = url
        self.concurrency = concurrency
        self.log_level = log_level
        self.store = open_store(url)  # migrates to the newest schema
        self._new = NewRequest
        self.pg = not url.startswith("sqlite")
        if self.pg:
            import psycopg

            from vidqueue.store.postgres import libpq_url

            self._pg = psycopg.connect(libpq_url(url), autocommit=True)
        else:
            self._lite = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)

    def _query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        cur = self._pg.execute(sql.replace("?", "%s"), params) if self.pg else self._lite.execute(sql, params)
        return cur.fetchall() if cur.description else []

    def consumer_argv(self, report: bool) -> list[str]:
        argv = ["vidqueue", "--url", self.url, "--concurrency", str(self.concurrency), "--log-level", self.log_level]
        return [*argv, "--report"] if report else argv

    def insert_one(self, key: str) -> None:
        self.store.enqueue(self._new(request_id=key, org_id=ORG, model=MODEL, payload={"prompt": "bench"}))

    def insert_many(self, n: int) -> None:
        for _ in range(n):
            self.insert_one(str(uuid.uuid4()))
        self._analyze()

    def _analyze(self) -> None:
        # What autovacuum would have done by now on a long-lived queue: plans from statistics of a full table.
        self._query("ANALYZE requests")

    def done(self) -> int:
        return int(self._query("SELECT count(*) FROM requests WHERE status = 'success' AND model = ?", MODEL)[0][0])

    def failed(self) -> int:
        rows = self._query("SELECT count(*) FROM requests WHERE status IN ('failed', 'cancelled') AND model = ?", MODEL)
        return int(rows[0][0])

    def reset(self) -> None:
        self._query("DELETE FROM requests WHERE model = ?", MODEL)
        self._query("DELETE FROM workers WHERE worker_id LIKE ?", "bench-%")
        self._query("VACUUM ANALYZE requests" if self.pg else "VACUUM")

    def close(self) -> None:
        self.store.close()
        if self.pg:
            self._pg.close()
        else:
            self._lite.close()


class PgQueuer(System):
    """PgQueuer on the asyncpg driver; bulk insert in one call, single inserts one call each."""

    def __init__(self, name: str, url: str, batch_size: int | None) -> None:
        import asyncpg
        import psycopg
        from pgqueuer import AsyncpgDriver, Queries

        self.name = name
        self.url = url
        self.batch_size = batch_size
        self._runner = asyncio.Runner()
        self._conn = self._runner.run(asyncpg.connect(url))
        self.queries = Queries(AsyncpgDriver(self._conn))
        if not self._runner.run(self.queries.schema_is_installed()):
            self._runner.run(self.queries.install())
        s = self.queries.qbe.settings
        self.table, self.log_table, self.stats_table = s.queue_table, s.queue_table_log, s.statistics_table
        self._pg = psycopg.connect(url, autocommit=True)

    def consumer_argv(self, report: bool) -> list[str]:
        argv = ["pgqueuer", "--url", self.url]
        if self.batch_size is not None:
            argv += ["--batch-size", str(self.batch_size)]
        return [*argv, "--report"] if report else argv

    def insert_one(self, key: str) -> None:
        self._runner.run(self.queries.enqueue(ENTRYPOINT, key.encode()))

    def insert_many(self, n: int) -> None:
        self._runner.run(self.queries.enqueue([ENTRYPOINT] * n, [b"bench"] * n, [0] * n))
        self._pg.execute(f"ANALYZE {self.table}")
        self._total = n

    def done(self) -> int:
        # A job leaves the queue table when its completion is logged.
        left = self._pg.execute(f"SELECT count(*) FROM {self.table} WHERE entrypoint = %s", (ENTRYPOINT,))
        row = left.fetchone()
        assert row is not None
        return self._total - int(row[0])

    def reset(self) -> None:
        for table in (self.table, self.log_table, self.stats_table):
            self._pg.execute(f"DELETE FROM {table} WHERE entrypoint = %s", (ENTRYPOINT,))
        for table in (self.table, self.log_table, self.stats_table):
            self._pg.execute(f"VACUUM ANALYZE {table}")

    def close(self) -> None:
        self._runner.run(self._conn.close())
        self._runner.close()
        self._pg.close()


def throughput(system: System, jobs: int, workers: int, logdir: Path) -> dict[str, Any]:
    """Insert ``jobs``, start ``workers`` consumers, and time them from go to all done."""
    system.reset()
    t = time.perf_counter()
    system.insert_many(jobs)
    insert_s = time.perf_counter() - t
    timeout = max(120.0, jobs / 20)
    with consumers(system.consumer_argv(report=False), workers, logdir) as group:
        pids = [p.pid for p in group.procs]
        cpu0, busy0 = _cpu_of(pids), _machine_busy()
        t0 = time.perf_counter()
        group.go()
        while True:
            time.sleep(POLL_S)
            n = system.done()
            if n >= jobs:
                elapsed = time.perf_counter() - t0
                cpu1, busy1 = _cpu_of(pids), _machine_busy()
                break
            if system.failed():
                raise RuntimeError(f"{system.name}: {system.failed()} jobs failed{group.tails()}")
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"{system.name}: only {n} of {jobs} done after {timeout:g} s{group.tails()}")
            group.check_alive()
    system.reset()
    result: dict[str, Any] = {"jobs_s": round(jobs / elapsed, 1), "seconds": round(elapsed, 3)}
    if None not in (cpu0, cpu1, busy0, busy1):
        assert cpu0 is not None and cpu1 is not None and busy0 is not None and busy1 is not None
        # CPU time per job while the clock ran: the consumer processes, and the whole machine (consumers, the
        # database server, this process's polling, and anything else running).
        result["cpu_ms_per_job"] = {
            "consumers": round((cpu1 - cpu0) * 1000 / jobs, 3),
            "machine": round((busy1 - busy0) * 1000 / jobs, 3),
        }
    result["insert_s"] = round(insert_s, 2)
    return result


def _cpu_of(pids: list[int]) -> float | None:
    """User + system CPU seconds of these processes (all their threads) so far; None where /proc is missing."""
    total = 0.0
    try:
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return total


def _machine_busy() -> float | None:
    """CPU seconds all cores spent busy since boot (everything but idle and iowait); None without /proc."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def latency(system: System, samples: int, logdir: Path) -> dict[str, Any]:
    """Single inserts into an empty queue with one idle consumer; insert-to-start times in ms."""
    system.reset()
    ms: list[float] = []
    with consumers(system.consumer_argv(report=True), 1, logdir) as group:
        group.go()
        time.sleep(1.0)  # let it settle into idling (first presence write, first sweep)
        for i in range(samples):
            key = str(uuid.uuid4())
            t0 = time.time()
            system.insert_one(key)
            deadline = time.monotonic() + 30
            while True:
                try:
                    line = group.lines.get(timeout=0.5)
                except queue.Empty:
                    group.check_alive()
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{system.name}: sample {i} never started{group.tails()}") from None
                    continue
                parts = line.split()
                if len(parts) == 3 and parts[0] == "start" and parts[1] == key:
                    ms.append((float(parts[2]) - t0) * 1000)
                    break
            time.sleep(random.uniform(0.02, 0.05))
    system.reset()
    return summarise(ms)


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarise(ms: list[float]) -> dict[str, Any]:
    return {
        "samples": len(ms),
        "p50": round(percentile(ms, 0.50), 2),
        "p90": round(percentile(ms, 0.90), 2),
        "p99": round(percentile(ms, 0.99), 2),
        "max": round(max(ms), 2),
        "mean": round(statistics.fmean(ms), 2),
    }


# ---------------------------------------------------------------------------------------------------------------


def _pg_admin(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=5)


@contextlib.contextmanager
def pg_database(url: str | None) -> Iterator[str]:
    """The given database, or a throwaway one dropped at the end."""
    if url:
        yield url
        return
    name = f"vq_bench_{uuid.uuid4().hex[:10]}"
    with _pg_admin(ADMIN_URL) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{ADMIN_URL.rpartition('/')[0]}/{name}"
    finally:
        import psycopg

        deadline = time.monotonic() + 60
        while True:  # through a server restart (another suite may restart the shared server)
            try:
                with _pg_admin(ADMIN_URL) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)


def machine(pg_url: str, load: tuple[float, float, float]) -> dict[str, Any]:
    import pgqueuer

    import vidqueue

    with _pg_admin(pg_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return {
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "postgres": row[0] if row else None,
        "sqlite": sqlite3.sqlite_version,
        "pgqueuer": pgqueuer.__version__,
        "vidqueue": getattr(vidqueue, "__version__", None),
        "vidqueue_commit": _git_commit(),
        "load_avg_at_start": [round(x, 2) for x in load],  # 1/5/15 min: anything else running skews the numbers
    }


def _git_commit() -> str | None:
    """The checkout's commit, with "+dirty" when src/ has changes; None outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=HERE.parent, capture_output=True)
    except OSError:
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def pgqueuer_defaults() -> dict[str, Any]:
    """QueueManager.run's and entrypoint's defaults, read from the installed PgQueuer."""
    import inspect

    from pgqueuer import QueueManager

    run = inspect.signature(QueueManager.run).parameters
    ep = inspect.signature(QueueManager.entrypoint).parameters

    def show(v: Any) -> Any:
        return v.total_seconds() if isinstance(v, timedelta) else v

    return {
        "batch_size": run["batch_size"].default,
        "max_concurrent_tasks": run["max_concurrent_tasks"].default,
        "dequeue_timeout_s": show(run["dequeue_timeout"].default),
        "heartbeat_timeout_s": show(run["heartbeat_timeout"].default),
        "entrypoint_concurrency_limit": ep["concurrency_limit"].default,
        "driver": "asyncpg (AsyncpgDriver, one connection per consumer)",
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from vidqueue.config import WorkerSettings

    defaults = pgqueuer_defaults()
    load = os.getloadavg()
    with contextlib.ExitStack() as stack:
        pg_url = stack.enter_context(pg_database(args.database_url))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vq-bench-queue-")))
        sqlite_url = f"sqlite:///{tmp / 'vidqueue.db'}"
        systems: dict[str, System] = {
            "vidqueue_pg": Vidqueue("vidqueue_pg", pg_url, args.engine_concurrency, args.log_level),
            "pgqueuer": PgQueuer("pgqueuer", pg_url, None),
            "pgqueuer_batch1": PgQueuer("pgqueuer_batch1", pg_url, 1),
            "vidqueue_sqlite": Vidqueue("vidqueue_sqlite", sqlite_url, args.engine_concurrency, args.log_level),
        }
        for s in systems.values():
            stack.callback(s.close)
        print(f"queue bench: {args.jobs} jobs, {args.workers} consumers, {args.rounds} round(s)", file=sys.stderr)
        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):
            # Rotate the order each round: drift on a shared machine then hits every system alike.
            order = list(SYSTEMS[r % len(SYSTEMS) :] + SYSTEMS[: r % len(SYSTEMS)])
            result: dict[str, Any] = {}
            for name in order:
                logdir = tmp / f"logs-{name}-{r}"
                logdir.mkdir()
                result[name] = throughput(systems[name], args.jobs, args.workers, logdir)
                print(f"  round {r + 1} {name}: {result[name]['jobs_s']} jobs/s", file=sys.stderr)
            rounds.append(result)
        lat: dict[str, Any] = {}
        for name in LATENCY_SYSTEMS:
            logdir = tmp / f"logs-{name}-latency"
            logdir.mkdir()
            lat[name] = latency(systems[name], args.latency_samples, logdir)
            print(f"  latency {name}: p50 {lat[name]['p50']} ms", file=sys.stderr)
        info = machine(pg_url, load)

    tp: dict[str, Any] = {name: statistics.median(r[name]["jobs_s"] for r in rounds) for name in SYSTEMS}
    tp["ratio_vs_pgqueuer"] = round(tp["vidqueue_pg"] / tp["pgqueuer"], 3)
    tp["ratio_vs_pgqueuer_batch1"] = round(tp["vidqueue_pg"] / tp["pgqueuer_batch1"], 3)
    tp["ratio_sqlite_vs_pgqueuer"] = round(tp["vidqueue_sqlite"] / tp["pgqueuer"], 3)
    if all("cpu_ms_per_job" in r[name] for r in rounds for name in SYSTEMS):
        tp["cpu_ms_per_job"] = {
            name: {
                part: round(statistics.median(r[name]["cpu_ms_per_job"][part] for r in rounds), 3)
                for part in ("consumers", "machine")
            }
            for name in SYSTEMS
        }
    tp["rounds"] = rounds
    command = "python bench/queue_bench.py" + (" --quick" if args.quick else "")
    command += f" --jobs {args.jobs} --workers {args.workers} --latency-samples {args.latency_samples}"
    command += f" --rounds {args.rounds}"
    return {
        "benchmark": "queue: claim throughput (no-op jobs) and insert-to-start latency, vidqueue vs PgQueuer",
        "command": command,
        "machine": info,
        "settings": {
            "jobs": args.jobs,
            "workers": args.workers,
            "latency_samples": args.latency_samples,
            "rounds": args.rounds,
            "throughput_is": "median over rounds of jobs / seconds from 'go' to all done (database polled every "
            f"{POLL_S * 1000:g} ms); consumers are started, set up and idle before 'go'",
            "database": "given by --database-url" if args.database_url else "throwaway database on 127.0.0.1:5432",
            "vidqueue": {
                "worker": "vidqueue.worker.loop.Worker, one per process, a no-op engine serving one model",
                "worker_settings": WorkerSettings().model_dump(mode="json"),
                "worker_settings_changed": "none (all defaults)",
                "engine_concurrency": args.engine_concurrency,
                "log_level": args.log_level,
                "insert": "store.enqueue(NewRequest), one call per job (one transaction each, with its NOTIFY)",
            },
            "pgqueuer": {
                "defaults": defaults,
                "runs": {
                    "pgqueuer": f"QueueManager.run() with its defaults (batch_size {defaults['batch_size']})",
                    "pgqueuer_batch1": "QueueManager.run(batch_size=1), everything else default",
                },
                "insert": "Queries.enqueue with lists (one statement) for throughput; one call per job for latency",
            },
            "analyze": "ANALYZE of the queue table after the bulk insert, for both systems",
            "latency": "one idle consumer, empty queue, inserts 20-50 ms apart; handler start minus insert call",
            "latency_sqlite": "SQLite cannot wake a worker in another process: it finds work by polling every "
            f"poll_interval_s ({WorkerSettings().poll_interval_s:g} s). A job's end restarts that wait, so an "
            "insert 20-50 ms after the previous job waits most of an interval",
        },
        "throughput": tp,
        "latency_ms": lat,
        "goals": {
            "throughput_ratio_ge_0_5": tp["ratio_vs_pgqueuer"] >= GOAL_RATIO,
            "p50_le_20ms": lat["vidqueue_pg"]["p50"] <= GOAL_P50_MS,
            "p50_le_20ms_sqlite": lat["vidqueue_sqlite"]["p50"] <= GOAL_P50_MS,
            "judged_on": "vidqueue_pg vs pgqueuer (its defaults); the SQLite figure is reported, not a goal",
        },
        "measured_at": int(time.time()),
    }


def table(result: dict[str, Any]) -> str:
    tp, lat = result["throughput"], result["latency_ms"]
    lines = [
        f"{'system':<18} {'jobs/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}",
    ]
    for name in SYSTEMS:
        row = f"{name:<18} {tp[name]:>9.1f}"
        if name in lat:
            row += "".join(f" {lat[name][k]:>8.2f}" for k in ("p50", "p90", "p99", "max"))
        lines.append(row)
    goals = result["goals"]
    lines.append(
        f"vidqueue_pg / pgqueuer = {tp['ratio_vs_pgqueuer']:.3f} (goal >= {GOAL_RATIO}: "
        f"{'met' if goals['throughput_ratio_ge_0_5'] else 'NOT met'}); "
        f"vs batch 1 = {tp['ratio_vs_pgqueuer_batch1']:.3f}"
    )
    lines.append(
        f"vidqueue_pg p50 = {lat['vidqueue_pg']['p50']:.2f} ms (goal <= {GOAL_P50_MS:g} ms: "
        f"{'met' if goals['p50_le_20ms'] else 'NOT met'})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_consumer"]:
        consumer_main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", help="a scratch PostgreSQL database (default: a throwaway one)")
    parser.add_argument("--jobs", type=int, help="jobs per throughput run (default 5000; --quick 300)")
    parser.add_argument("--workers", type=int, default=4, help="consumer processes (default 4)")
    parser.add_argument("--latency-samples", type=int, help="single inserts per system (default 200; --quick 30)")
    parser.add_argument("--rounds", type=int, help="throughput rounds, interleaved; medians (default 3; --quick 1)")
    parser.add_argument("--engine-concurrency", type=int, default=1, help="vidqueue engine slots per worker (1)")
    parser.add_argument("--log-level", default="info", help="vidqueue workers' log level (default info, as shipped)")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 300 jobs, 30 samples, one round")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"where to write the JSON (default {RESULTS})")
    args = parser.parse_args(argv)
    args.jobs = args.jobs or (300 if args.quick else 5000)
    args.latency_samples = args.latency_samples or (30 if args.quick else 200)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if min(args.jobs, args.workers, args.latency_samples, args.rounds, args.engine_concurrency) < 1:
        parser.error("--jobs, --workers, --latency-samples, --rounds and --engine-concurrency must be at least 1")
    result = run(args)
    text = json.dumps(result, indent=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(table(result))
    return 0  # a report, not a gate


if __name__ == "__main__":
    sys.exit(main())
