"""The store conformance fixtures: one ``store`` per implementation (in-memory twin, SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pg
from vidqueue.store import MemoryStore, Store
from vidqueue.store.sql import SqlStore


class Clock:
    """A clock tests move by hand, so lease expiry needs no sleeping."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """One PostgreSQL database for the module, migrated once; each test empties it first."""
    with pg.database() as url:
        SqlStore.open(url).close()
        yield url


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Iterator[Store]:
    s: Store
    if request.param == "memory":
        s = MemoryStore(clock)
    elif request.param == "sqlite":
        s = SqlStore.open(f"sqlite:///{tmp_path}/q.db", clock)
    else:
        url = request.getfixturevalue("pg_url")
        pg.truncate(url)
        s = SqlStore.open(url, clock)
    yield s
    s.close()
