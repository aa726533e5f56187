"""Queue positions and list totals from the counts the store keeps (migration 0007), on all three stores.

Positions must equal the rank in claim order (priority, then age) whatever happens to the rows around a request:
claims, cancels, releases and deletes, across buckets of 1024 sequence numbers. Totals must equal a plain count.
"""

from __future__ import annotations

import random

import sqlalchemy as sa

from vidqueue.store import NewRequest, Status, Store
from vidqueue.store.sql import SqlStore


def _new(i: int, priority: int, org: str = "a", model: str = "m") -> NewRequest:
    return NewRequest(request_id=f"r{i}", org_id=org, model=model, payload={"i": i}, priority=priority)


def _expected(store: Store, ids: list[str]) -> dict[str, int]:
    """Positions by brute force: rank among every queued row by (priority descending, seq)."""
    rows = [r for r in (store.get(rid) for rid in ids) if r is not None and r.status is Status.QUEUED]
    order = sorted(rows, key=lambda r: (-r.priority, r.seq))
    return {r.request_id: i + 1 for i, r in enumerate(order)}


def _jump(store: Store, to: int) -> None:
    """Move the next sequence number past ``to`` (spanning buckets without inserting thousands of rows)."""
    if not isinstance(store, SqlStore):
        return
    engine = store._engine  # the test reaches into the table on purpose
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('requests', 'seq'), :to)"), {"to": to})
        else:
            # SQLite numbers a row one past the largest seq: leave a finished row of another organisation there.
            conn.execute(
                sa.text(
                    "INSERT INTO requests (seq, request_id, org_id, model, status, priority, payload, created_at, "
                    "updated_at, queued_at, progress, attempts) "
                    "VALUES (:to, :rid, 'zz', 'm', 'success', 0, '{}', 0, 0, 0, 100, 1)"
                ),
                {"to": to, "rid": f"jump-{to}"},
            )


def test_positions_follow_claim_order_through_every_change(store: Store) -> None:
    rng = random.Random(3)
    ids: list[str] = []
    for i in range(60):
        if i % 15 == 14:
            _jump(store, 7000 * (i // 15 + 1) + rng.randrange(300))  # later small and large buckets
        made = store.enqueue(_new(i, priority=rng.choice([0, 0, 0, 5, -2]), org=rng.choice(["a", "b"])))
        ids.append(f"r{i}")
        # A submit's answer carries its position too (on SQLite read in the insert's own transaction).
        assert made.queue_position == _expected(store, ids)[made.request_id]
    for rid in rng.sample(ids, 8):
        store.cancel(rid, store.get(rid).org_id)  # type: ignore[union-attr]
    for _ in range(6):
        claimed = store.claim("w", ["m"], 60)
        assert claimed is not None
        if rng.random() < 0.5:
            store.release(claimed.request_id, "w")  # back in the queue, where it was
    expected = _expected(store, ids)
    assert expected
    for rid in ids:
        got = store.get(rid)
        assert got is not None
        assert got.queue_position == expected.get(rid), (rid, got.status, got.priority, got.seq)
    # A page of a listing carries the same positions.
    page = store.list("a", limit=100)
    assert {r.request_id: r.queue_position for r in page.items if r.queue_position} == {
        rid: pos
        for rid, pos in expected.items()
        if store.get(rid).org_id == "a"  # type: ignore[union-attr]
    }


def test_totals_are_exact_through_claims_cancels_and_filters(store: Store) -> None:
    for i in range(12):
        store.enqueue(_new(i, priority=0, model="x" if i % 3 == 0 else "m"))
    store.enqueue(_new(100, priority=0, org="b"))
    store.cancel("r1", "a")
    claimed = store.claim("w", ["m"], 60)
    assert claimed is not None
    store.finish(claimed.request_id, "w", {"media": []})
    assert store.list("a").total == 12
    assert store.list("a", model="x").total == 4
    assert store.list("a", status=Status.QUEUED).total == 10
    assert store.list("a", status=Status.CANCELLED).total == 1
    assert store.list("a", model="m", status=Status.SUCCESS).total == 1
    assert store.list("b").total == 1 and store.list("nobody").total == 0
