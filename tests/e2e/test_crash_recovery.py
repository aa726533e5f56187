"""Crash recovery: kill -9 a worker mid-request, kill -9 the whole server, and a request that kills its worker twice."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from tests.cases import MASTER, PROMPT, TURBO
from tests.support import TERMINAL, Server, fast_env, free_port, running_server, submit, wait_for


def _pid_of(worker_id: str) -> int:
    return int(worker_id.rsplit("-", 1)[1])


def _transitions(server: Server, request_id: str, arrow: str) -> int:
    return sum(1 for line in server.log().splitlines() if f"request {request_id} " in line and arrow in line)


def test_killed_worker_is_restarted_and_its_request_still_succeeds_once(tmp_path: Path) -> None:
    with running_server(tmp_path, workers=2, VIDQUEUE_EMULATOR_LATENCY_S="3") as server, server.client() as api:
        created = submit(api, MASTER, {"prompt": PROMPT})
        running = wait_for(api, created["request_id"], {"processing"})
        victim = _pid_of(running["qworker_id"])
        before = set(server.worker_pids())
        os.kill(victim, signal.SIGKILL)
        done = wait_for(api, created["request_id"], timeout=60)
        assert done["status"] == "success", done
        assert done["attempts"] == 2
        assert done["qworker_id"] != running["qworker_id"]
        # Log lines are written in batches: wait for the success line, then make sure no second one follows.
        deadline = time.monotonic() + 10
        while _transitions(server, created["request_id"], "-> success") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert _transitions(server, created["request_id"], "-> success") == 1
        deadline = time.monotonic() + 10
        while len(server.worker_pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        after = set(server.worker_pids())
        assert len(after) == 2 and victim not in after and after != before


def test_request_that_kills_its_worker_twice_ends_failed_worker_lost(tmp_path: Path) -> None:
    with running_server(tmp_path, workers=1, VIDQUEUE_EMULATOR_LATENCY_S="5") as server, server.client() as api:
        created = submit(api, TURBO, {"prompt": PROMPT})
        for attempt in (1, 2):
            deadline = time.monotonic() + 30
            while True:
                body = api.get(f"/requests/{created['request_id']}").json()
                if body["status"] == "processing" and body["attempts"] == attempt:
                    break
                assert time.monotonic() < deadline, body
                time.sleep(0.05)
            os.kill(_pid_of(body["qworker_id"]), signal.SIGKILL)
        done = wait_for(api, created["request_id"], timeout=30)
        assert done["status"] == "failed"
        assert done["outcome"]["error"]["code"] == "worker_lost"
        assert done["error"] == done["outcome"]["error"]["message"]
        # The server goes on serving: a new request still succeeds on the restarted worker.
        after = submit(api, MASTER, {"prompt": PROMPT})
        assert wait_for(api, after["request_id"], timeout=60)["status"] == "success"


def test_server_killed_with_work_in_flight_loses_nothing_after_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = fast_env(VIDQUEUE_EMULATOR_LATENCY_S="2")
    server = Server(data_dir=data, port=free_port(), env=env, workers=2).start()
    key = server.key
    assert key
    with server.client() as api:
        ids = [submit(api, TURBO if i % 2 else MASTER, {"prompt": f"{PROMPT} {i}"})["request_id"] for i in range(8)]
        deadline = time.monotonic() + 30
        while True:
            statuses = {api.get(f"/requests/{rid}").json()["status"] for rid in ids}
            if "processing" in statuses and "queued" in statuses:
                break
            assert time.monotonic() < deadline, statuses
            time.sleep(0.05)
    server.kill()

    restarted = Server(data_dir=data, port=free_port(), env=env, workers=2).start()
    try:
        assert restarted.key is None  # the first key is made once, on an empty data dir
        with restarted.client(key) as api:
            finals = {rid: wait_for(api, rid, timeout=90) for rid in ids}
            assert all(body["status"] in TERMINAL for body in finals.values())
            assert [rid for rid, body in finals.items() if body["status"] != "success"] == []
            listed = api.get("/requests", params={"limit": 100}).json()
            assert listed["total"] == len(ids)
            for body in finals.values():
                video = httpx.get(body["outcome"]["video_url"], timeout=30)
                assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    finally:
        restarted.stop()
