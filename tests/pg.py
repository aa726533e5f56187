"""The real PostgreSQL this machine kind runs (127.0.0.1:5432, user postgres, trust auth): throwaway databases."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

#: The server's address; tests make and drop their own databases on it.
ADMIN_URL = os.environ.get("VIDQUEUE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin() -> psycopg.Connection:
    return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)


def url_for(name: str) -> str:
    """The URL of database ``name`` on the test server."""
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


def create_database(prefix: str = "vq_test") -> str:
    """Create an empty database with a unique name; answer its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url_for(name)


def drop_database(url: str) -> None:
    """Drop a database made by ``create_database``, closing whatever still holds it."""
    name = url.rpartition("/")[2]
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def database(prefix: str = "vq_test") -> Iterator[str]:
    """A throwaway database for the span of the block."""
    url = create_database(prefix)
    try:
        yield url
    finally:
        drop_database(url)


def truncate(url: str) -> None:
    """Empty vidqueue's tables (the schema stays), so one database serves many tests."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = "requests, api_keys, workers, idempotency_keys, webhook_deliveries, webhook_secrets"
        tables += ", request_counts, queue_buckets"  # kept by triggers, which TRUNCATE does not fire
        conn.execute(f"TRUNCATE {tables} RESTART IDENTITY")


def restart_server(timeout: float = 60) -> None:
    """Restart the PostgreSQL server (every connection drops) and wait until it accepts connections again."""
    version = sorted(os.listdir("/etc/postgresql"))[0]
    ctl = shutil.which("pg_ctlcluster") or "pg_ctlcluster"
    subprocess.run([ctl, "--skip-systemctl-redirect", version, "main", "restart"], check=True, timeout=timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with _admin() as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            time.sleep(0.2)
    raise AssertionError("PostgreSQL did not come back after a restart")
