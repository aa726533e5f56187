"""The PostgreSQL store beyond the conformance suite: wake-ups across processes, restarts, concurrent migration."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from tests import pg
from tests.support import free_port, run_cli
from vidqueue.errors import StoreUnavailable
from vidqueue.store import NewRequest, Status, migrate
from vidqueue.store.sql import SqlStore

pytestmark = pytest.mark.slow


@pytest.fixture()
def db() -> Iterator[str]:
    with pg.database() as url:
        yield url


def _new(i: int, model: str = "m") -> NewRequest:
    return NewRequest(request_id=f"r{i}", org_id="o", model=model, payload={"i": i})


class Heard:
    """A subscriber that remembers the models it was told of."""

    def __init__(self) -> None:
        self.models: list[str] = []
        self.changed = threading.Condition()

    def __call__(self, model: str) -> None:
        with self.changed:
            self.models.append(model)
            self.changed.notify_all()

    def wait_for(self, model: str, timeout: float = 10) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: model in self.models, timeout)


def test_a_submit_wakes_a_worker_in_another_process_through_notify(db: str) -> None:
    api, worker = SqlStore.open(db), SqlStore.open(db)  # separate engines and connections: as two machines
    heard = Heard()
    try:
        worker.subscribe(heard)
        assert heard.wait_for("")  # the listener connected (it calls back once on every connect)
        api.enqueue(_new(1, model="wan"))
        assert heard.wait_for("wan")
        # Handed back to the queue (a release or a recovery) wakes workers too.
        row = worker.claim("w", ["wan"], 60)
        assert row is not None
        heard.models.clear()
        worker.release("r1", "w")
        assert heard.wait_for("wan")
    finally:
        api.close()
        worker.close()


@pytest.mark.serial  # restarts the machine's PostgreSQL under every other test that uses it
def test_the_store_and_its_listener_come_back_after_a_database_restart(db: str) -> None:
    store, other = SqlStore.open(db), SqlStore.open(db)
    heard = Heard()
    try:
        store.subscribe(heard)
        assert heard.wait_for("")
        store.enqueue(_new(1))
        store.claim("w", ["m"], 60)
        heard.models.clear()
        pg.restart_server()
        # The pool replaces connections the restart broke; nothing that was committed is gone.
        deadline = time.monotonic() + 20
        while True:
            try:
                row = store.get("r1")
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the store did not come back"
                time.sleep(0.2)
        assert row is not None and row.status is Status.PROCESSING and row.lease_owner == "w"
        assert store.finish("r1", "w", {"media": []}).status is Status.SUCCESS
        # The listener reconnected (and said so, since it may have missed some) and hears other processes again.
        assert heard.wait_for("", timeout=20)
        other.enqueue(_new(2, model="after"))
        assert heard.wait_for("after")
    finally:
        store.close()
        other.close()


def test_an_unreachable_database_is_a_clear_error() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    with pytest.raises(StoreUnavailable, match="Cannot open the store"):
        SqlStore.open(url)
    out = run_cli("keys", "list", "--database-url", url)
    assert out.returncode == 1
    assert out.stderr.startswith("error: Cannot open the store") and "Traceback" not in out.stderr


def test_processes_starting_together_migrate_once(db: str) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "vidqueue", "keys", "create", "--org", f"org{i}", "--database-url", db],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(6)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [err for _, err in results]
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(migrate.head_revision(),)]
        assert conn.execute("SELECT count(*) FROM api_keys").fetchone() == (6,)
    listed = run_cli("keys", "list", "--database-url", db)
    assert listed.returncode == 0 and all(f"org{i}" in listed.stdout for i in range(6))
