"""Past one machine: 2 API processes and 4 workers share one PostgreSQL database and one S3 bucket.

300 requests from 3 organisations, a tenant's burst first, a worker SIGKILLed mid-run and PostgreSQL restarted
mid-run: every request ends `success`, the emulator's journal shows each generated to the end exactly once, the
small tenants start before the big one's 60th request, and the videos come back from S3 and decode.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests import pg
from tests.s3server import S3Server, s3_server_fixture  # noqa: F401
from tests.support import Server, WorkerProcess, decode_video, fast_env, free_port, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.serial]  # restarts the machine's PostgreSQL mid-run

ORGS = {"big": 200, "small1": 50, "small2": 50}
FIRST_WAVE = 10  # each small organisation's first requests, submitted right after the big one's 200
PAYLOAD = {"prompt": "a lighthouse at dusk", "aspect_ratio": "1:1", "duration": "5"}


class Cluster:
    """The processes of one deployment and what the test needs to drive them."""

    def __init__(self, tmp: Path, db: str, s3: S3Server, bucket: str) -> None:
        self.db = db
        self.journal = tmp / "journal.jsonl"
        self.env = fast_env(
            VIDQUEUE_DATABASE_URL=db,
            VIDQUEUE_STORAGE=f"s3://{bucket}/media",
            VIDQUEUE_S3_ENDPOINT_URL=s3.endpoint_url,
            VIDQUEUE_EMULATOR_JOURNAL=str(self.journal),
            # A lease that outlives a database restart (the heartbeat is 1 s), and room for a request to be hit
            # by both the killed worker and the restart.
            VIDQUEUE_LEASE_S="15",
            VIDQUEUE_MAX_ATTEMPTS="3",
            **s3.env,
        )
        self.tmp = tmp
        self.keys: dict[str, str] = {}
        self.apis: list[Server] = []
        self.workers: list[WorkerProcess] = []

    def start(self) -> None:
        for org in ORGS:
            out = run_cli("keys", "create", "--org", org, env=self.env)
            assert out.returncode == 0, out.stderr
            self.keys[org] = out.stdout.strip().splitlines()[-1]
        # Each process has its own data dir: nothing is shared but the database and the bucket.
        for i in range(2):
            api = Server(data_dir=self.tmp / f"api{i}", port=free_port(), env=self.env, workers=0)
            self.apis.append(api.start())
        for i in range(4):
            self.workers.append(WorkerProcess(self.tmp / f"worker{i}", self.env).start())

    def stop(self) -> None:
        for proc in [*self.workers, *self.apis]:
            proc.stop()

    def client(self, org: str, api: int) -> httpx.Client:
        return self.apis[api % 2].client(self.keys[org])

    def submit(self, org: str, count: int) -> list[str]:
        """Submit ``count`` requests for ``org`` as fast as a client can: 4 connections to each API at once."""
        clients = [self.client(org, i) for i in range(8)]

        def one(i: int) -> list[str]:
            out = []
            for _ in range(i, count, len(clients)):
                resp = clients[i].post("/requests", json={"model": "Kling-Text2Video-V2-Master", "payload": PAYLOAD})
                assert resp.status_code == 200, resp.text
                out.append(str(resp.json()["request_id"]))
            return out

        try:
            with ThreadPoolExecutor(len(clients)) as pool:
                return [rid for chunk in pool.map(one, range(len(clients))) for rid in chunk]
        finally:
            for client in clients:
                client.close()

    def rows(self) -> list[dict[str, Any]]:
        with psycopg.connect(self.db) as conn:
            cur = conn.execute("SELECT request_id, org_id, status, attempts, qworker_id FROM requests")
            names = [d.name for d in cur.description or []]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows() if r["status"] == status)

    def wait_count(self, status: str, at_least: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.count(status) < at_least:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"fewer than {at_least} requests reached {status}: {Counter(r['status'] for r in self.rows())}"
                )
            time.sleep(0.2)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.journal.read_text().splitlines()]


@pytest.fixture()
def cluster(tmp_path: Path, s3_server: S3Server) -> Iterator[Cluster]:
    bucket = s3_server.make_bucket("vq-cluster")
    with pg.database("vq_cluster") as db:
        c = Cluster(tmp_path, db, s3_server, bucket)
        try:
            c.start()
            yield c
        finally:
            c.stop()


def test_three_hundred_requests_across_two_apis_and_four_workers_survive_a_kill_and_a_database_restart(
    cluster: Cluster,
) -> None:
    ids: dict[str, list[str]] = defaultdict(list)
    ids["big"] += cluster.submit("big", ORGS["big"])
    for org in ("small1", "small2"):
        ids[org] += cluster.submit(org, FIRST_WAVE)
    first_wave = {rid for org in ("small1", "small2") for rid in ids[org]}
    for org in ("small1", "small2"):
        ids[org] += cluster.submit(org, ORGS[org] - FIRST_WAVE)

    # A worker machine dies holding a request.
    cluster.wait_count("success", 60, timeout=120)
    by_id = {w.worker_id: w for w in cluster.workers}
    held = [r for r in cluster.rows() if r["status"] == "processing" and r["qworker_id"] in by_id]
    assert held, "no worker held a request to kill it with"
    victim = by_id[held[0]["qworker_id"]]
    victim.kill()
    victim_held = {
        r["request_id"] for r in cluster.rows() if r["status"] == "processing" and r["qworker_id"] == victim.worker_id
    }
    assert victim_held

    # The database restarts under the rest: every connection drops.
    cluster.wait_count("success", 150, timeout=120)
    pg.restart_server()

    cluster.wait_count("success", 300, timeout=240)
    rows = cluster.rows()
    assert len(rows) == 300
    assert Counter(r["status"] for r in rows) == {"success": 300}
    assert Counter(r["org_id"] for r in rows) == ORGS

    # Generated to the end exactly once each; only the killed worker's requests were started twice.
    events = cluster.events()
    done = Counter(e["request_id"] for e in events if e["event"] == "done")
    starts = Counter(e["request_id"] for e in events if e["event"] == "start")
    assert set(done) == {r["request_id"] for r in rows}
    assert set(done.values()) == {1}
    assert {rid for rid, n in starts.items() if n > 1} <= victim_held
    assert all(r["attempts"] >= 2 for r in rows if r["request_id"] in victim_held)

    # Fairness: every one of the small organisations' first requests started before the big one's 60th.
    first_start: dict[str, float] = {}
    for e in events:
        if e["event"] == "start":
            first_start.setdefault(e["request_id"], e["t"])
    last_small = max(first_start[rid] for rid in first_wave)
    big_before = sum(1 for rid in ids["big"] if first_start[rid] < last_small)
    print(f"fairness: {big_before} of the big organisation's requests started before the small ones' last")
    assert big_before < 60

    # Each organisation sees its own requests only, through either API; videos come from S3 and decode.
    for i, (org, expected) in enumerate(ORGS.items()):
        with cluster.client(org, i) as client:
            page = client.get("/requests", params={"limit": 5}).json()
            assert page["total"] == expected
            other = next(o for o in ORGS if o != org)
            assert client.get(f"/requests/{ids[other][0]}").status_code == 404
            body = client.get(f"/requests/{ids[org][-1]}").json()
        url = body["outcome"]["media_urls"][0]["url"]
        assert url.startswith(cluster.env["VIDQUEUE_S3_ENDPOINT_URL"])
        video = httpx.get(url, timeout=30)
        assert video.status_code == 200
        assert decode_video(video.content) == (120, 720, 720)
