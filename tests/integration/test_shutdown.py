"""Graceful shutdown: on SIGTERM the API drains (submits 503, reads go on) and workers finish within their grace,
or hand their request back when it runs out; nothing is lost."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from tests.cases import PROMPT, TURBO
from tests.support import Server, WorkerProcess, fast_env, free_port, submit, wait_for
from vidqueue.store import RequestRecord, Status
from vidqueue.store.sql import SqlStore


def _row(data: Path, request_id: str) -> RequestRecord:
    """A request as the store has it (for when no server is up to ask)."""
    store = SqlStore.open(f"sqlite:///{(data / 'vidqueue.db').resolve()}")
    try:
        row = store.get(request_id)
    finally:
        store.close()
    assert row is not None
    return row


def test_sigterm_lets_the_running_request_finish_while_the_api_drains(tmp_path: Path) -> None:
    env = fast_env(VIDQUEUE_EMULATOR_LATENCY_S="3", VIDQUEUE_SHUTDOWN_GRACE_S="30", VIDQUEUE_DRAIN_S="1")
    server = Server(data_dir=tmp_path / "data", port=free_port(), env=env, workers=1).start()
    try:
        with server.client() as api:
            running = submit(api, TURBO, {"prompt": PROMPT})
            waiting = submit(api, TURBO, {"prompt": PROMPT})
            wait_for(api, running["request_id"], {"processing"})
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            refused = api.post("/requests", json={"model": TURBO, "payload": {"prompt": PROMPT}})
            assert refused.status_code == 503, refused.text
            assert refused.json()["code"] == "shutting_down" and int(refused.headers["Retry-After"]) >= 1
            assert httpx.get(server.url + "/readyz", timeout=5).status_code == 503
            # Reads go on while the worker finishes, so the client sees the ending.
            done = wait_for(api, running["request_id"], timeout=30)
            assert done["status"] == "success" and done["attempts"] == 1, done
        assert server.proc.wait(timeout=30) == 0, server.log()
    finally:
        server.stop()
    # The worker claimed nothing once told to stop: the second request waits in the queue for the next start.
    later = _row(tmp_path / "data", waiting["request_id"])
    assert later.status is Status.QUEUED and later.attempts == 0


def test_a_request_not_finished_within_the_grace_is_handed_back_and_finished_after_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    slow = fast_env(VIDQUEUE_EMULATOR_LATENCY_S="20", VIDQUEUE_SHUTDOWN_GRACE_S="1")
    server = Server(data_dir=data, port=free_port(), env=slow, workers=1).start()
    key = server.key
    try:
        with server.client() as api:
            created = submit(api, TURBO, {"prompt": PROMPT})
            wait_for(api, created["request_id"], {"processing"})
        assert server.proc is not None
        stopped = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=20) == 0, server.log()
        assert time.monotonic() - stopped < 10  # the grace, not the 20 s of work
    finally:
        server.stop()
    row = _row(data, created["request_id"])
    assert row.status is Status.QUEUED and row.attempts == 0 and row.lease_owner is None
    restarted = Server(data_dir=data, port=free_port(), env=fast_env(), workers=1).start()
    try:
        with restarted.client(key) as api:
            done = wait_for(api, created["request_id"], timeout=30)
            assert done["status"] == "success" and done["attempts"] == 1, done
    finally:
        restarted.stop()


def test_a_standalone_worker_sigtermed_mid_request_hands_it_to_another_worker(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(data_dir=data, port=free_port(), env=fast_env(), workers=0).start()
    first = second = None
    try:
        first = WorkerProcess(data, fast_env(VIDQUEUE_EMULATOR_LATENCY_S="20", VIDQUEUE_SHUTDOWN_GRACE_S="0.5")).start()
        with server.client() as api:
            created = submit(api, TURBO, {"prompt": PROMPT})
            running = wait_for(api, created["request_id"], {"processing"})
            assert running["qworker_id"] == first.worker_id
            assert first.proc is not None
            first.proc.send_signal(signal.SIGTERM)
            assert first.proc.wait(timeout=15) == 0, "".join(first.output)
            back = api.get(f"/requests/{created['request_id']}").json()
            assert back["status"] == "queued" and back["attempts"] == 0, back
            second = WorkerProcess(data, fast_env()).start()
            done = wait_for(api, created["request_id"], timeout=30)
            assert done["status"] == "success" and done["attempts"] == 1, done
            assert done["qworker_id"] == second.worker_id
            assert httpx.get(done["outcome"]["video_url"], timeout=30).status_code == 200
    finally:
        for worker in (first, second):
            if worker is not None:
                worker.stop()
        server.stop()
