"""The baseline for bench/api.py: a bare FastAPI app doing the same SQLite insert and select, nothing else."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request

DB = os.environ.get("BARE_DB", "bare.db")
_local = threading.local()


def _conn() -> sqlite3.Connection:
    conn: sqlite3.Connection | None = getattr(_local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(DB, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        _local.conn = conn
    return conn


with sqlite3.connect(DB) as _setup:
    _setup.execute(
        "CREATE TABLE IF NOT EXISTS requests (seq INTEGER PRIMARY KEY, request_id TEXT UNIQUE, model TEXT, "
        "status TEXT, payload TEXT, created_at REAL)"
    )

app = FastAPI()


@app.get("/healthz")
def healthz() -> dict[str, str]:
    """Alive."""
    return {"status": "ok"}


@app.post("/requests")
async def submit(request: Request) -> dict[str, Any]:
    """Insert a row and answer it."""
    body = await request.json()
    rid = str(uuid.uuid4())
    now = time.time()
    conn = _conn()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "INSERT INTO requests (request_id, model, status, payload, created_at) VALUES (?, ?, 'queued', ?, ?)",
        (rid, body["model"], json.dumps(body["payload"]), now),
    )
    conn.execute("COMMIT")
    return {"request_id": rid, "model": body["model"], "status": "queued", "created_at": int(now)}


@app.get("/requests/{request_id}")
def get(request_id: str) -> dict[str, Any]:
    """Select a row and answer it."""
    row = (
        _conn()
        .execute(
            "SELECT request_id, model, status, payload, created_at FROM requests WHERE request_id = ?", (request_id,)
        )
        .fetchone()
    )
    return {
        "request_id": row[0],
        "model": row[1],
        "status": row[2],
        "payload": json.loads(row[3]),
        "created_at": row[4],
    }
