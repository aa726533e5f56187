"""The webhook outbox in the store, on the in-memory twin, SQLite and PostgreSQL: one delivery per status change."""

from __future__ import annotations

import threading

from tests.unit.conftest import Clock
from vidqueue.store import Attempt, NewRequest, Store


def _new(i: int, url: str | None = "https://hooks.example/cb", org: str = "a") -> NewRequest:
    return NewRequest(request_id=f"r{i}", org_id=org, model="m", payload={"i": i}, callback_url=url)


def _events(store: Store, request_id: str) -> list[str]:
    return [d.event for d in store.deliveries(request_id)]


def test_every_status_change_of_a_request_with_a_callback_is_stored(store: Store, clock: Clock) -> None:
    store.enqueue(_new(1))
    store.enqueue(_new(2, url=None))
    store.claim("w", ["m"], 30)
    clock.now += 1
    store.finish("r1", "w", {"media": []})
    assert _events(store, "r1") == ["queued", "processing", "success"]
    assert store.deliveries("r2") == []  # no callback_url, no deliveries
    first, _, last = store.deliveries("r1")
    assert first.url == "https://hooks.example/cb" and first.org_id == "a" and first.state == "pending"
    # Each carries the request as it was at its change, and its own id (the webhook-id header).
    assert first.request().status.value == "queued" and first.request().payload == {"i": 1}
    assert last.request().status.value == "success" and last.request().attempts == 1
    assert last.request().finished_at == clock.now
    assert len({d.delivery_id for d in store.deliveries("r1")}) == 3


def test_cancel_release_and_recovery_are_changes_too(store: Store, clock: Clock) -> None:
    store.enqueue(_new(1))
    store.cancel("r1", "a")
    assert _events(store, "r1") == ["queued", "cancelled"]
    store.enqueue(_new(2))
    store.claim("w", ["m"], 30)
    store.release("r2", "w")
    store.claim("w", ["m"], 30)
    clock.now += 31
    store.recover(max_attempts=1)
    assert _events(store, "r2") == ["queued", "processing", "queued", "processing", "failed"]
    # Progress is not a status change.
    store.enqueue(_new(3))
    store.claim("w", ["m"], 30)
    store.set_progress("r3", "w", 50, 30)
    assert _events(store, "r3") == ["queued", "processing"]


def test_claims_hand_out_each_request_s_oldest_pending_delivery_only(store: Store, clock: Clock) -> None:
    store.enqueue(_new(1))
    store.enqueue(_new(2))
    store.cancel("r1", "a")
    due = store.claim_deliveries("d1", limit=10, lease_s=30)
    # r1 has two pending deliveries; only its first is due, so a receiver sees them in order.
    assert [(d.request_id, d.event) for d in due] == [("r1", "queued"), ("r2", "queued")]
    assert store.claim_deliveries("d2", limit=10, lease_s=30) == []  # leased
    assert store.settle_delivery(due[0].delivery_id, "d1", Attempt(ok=True, status_code=204))
    assert not store.settle_delivery(due[1].delivery_id, "d2", Attempt(ok=True))  # not d2's lease
    nxt = store.claim_deliveries("d2", limit=10, lease_s=30)
    assert [(d.request_id, d.event) for d in nxt] == [("r1", "cancelled")]
    settled = store.deliveries("r1")[0]
    assert (settled.state, settled.attempts, settled.last_status_code) == ("delivered", 1, 204)
    assert settled.delivered_at == clock.now


def test_a_failed_attempt_waits_for_its_retry_time_or_gives_up(store: Store, clock: Clock) -> None:
    store.enqueue(_new(1))
    (d,) = store.claim_deliveries("d", limit=10, lease_s=30)
    store.settle_delivery(
        d.delivery_id, "d", Attempt(ok=False, status_code=500, error="HTTP 500", retry_at=clock.now + 10)
    )
    assert store.claim_deliveries("d", limit=10, lease_s=30) == []  # not due yet
    clock.now += 10
    (again,) = store.claim_deliveries("d", limit=10, lease_s=30)
    assert (again.delivery_id, again.attempts, again.last_error) == (d.delivery_id, 1, "HTTP 500")
    store.settle_delivery(again.delivery_id, "d", Attempt(ok=False, error="gone"))
    clock.now += 3600
    assert store.claim_deliveries("d", limit=10, lease_s=30) == []
    (ended,) = store.deliveries("r1")
    assert (ended.state, ended.attempts, ended.last_error) == ("failed", 2, "gone")


def test_an_expired_lease_is_claimed_again(store: Store, clock: Clock) -> None:
    store.enqueue(_new(1))
    assert len(store.claim_deliveries("crashed", limit=10, lease_s=30)) == 1
    clock.now += 31
    (d,) = store.claim_deliveries("d", limit=10, lease_s=30)
    assert store.settle_delivery(d.delivery_id, "d", Attempt(ok=True))
    assert not store.settle_delivery(d.delivery_id, "crashed", Attempt(ok=True))


def test_claims_take_organisations_in_turn_up_to_their_in_flight_cap(store: Store, clock: Clock) -> None:
    for i in range(10):  # a backlog of the busy organisation, all older than the calm one's
        store.enqueue(_new(i, org="busy"))
    clock.now += 1
    store.enqueue(_new(100, org="calm"))
    store.enqueue(_new(101, org="calm"))
    first = store.claim_deliveries("d", limit=3, lease_s=60, per_org=2)
    # Round robin: the busy organisation's oldest, then the calm one's, then each one's second.
    assert sorted(d.request_id for d in first) == ["r0", "r1", "r100"]
    # With two of its sends in flight, the busy organisation gets no more; the calm one gets its next.
    nxt = store.claim_deliveries("d", limit=3, lease_s=60, per_org=2, busy={"busy": 2, "calm": 1})
    assert [d.request_id for d in nxt] == ["r101"]
    assert store.claim_deliveries("d", limit=3, lease_s=60, per_org=2, busy={"busy": 2, "calm": 2}) == []
    # Without a cap the turns still alternate, oldest first within each organisation.
    rest = store.claim_deliveries("e", limit=8, lease_s=60)
    assert [d.request_id for d in rest] == [f"r{i}" for i in range(2, 10)]


def test_concurrent_dispatchers_never_take_the_same_delivery(store: Store) -> None:
    for i in range(40):
        store.enqueue(_new(i))
    taken: list[str] = []
    lock = threading.Lock()

    def drain(owner: str) -> None:
        while batch := store.claim_deliveries(owner, limit=3, lease_s=60):
            with lock:
                taken.extend(d.delivery_id for d in batch)

    threads = [threading.Thread(target=drain, args=(f"d{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(taken) == 40 and len(set(taken)) == 40


def test_the_organisation_secret_is_made_once(store: Store) -> None:
    made = iter(["whsec_first", "whsec_second"])
    assert store.webhook_secret("a", lambda: next(made)) == "whsec_first"
    assert store.webhook_secret("a", lambda: next(made)) == "whsec_first"
    assert store.webhook_secret("b", lambda: "whsec_b") == "whsec_b"
