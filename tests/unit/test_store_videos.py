"""What the /v1/videos dialect needs of the store: oldest-first pages and deleting one finished request."""

from __future__ import annotations

from vidqueue.store import Idempotency, NewRequest, Status, Store


def _new(i: int, org: str = "a", idem: Idempotency | None = None) -> NewRequest:
    return NewRequest(request_id=f"r{i}", org_id=org, model="m", payload={"i": i}, idempotency=idem)


def test_list_oldest_first_pages_forward_from_a_cursor(store: Store) -> None:
    for i in range(5):
        store.enqueue(_new(i))
    store.enqueue(_new(9, org="b"))
    first = store.list("a", limit=2, oldest_first=True)
    assert [r.request_id for r in first.items] == ["r0", "r1"]
    assert first.total == 5 and first.next_cursor is not None
    second = store.list("a", limit=2, cursor=first.next_cursor, oldest_first=True)
    assert [r.request_id for r in second.items] == ["r2", "r3"]
    last = store.list("a", limit=2, cursor=second.next_cursor, oldest_first=True)
    assert [r.request_id for r in last.items] == ["r4"] and last.next_cursor is None
    assert [r.request_id for r in store.list("a", limit=2).items] == ["r4", "r3"]


def test_delete_removes_a_finished_request_with_its_idempotency_key(store: Store) -> None:
    idem = Idempotency("k", "f")
    store.enqueue(_new(1, idem=idem))
    store.cancel("r1", "a")
    assert store.delete("r1", "b") is None  # another organisation's
    gone = store.delete("r1", "a")
    assert gone is not None and gone.request_id == "r1" and gone.org_id == "a"
    assert store.get("r1") is None
    assert store.replay("a", idem) is None  # the key no longer names it
    assert store.delete("r1", "a") is None


def test_delete_leaves_an_unfinished_request_alone(store: Store) -> None:
    store.enqueue(_new(1))
    assert store.delete("r1", "a") is None
    row = store.get("r1", "a")
    assert row is not None and row.status is Status.QUEUED
