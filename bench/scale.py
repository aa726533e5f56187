"""Scale: what the store's calls cost as the table grows, on SQLite and PostgreSQL.

    python bench/scale.py [--sizes 1000,100000,1000000] [--stores sqlite,postgresql] [--samples 200]
                          [--pg-admin-url postgresql://postgres@127.0.0.1:5432/postgres]
                          [--out bench/results/scale.json]

For each store the requests table is filled to each size in turn (half the rows queued, half finished, all of one
organisation: the worst case for its listings), straight through SQL so that a million rows take seconds, and then
the calls the API and the workers make are timed through the store itself (the HTTP layer costs the same at any
size): a submit (``enqueue``), a read of a queued request (``get``, which also places it in the queue), the first
page of the organisation's listing and a page half-way down it (``list`` with a cursor), and a worker's ``claim``
followed by ``finish``. Each is reported as p50, p99 and max in milliseconds. Reads are interleaved with writes over
several seconds so that any periodic refresh shows up in p99 and max.

The flat-cost goals (issue 20): list latency at 1M rows within 1.5x of 1k rows; no GET above 20 ms at 1M rows.
"""

# ruff: noqa: E402
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from vidqueue.store import NewRequest, Status
from vidqueue.store.positions import LARGE_BITS, SMALL_BITS
from vidqueue.store.rules import encode_cursor
from vidqueue.store.sql import SqlStore

RESULTS = HERE / "results" / "scale.json"
ORG = "bench"
MODEL = "kling-v2-5-turbo"
PAYLOAD = '{"prompt": "a red fox in the snow", "duration": "5"}'

_FILL_SQLITE = """
WITH RECURSIVE c(x) AS (SELECT :first UNION ALL SELECT x + 1 FROM c WHERE x < :last)
INSERT INTO requests (request_id, org_id, model, status, priority, payload, outcome, created_at, updated_at,
                      queued_at, finished_at, progress, attempts)
SELECT printf('%08x-0000-4000-8000-%012x', x, x), :org, :model,
       CASE WHEN x % 2 = 0 THEN 'queued' ELSE 'success' END, 0, :payload,
       CASE WHEN x % 2 = 0 THEN NULL ELSE '{"media": []}' END,
       :t, :t, :t, CASE WHEN x % 2 = 0 THEN NULL ELSE :t END,
       CASE WHEN x % 2 = 0 THEN 0 ELSE 100 END, CASE WHEN x % 2 = 0 THEN 0 ELSE 1 END
FROM c
"""

_FILL_PG = """
INSERT INTO requests (request_id, org_id, model, status, priority, payload, outcome, created_at, updated_at,
                      queued_at, finished_at, progress, attempts)
SELECT lpad(to_hex(x), 8, '0') || '-0000-4000-8000-' || lpad(to_hex(x), 12, '0'), :org, :model,
       CASE WHEN x % 2 = 0 THEN 'queued' ELSE 'success' END, 0, CAST(:payload AS JSON),
       CASE WHEN x % 2 = 0 THEN NULL ELSE CAST('{"media": []}' AS JSON) END,
       :t, :t, :t, CASE WHEN x % 2 = 0 THEN NULL ELSE :t END,
       CASE WHEN x % 2 = 0 THEN 0 ELSE 100 END, CASE WHEN x % 2 = 0 THEN 0 ELSE 1 END
FROM generate_series(CAST(:first AS BIGINT), CAST(:last AS BIGINT)) AS x
"""


def request_id(x: int) -> str:
    """The id the fill gives row ``x``."""
    return f"{x:08x}-0000-4000-8000-{x:012x}"


def fill(store: SqlStore, first: int, last: int) -> float:
    """Insert rows ``first``..``last`` (even: queued, odd: finished) in batches; answer the seconds it took."""
    engine = store._engine
    statement = sa.text(_FILL_PG if engine.dialect.name == "postgresql" else _FILL_SQLITE)
    started = time.perf_counter()
    step = 200_000
    pg = engine.dialect.name == "postgresql"
    for lo in range(first, last + 1, step):
        hi = min(last, lo + step - 1)
        params = {"first": lo, "last": hi, "org": ORG, "model": MODEL, "payload": PAYLOAD, "t": time.time()}
        with engine.begin() as conn:
            if pg:
                # The count triggers update the same few rows once per inserted row; in one statement of 200k
                # rows PostgreSQL walks an ever longer chain of row versions each time. A bulk load goes without
                # them and recounts after, as migration 0007 does.
                conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
            conn.execute(statement, params)
    if pg:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM request_counts"))
            conn.execute(sa.text("DELETE FROM queue_buckets"))
            conn.execute(
                sa.text(
                    "INSERT INTO request_counts (org_id, model, status, n) "
                    "SELECT org_id, model, status, count(*) FROM requests GROUP BY org_id, model, status"
                )
            )
            for level, bits in enumerate((SMALL_BITS, LARGE_BITS)):
                conn.execute(
                    sa.text(
                        f"INSERT INTO queue_buckets (level, priority, bucket, n) SELECT {level}, priority, "
                        f"seq >> {bits}, count(*) FROM requests WHERE status = 'queued' "
                        f"GROUP BY priority, seq >> {bits}"
                    )
                )
    # As autovacuum would after a bulk load: the kept counts were updated once per row, leaving dead versions.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE"))
    return time.perf_counter() - started


def timed(samples: list[float], fn: Callable[[], Any]) -> Any:
    """Run ``fn`` and append its milliseconds to ``samples``."""
    started = time.perf_counter()
    out = fn()
    samples.append((time.perf_counter() - started) * 1000)
    return out


def summary(samples: list[float]) -> dict[str, float]:
    """p50, p99 and max of a list of milliseconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * len(ordered)))]
    return {"p50": round(statistics.median(ordered), 3), "p99": round(p99, 3), "max": round(ordered[-1], 3)}


def measure(store: SqlStore, rows: int, samples: int, rng: random.Random) -> dict[str, dict[str, float]]:
    """Time each call ``samples`` times at the table's current size, interleaved."""
    times: dict[str, list[float]] = {name: [] for name in ("post", "get", "list_first", "list_deep", "claim_finish")}
    middle = encode_cursor(rows // 2)
    worker = f"bench-{uuid.uuid4().hex[:6]}"
    for _ in range(samples):
        new = NewRequest(request_id=str(uuid.uuid4()), org_id=ORG, model=MODEL, payload={"prompt": "scale"})
        timed(times["post"], lambda new=new: store.enqueue(new))
        queued = request_id(2 * rng.randrange(1, rows // 2))  # an even row: queued (unless claimed meanwhile)
        timed(times["get"], lambda queued=queued: store.get(queued, ORG))
        timed(times["list_first"], lambda: store.list(ORG, limit=20))
        timed(times["list_deep"], lambda: store.list(ORG, limit=20, cursor=middle))

        def claim_finish() -> None:
            record = store.claim(worker, [MODEL], 60)
            assert record is not None and record.status is Status.PROCESSING
            store.finish(record.request_id, worker, {"media": []})

        timed(times["claim_finish"], claim_finish)
        time.sleep(0.01)  # spread the samples over time, so periodic work shows in the tail
    return {name: summary(values) for name, values in times.items()}


@contextmanager
def open_store(kind: str, pg_admin_url: str) -> Iterator[SqlStore]:
    """A fresh, migrated store: an SQLite file in a temporary folder, or a throwaway PostgreSQL database."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="vq-scale-") as tmp:
            store = SqlStore.open(f"sqlite:///{tmp}/scale.db")
            try:
                yield store
            finally:
                store.close()
        return
    name = f"vq_scale_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base, _, _ = pg_admin_url.rpartition("/")
    store = SqlStore.open(f"{base}/{name}")
    try:
        yield store
    finally:
        store.close()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Fill each store to each size in turn and measure; answer the report."""
    rng = random.Random(20)
    report: dict[str, Any] = {
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "samples": args.samples,
        "results": {},
    }
    for kind in args.stores:
        per_size: dict[str, Any] = {}
        with open_store(kind, args.pg_admin_url) as store:
            filled = 0
            for size in args.sizes:
                fill_s = fill(store, filled + 1, size)
                filled = size
                per_size[str(size)] = {"fill_s": round(fill_s, 1), **measure(store, size, args.samples, rng)}
                print(kind, size, json.dumps(per_size[str(size)]), flush=True)
        report["results"][kind] = per_size
    return report


def main() -> None:
    """Parse flags, run, print and save the report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,100000,1000000", help="table sizes, ascending (comma-separated)")
    parser.add_argument("--stores", default="sqlite,postgresql", help="sqlite, postgresql or both")
    parser.add_argument("--samples", type=int, default=200, help="timings of each call per size")
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.stores = [s.strip() for s in args.stores.split(",")]
    if args.sizes != sorted(args.sizes) or min(args.sizes) < 4:
        parser.error("--sizes must ascend and start at 4 or more")
    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
