"""A damaged SQLite file: refused at start in one line, and answered 503 store_unavailable while serving."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.cases import PROMPT, TURBO
from tests.support import UPSTREAM_KEYS, fast_env, free_port, running_server, submit
from vidqueue.store.sql import SqlStore


def _serve(data: Path) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if k not in UPSTREAM_KEYS}, **fast_env()}
    return subprocess.run(
        [sys.executable, "-m", "vidqueue", "serve", "--data-dir", str(data), "--port", str(free_port())],
        capture_output=True,
        text=True,
        env=env,
        timeout=20,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _assert_refused(data: Path, reason: str) -> None:
    started = time.monotonic()
    out = _serve(data)
    assert out.returncode != 0, out.stdout + out.stderr
    assert time.monotonic() - started < 15
    assert "Traceback" not in out.stderr + out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    db = str(data / "vidqueue.db")
    assert db in lines[0] and reason in lines[0] and "restore it from a backup" in lines[0], lines[0]


def test_serve_refuses_a_file_that_is_not_a_database_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "vidqueue.db").write_bytes(os.urandom(8192))
    _assert_refused(data, "file is not a database")


def test_serve_refuses_a_database_with_damaged_pages_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db = data / "vidqueue.db"
    SqlStore.open(f"sqlite:///{db}").close()  # a migrated database, checkpointed into the main file on close
    size = db.stat().st_size
    with db.open("r+b") as f:  # page 1 (the schema) and page 2 (the schema version) stay sound
        f.seek(8192)
        f.write(os.urandom(size - 8192))
    _assert_refused(data, "malformed")


def test_serve_refuses_a_database_whose_keys_table_is_damaged_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db = data / "vidqueue.db"
    SqlStore.open(f"sqlite:///{db}").close()
    with sqlite3.connect(db) as conn:  # the schema and version read fine; the keys table's root page does not
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'api_keys'").fetchone()
        page = conn.execute("PRAGMA page_size").fetchone()[0]
    with db.open("r+b") as f:
        f.seek((root - 1) * page)
        f.write(os.urandom(page))
    _assert_refused(data, "malformed")


def _corrupt(data: Path) -> None:
    """Garbage over the database and its write-ahead log (the page cache of open connections may hide it)."""
    db = data / "vidqueue.db"
    for path, keep in ((db, 0), (data / "vidqueue.db-wal", 0)):
        if path.exists():
            with path.open("r+b") as f:
                f.truncate(keep)
                f.write(os.urandom(64 * 1024))


def _assert_store_unavailable(resp: httpx.Response, data: Path) -> None:
    assert resp.status_code == 503, resp.text
    body = resp.json()
    assert body["code"] == "store_unavailable", body
    assert set(body) >= {"error", "code", "details"}
    assert "Traceback" not in resp.text
    assert str(data) not in body["error"], body  # the file's path is for the operator's log, not for clients


def test_a_database_damaged_while_serving_answers_503_and_readyz_says_so(tmp_path: Path) -> None:
    with running_server(tmp_path, workers=1) as server, server.client() as api:
        submit(api, TURBO, {"prompt": PROMPT})
        assert api.get("/requests").status_code == 200
        _corrupt(server.data_dir)
        deadline = time.monotonic() + 10
        while True:
            listed = api.get("/requests")
            if listed.status_code != 200 or time.monotonic() > deadline:
                break
            _corrupt(server.data_dir)  # a write by a worker may have put sound pages back; damage them again
            time.sleep(0.1)
        _assert_store_unavailable(listed, server.data_dir)
        _assert_store_unavailable(httpx.get(server.url + "/metrics", timeout=10), server.data_dir)
        ready = httpx.get(server.url + "/readyz", timeout=10)
        assert ready.status_code == 503, ready.text
        assert ready.json()["code"] == "store_unavailable"
        assert "Traceback" not in ready.text
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
        _assert_store_unavailable(api.get("/requests"), server.data_dir)
        assert "Traceback" not in server.log()
