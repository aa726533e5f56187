"""The store conformance suite: the same behaviour from the in-memory twin, SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect

from tests.unit.conftest import Clock
from vidqueue.errors import Conflict, LeaseLost, NotFound
from vidqueue.store import Idempotency, MemoryStore, NewRequest, Status, Store
from vidqueue.store.keys import hash_key, new_api_key
from vidqueue.store.sql import SqlStore


def _new(i: int, org: str = "a", model: str = "m", priority: int = 0) -> NewRequest:
    return NewRequest(request_id=f"r{i}", org_id=org, model=model, payload={"i": i}, priority=priority)


def test_enqueue_then_get_within_the_org_only(store: Store) -> None:
    store.enqueue(_new(1))
    row = store.get("r1", "a")
    assert row is not None and row.status is Status.QUEUED and row.payload == {"i": 1}
    assert row.queue_position == 1 and type(row.queue_position) is int  # not PostgreSQL's Decimal: answers need JSON
    assert store.get("r1", "b") is None
    assert store.get("nope") is None


def test_claim_takes_oldest_of_served_models_and_counts_the_attempt(store: Store, clock: Clock) -> None:
    store.enqueue(_new(1, model="x"))
    store.enqueue(_new(2))
    store.enqueue(_new(3))
    row = store.claim("w", ["m"], 60)
    assert row is not None and row.request_id == "r2"
    assert row.status is Status.PROCESSING and row.attempts == 1 and row.lease_owner == "w" and row.qworker_id == "w"
    assert row.lease_expires_at == clock.now + 60
    assert store.claim("w", [], 60) is None


def test_claim_prefers_higher_priority(store: Store) -> None:
    store.enqueue(_new(1))
    store.enqueue(_new(2, priority=5))
    row = store.claim("w", ["m"], 60)
    assert row is not None and row.request_id == "r2"


def test_claim_prefers_organisations_with_fewer_processing(store: Store) -> None:
    for i in range(3):
        store.enqueue(_new(i, org="big"))
    store.enqueue(_new(10, org="small"))
    first = store.claim("w1", ["m"], 60)
    second = store.claim("w2", ["m"], 60)
    assert first is not None and first.request_id == "r0"
    assert second is not None and second.request_id == "r10"


def test_concurrent_claims_never_take_the_same_request(store: Store) -> None:
    for i in range(40):
        store.enqueue(_new(i))
    taken: list[str] = []
    lock = threading.Lock()

    def claimer(w: str) -> None:
        while (row := store.claim(w, ["m"], 60)) is not None:
            with lock:
                taken.append(row.request_id)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == sorted(f"r{i}" for i in range(40))


def test_claim_with_a_limit_stops_while_that_many_of_its_models_are_processing(store: Store) -> None:
    for i in range(4):
        store.enqueue(_new(i))
    first = store.claim("w1", ["m"], 60, limit=2)
    second = store.claim("w2", ["m"], 60, limit=2)  # the limit counts across workers
    assert first is not None and second is not None
    assert {first.request_id, second.request_id} == {"r0", "r1"}
    assert store.claim("w1", ["m"], 60, limit=2) is None
    assert store.claim("w3", ["m"], 60, limit=2) is None
    queued = store.get("r2")
    assert queued is not None and queued.status is Status.QUEUED
    # Without a limit (or with a higher one) the same queue still answers.
    third = store.claim("w3", ["m"], 60, limit=3)
    assert third is not None and third.request_id == "r2"


def test_concurrent_capped_claims_never_pass_the_limit(store: Store) -> None:
    for i in range(20):
        store.enqueue(_new(i))
    barrier = threading.Barrier(8)
    claimed: list[str] = []
    lock = threading.Lock()

    def claimer(w: str) -> None:
        barrier.wait()  # all at the same instant
        for _ in range(3):
            row = store.claim(w, ["m"], 60, limit=3)
            if row is not None:
                with lock:
                    claimed.append(row.request_id)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 3 == len(set(claimed))


def test_claim_with_a_limit_claims_again_once_one_ends(store: Store) -> None:
    for i in range(4):
        store.enqueue(_new(i))
    store.claim("w", ["m"], 60, limit=2)  # r0
    store.claim("w", ["m"], 60, limit=2)  # r1
    assert store.claim("w", ["m"], 60, limit=2) is None
    store.finish("r0", "w", {})
    again = store.claim("w", ["m"], 60, limit=2)
    assert again is not None and again.request_id == "r2"
    assert store.claim("w", ["m"], 60, limit=2) is None
    store.fail("r1", "w", "engine_error", "boom")
    last = store.claim("w", ["m"], 60, limit=2)
    assert last is not None and last.request_id == "r3"


def test_claim_limit_counts_only_the_given_models(store: Store) -> None:
    store.enqueue(_new(1, model="x"))
    store.enqueue(_new(2, model="x"))
    for i in range(3, 6):
        store.enqueue(_new(i))
    store.claim("w", ["x"], 60)  # r1, x
    store.claim("w", ["x"], 60)  # r2, x
    a = store.claim("w", ["m"], 60, limit=2)
    b = store.claim("w", ["m"], 60, limit=2)
    assert a is not None and b is not None and {a.request_id, b.request_id} == {"r3", "r4"}
    assert store.claim("w", ["m"], 60, limit=2) is None
    # A limit over several models counts them together: two m and two x are processing.
    assert store.claim("w", ["m", "x"], 60, limit=4) is None
    c = store.claim("w", ["m", "x"], 60, limit=5)
    assert c is not None and c.request_id == "r5"


def test_claim_with_a_limit_and_nothing_queued_is_none(store: Store) -> None:
    assert store.claim("w", ["m"], 60, limit=1) is None
    store.enqueue(_new(1, model="x"))
    assert store.claim("w", ["m"], 60, limit=1) is None
    row = store.claim("w", ["x"], 60, limit=1)
    assert row is not None and row.request_id == "r1"


def test_fenced_writes_need_the_lease(store: Store) -> None:
    store.enqueue(_new(1))
    store.claim("w", ["m"], 60)
    assert store.set_progress("r1", "w", 40, 60) is False
    with pytest.raises(LeaseLost):
        store.set_progress("r1", "other", 50, 60)
    with pytest.raises(LeaseLost):
        store.finish("r1", "other", {"media": []})
    done = store.finish("r1", "w", {"media": []})
    assert done.status is Status.SUCCESS and done.progress == 100 and done.lease_owner is None
    with pytest.raises(LeaseLost):
        store.heartbeat("r1", "w", 60)


def test_progress_never_goes_backwards(store: Store) -> None:
    store.enqueue(_new(1))
    store.claim("w", ["m"], 60)
    store.set_progress("r1", "w", 60, 60)
    store.set_progress("r1", "w", 30, 60)
    row = store.get("r1")
    assert row is not None and row.progress == 60


def test_cancel_of_queued_is_immediate_and_of_processing_is_requested(store: Store) -> None:
    store.enqueue(_new(1))
    store.enqueue(_new(2))
    store.claim("w", ["m"], 60)  # r1
    queued = store.cancel("r2", "a")
    assert queued.status is Status.CANCELLED and queued.outcome == {
        "error": {"code": "cancelled", "message": queued.error}
    }
    running = store.cancel("r1", "a")
    assert running.status is Status.PROCESSING and running.cancel_requested_at is not None
    assert store.heartbeat("r1", "w", 60) is True
    ended = store.finish_cancelled("r1", "w", "stopped")
    assert ended.status is Status.CANCELLED
    with pytest.raises(NotFound):
        store.cancel("r1", "other-org")


def test_terminal_rows_never_change(store: Store) -> None:
    store.enqueue(_new(1))
    store.claim("w", ["m"], 60)
    store.fail("r1", "w", "engine_error", "boom")
    after = store.cancel("r1", "a")
    assert after.status is Status.FAILED and after.error == "boom" and after.error_code == "engine_error"
    assert store.claim("w", ["m"], 60) is None


def test_expired_lease_is_requeued_then_fails_as_worker_lost(store: Store, clock: Clock) -> None:
    store.enqueue(_new(1))
    store.claim("w1", ["m"], 10)
    clock.now += 5
    assert store.recover(max_attempts=2) == []
    clock.now += 6
    [rec] = store.recover(max_attempts=2)
    assert rec.status is Status.QUEUED
    row = store.claim("w2", ["m"], 10)
    assert row is not None and row.attempts == 2
    with pytest.raises(LeaseLost):
        store.finish("r1", "w1", {})  # the first worker's late result is dropped
    clock.now += 11
    [rec] = store.recover(max_attempts=2)
    assert rec.status is Status.FAILED
    failed = store.get("r1")
    assert failed is not None and failed.error_code == "worker_lost"
    assert failed.outcome is not None and failed.outcome["error"]["code"] == "worker_lost"


def test_expired_lease_of_a_cancel_requested_request_ends_cancelled(store: Store, clock: Clock) -> None:
    store.enqueue(_new(1))
    store.claim("w", ["m"], 10)
    store.cancel("r1", "a")
    clock.now += 11
    [rec] = store.recover(max_attempts=5)
    assert rec.status is Status.CANCELLED


def test_expire_leases_of_a_dead_worker_recovers_at_once(store: Store) -> None:
    store.enqueue(_new(1))
    store.claim("dead", ["m"], 600)
    assert store.expire_leases("dead") == 1
    [rec] = store.recover(max_attempts=2)
    assert rec.request_id == "r1" and rec.status is Status.QUEUED


def test_release_hands_back_without_counting_the_attempt(store: Store) -> None:
    store.enqueue(_new(1))
    store.claim("w", ["m"], 60)
    row = store.release("r1", "w")
    assert row.status is Status.QUEUED and row.attempts == 0


def test_checkpoint_survives_for_the_next_attempt(store: Store, clock: Clock) -> None:
    store.enqueue(_new(1))
    store.claim("w", ["m"], 10)
    store.checkpoint("r1", "w", {"task_id": "t-1"})
    clock.now += 11
    store.recover(max_attempts=3)
    again = store.claim("w2", ["m"], 10)
    assert again is not None and again.engine_state == {"task_id": "t-1"}


def test_list_is_newest_first_with_cursor_filters_and_total(store: Store) -> None:
    for i in range(5):
        store.enqueue(_new(i, model="x" if i % 2 else "m"))
    store.enqueue(_new(99, org="b"))
    page = store.list("a", limit=2)
    assert [r.request_id for r in page.items] == ["r4", "r3"] and page.total == 5
    assert page.next_cursor is not None
    page2 = store.list("a", limit=2, cursor=page.next_cursor)
    assert [r.request_id for r in page2.items] == ["r2", "r1"]
    page3 = store.list("a", limit=2, cursor=page2.next_cursor)
    assert [r.request_id for r in page3.items] == ["r0"] and page3.next_cursor is None
    xs = store.list("a", model="x")
    assert xs.total == 2 and {r.model for r in xs.items} == {"x"}
    store.cancel("r0", "a")
    assert [r.request_id for r in store.list("a", status=Status.CANCELLED).items] == ["r0"]


def test_keys_are_found_by_hash_and_revoked(store: Store) -> None:
    plaintext, record = new_api_key("org", "k")
    store.add_key(record)
    assert plaintext not in repr(record)
    found = store.find_key(hash_key(plaintext))
    assert found is not None and found.org_id == "org"
    assert [k.key_id for k in store.list_keys("org")] == [record.key_id]
    assert store.revoke_key(record.key_id) is True
    assert store.revoke_key(record.key_id) is False
    assert store.find_key(hash_key(plaintext)) is None


def test_live_workers_and_stats(store: Store, clock: Clock) -> None:
    store.worker_seen("w1", ["m"])
    clock.now += 100
    store.worker_seen("w2", ["m", "x"])
    assert store.live_workers(30) == {"w2": ["m", "x"]}
    store.worker_gone("w2")
    assert store.live_workers(30) == {}
    store.enqueue(_new(1))
    store.enqueue(_new(2))
    store.claim("w", ["m"], 60)
    clock.now += 3
    store.finish("r1", "w", {})
    stats = store.stats()
    assert stats.by_model_status == {("m", "success"): 1, ("m", "queued"): 1}
    assert stats.duration_sum == {"m": 3.0} and stats.duration_count == {"m": 1}


def test_worker_facts_are_published_kept_until_replaced_and_only_for_live_workers(store: Store, clock: Clock) -> None:
    store.worker_seen("w1", ["m"])
    store.worker_seen("w2", ["m", "x"], {"compile_seconds": {"m": 12.5, "x": 3}, "load_seconds": {"m": 4.25}})
    assert store.worker_facts(30) == {
        "w1": {},
        "w2": {"compile_seconds": {"m": 12.5, "x": 3.0}, "load_seconds": {"m": 4.25}},
    }
    # A heartbeat without facts (None) keeps those stored; new facts replace them whole.
    clock.now += 10
    store.worker_seen("w2", ["m", "x"])
    assert store.worker_facts(30)["w2"] == {"compile_seconds": {"m": 12.5, "x": 3.0}, "load_seconds": {"m": 4.25}}
    store.worker_seen("w2", ["m"], {"load_seconds": {"m": 1.0}, "bad": {"m": float("nan")}})
    assert store.worker_facts(30)["w2"] == {"load_seconds": {"m": 1.0}, "bad": {}}  # JSON has no NaN: dropped
    # Only workers seen within the window: w1 was last seen 25 s ago, w2 just now.
    clock.now += 15
    store.worker_seen("w2", ["m"])
    assert set(store.worker_facts(30)) == {"w1", "w2"}
    assert set(store.worker_facts(20)) == {"w2"}
    clock.now += 100
    assert store.worker_facts(30) == {}
    # A worker that is gone takes its facts with it; seen again, it starts with none.
    store.worker_gone("w2")
    store.worker_seen("w2", ["m"])
    assert store.worker_facts(30) == {"w2": {}}


def test_an_idempotency_key_gives_back_the_original_request_within_its_window(store: Store, clock: Clock) -> None:
    idem = Idempotency("k1", "fp-a")
    first = store.enqueue(replace(_new(1), idempotency=idem))
    assert first.request_id == "r1"
    again = store.enqueue(replace(_new(2), idempotency=idem))  # a retry: a fresh id, the same key and body
    assert again.request_id == "r1"
    replayed = store.replay("a", idem)
    assert replayed is not None and replayed.request_id == "r1" and replayed.queue_position == 1
    assert store.get("r2") is None
    assert store.list("a").total == 1
    # Another organisation's key of the same name is its own.
    theirs = store.enqueue(replace(_new(3, org="b"), idempotency=idem))
    assert theirs.request_id == "r3"
    assert store.replay("b", Idempotency("k2", "fp-a")) is None
    # Past the window the key may name a new request.
    clock.now += idem.window_s
    assert store.replay("a", idem) is None
    assert store.enqueue(replace(_new(4), idempotency=idem)).request_id == "r4"
    assert store.enqueue(replace(_new(5), idempotency=idem)).request_id == "r4"


def test_an_idempotency_key_with_another_body_is_a_conflict_and_queues_nothing(store: Store) -> None:
    store.enqueue(replace(_new(1), idempotency=Idempotency("k", "fp-a")))
    with pytest.raises(Conflict, match="different body"):
        store.enqueue(replace(_new(2), idempotency=Idempotency("k", "fp-b")))
    with pytest.raises(Conflict):
        store.replay("a", Idempotency("k", "fp-b"))
    assert store.get("r2") is None
    assert store.list("a").total == 1


def test_racing_submits_with_one_key_make_one_request(store: Store) -> None:
    idem = Idempotency("race", "fp")
    got: list[str] = []

    def submit(i: int) -> None:
        got.append(store.enqueue(replace(_new(i), idempotency=idem)).request_id)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and len(set(got)) == 1
    assert store.list("a").total == 1


def test_fairness_ties_go_to_priority_then_age(store: Store) -> None:
    for i, (org, prio) in enumerate([("a", 0), ("a", 0), ("b", 0), ("b", 5), ("c", 1)], start=1):
        store.enqueue(_new(i, org=org, priority=prio))
    # Nothing processing: every organisation ties, so priority decides (r4), then priority again (r5).
    assert [store.claim("w", ["m"], 60).request_id for _ in range(2)] == ["r4", "r5"]  # type: ignore[union-attr]
    # b and c now have one each processing, a none: a's oldest goes first, then a tie of one each → oldest.
    assert [store.claim("w", ["m"], 60).request_id for _ in range(3)] == ["r1", "r2", "r3"]  # type: ignore[union-attr]


def test_subscribers_hear_of_each_new_request(store: Store) -> None:
    heard: list[str] = []
    done = threading.Event()

    def wake(model: str) -> None:
        # "" means "some may have been missed" (a listener's reconnect); a model may be heard twice (in-process and
        # by NOTIFY), which costs a worker one extra claim, never a request.
        if model:
            heard.append(model)
            if {"x", "y"} <= set(heard):
                done.set()

    store.subscribe(wake)
    store.enqueue(_new(1, model="x"))
    store.enqueue(_new(2, model="y"))
    assert done.wait(5), heard
    assert set(heard) == {"x", "y"}


def test_a_submit_by_another_process_wakes_a_sqlite_subscriber(tmp_path: Path) -> None:
    worker, api = SqlStore.open(f"sqlite:///{tmp_path}/q.db"), SqlStore.open(f"sqlite:///{tmp_path}/q.db")
    woken = threading.Event()
    try:
        worker.subscribe(lambda model: woken.set())
        time.sleep(0.05)  # the watcher has read the file's newest request once
        assert not woken.is_set()
        api.enqueue(_new(1))  # another connection, as another process would
        assert woken.wait(2)
    finally:
        worker.close()
        api.close()


@pytest.mark.parametrize("capped", [False, True])
def test_the_sqlite_claim_never_scans_the_table_even_with_statistics(tmp_path: Path, capped: bool) -> None:
    from vidqueue.store.claims import claim_statement

    store = SqlStore.open(f"sqlite:///{tmp_path}/q.db")
    for i in range(300):
        store.enqueue(_new(i, org=f"o{i % 3}"))
    conn = sqlite3.connect(tmp_path / "q.db", isolation_level=None)
    conn.execute("ANALYZE")  # statistics that say every row is queued: the old claim then scanned per row
    values = {"models": ["m"], "worker": "w", "expires": 1.0, "now": 0.0, **({"limit": 5} if capped else {})}
    bound = claim_statement("sqlite", capped=capped).bindparams(**values)
    compiled = bound.compile(dialect=sqlite_dialect(), compile_kwargs={"render_postcompile": True})
    args = [compiled.params[name] for name in compiled.positiontup or []]
    plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {compiled}", args)]
    # Walking the partial index of queued rows in order (for the first organisation) reads one entry; any other
    # scan of the table would read its whole history.
    table_scans = [
        step
        for step in plan
        if step.split()[:2][-1] in {"requests", "p", "q", "r", "c"}
        and step.startswith("SCAN")
        and "INDEX ix_requests_queued" not in step
    ]
    assert plan and not table_scans, plan
    conn.close()
    store.close()


# -- admission (the limits a submit is checked against) ----------------------------------------------------


def test_admission_reads_the_times_of_the_orgs_newest_submits_newest_first(store: Store, clock: Clock) -> None:
    times = []
    for i in range(5):
        clock.now += 7
        times.append(clock.now)
        store.enqueue(_new(i))
        store.enqueue(_new(100 + i, org="b"))
    clock.now += 1
    seen = store.admission("a", recent=3)
    assert seen.recent == (times[4], times[3], times[2])
    assert seen.now == clock.now
    assert store.admission("a", recent=50).recent == tuple(reversed(times))
    assert store.admission("a").recent == ()
    assert store.admission("nobody", recent=3).recent == ()


def test_admission_counts_the_orgs_queued_and_processing_requests_up_to_the_cap(store: Store) -> None:
    for i in range(6):
        store.enqueue(_new(i))
    store.enqueue(_new(10, org="b"))
    first = store.claim("w", ["m"], 60)
    second = store.claim("w", ["m"], 60)
    assert first is not None and second is not None
    store.finish(first.request_id, "w", {"media": []})  # success: no longer active
    store.cancel("r5", "a")  # cancelled while queued: no longer active
    # Whichever org the fair second claim served, a has r1-r4 active, and four rows are queued in all.
    assert store.admission("a", active_cap=100).active == 4
    assert store.admission("a", active_cap=2).active == 2
    assert store.admission("a").active == 0  # not counted without a cap
    assert store.admission("a", queued_cap=100).queued == 4
    assert store.admission("b", queued_cap=2).queued == 2
    assert store.admission("b", active_cap=5).active == 1


def test_admission_with_nothing_asked_still_answers_the_clock(store: Store, clock: Clock) -> None:
    seen = store.admission("a")
    assert (seen.now, seen.recent, seen.active, seen.queued) == (clock.now, (), 0, 0)


# -- retention -------------------------------------------------------------------------------------------------
DAY = 86400.0


def _done(store: Store, i: int, outcome: dict[str, object] | None = None, **new: object) -> None:
    """Queue request r{i}, then claim and finish it at once (a success)."""
    store.enqueue(replace(_new(i), **new))  # type: ignore[arg-type]
    row = store.claim("w", ["m"], 60)
    assert row is not None and row.request_id == f"r{i}"
    store.finish(row.request_id, "w", outcome or {})


def _key_rows(store: Store) -> set[str]:
    """The request ids the stored idempotency keys name (a look inside: no call answers a stale key)."""
    if isinstance(store, MemoryStore):
        return {rid for _, _, rid in store._keys_used.values()}
    import sqlalchemy as sa

    from vidqueue.store.schema import idempotency_keys

    assert isinstance(store, SqlStore)
    with store._engine.connect() as conn:
        return set(conn.execute(sa.select(idempotency_keys.c.request_id)).scalars())


def test_prune_deletes_only_requests_finished_before_the_cutoff(store: Store, clock: Clock) -> None:
    outcome = {"media": [{"id": "v", "key": "requests/r1/video.mp4"}], "thumbnail_key": "requests/r1/thumbnail.jpg"}
    _done(store, 1, outcome, input_key="requests/r1/input.png", org_id="b")
    clock.now += 10
    store.enqueue(_new(2))
    store.claim("w", ["m"], 60)
    store.fail("r2", "w", "boom", "it broke")
    clock.now += 10
    store.enqueue(_new(3))
    store.cancel("r3", "a")
    cancelled_at = clock.now
    store.enqueue(_new(4))
    store.claim("w", ["m"], 3600 * 24 * 365)  # processing, with a lease that outlives the test
    store.enqueue(_new(5))  # queued
    clock.now += 365 * DAY

    pruned = store.prune(cancelled_at, 10)
    assert sorted(p.request_id for p in pruned) == ["r1", "r2"]
    first = next(p for p in pruned if p.request_id == "r1")
    assert first.org_id == "b" and first.input_key == "requests/r1/input.png"
    assert first.media_keys() == ["requests/r1/input.png", "requests/r1/video.mp4", "requests/r1/thumbnail.jpg"]
    assert store.get("r1") is None and store.get("r2") is None and store.get("r3") is not None

    assert [p.request_id for p in store.prune(clock.now, 10)] == ["r3"]
    # Queued and processing requests stay, however old: only terminal rows are ever pruned.
    assert store.prune(clock.now + 365 * DAY, 10) == []
    assert {r.request_id: r.status for r in store.list("a").items} == {"r4": Status.PROCESSING, "r5": Status.QUEUED}
    assert store.heartbeat("r4", "w", 60) is False  # its worker carries on


def test_prune_takes_at_most_its_limit_oldest_first(store: Store, clock: Clock) -> None:
    for i in range(5):
        _done(store, i)
        clock.now += 1
    batches = [sorted(p.request_id for p in store.prune(clock.now, 2)) for _ in range(4)]
    assert batches == [["r0", "r1"], ["r2", "r3"], ["r4"], []]
    assert store.list("a").total == 0


def test_prune_takes_idempotency_keys_of_pruned_and_stale_ones(store: Store, clock: Clock) -> None:
    _done(store, 1, idempotency=Idempotency("k1", "fp"))
    store.enqueue(replace(_new(2), idempotency=Idempotency("k2", "fp")))  # stays queued
    clock.now += 60
    store.enqueue(replace(_new(3), idempotency=Idempotency("k3", "fp")))
    assert _key_rows(store) == {"r1", "r2", "r3"}
    assert [p.request_id for p in store.prune(clock.now, 10)] == ["r1"]
    assert _key_rows(store) == {"r2", "r3"}
    # Past its window a key names nothing any more, whatever its request: it goes too (r2 and r3 stay).
    clock.now += Idempotency.window_s - 30
    store.prune(clock.now - 365 * DAY, 10)
    assert _key_rows(store) == {"r3"}
    assert store.get("r2") is not None
    # The pruned request's key is free for a new request.
    assert store.enqueue(replace(_new(4), idempotency=Idempotency("k1", "fp"))).request_id == "r4"


def test_prune_takes_webhook_deliveries_with_it(store: Store, clock: Clock) -> None:
    _done(store, 901, callback_url="http://127.0.0.1:9/hook")
    assert [d.event for d in store.deliveries("r901")] == ["queued", "processing", "success"]
    clock.now += 1
    assert [p.request_id for p in store.prune(clock.now, 10)] == ["r901"]
    assert store.deliveries("r901") == []


def test_concurrent_prunes_hand_each_request_out_once(store: Store, clock: Clock) -> None:
    for i in range(40):
        _done(store, i)
    clock.now += 1
    got: list[str] = []
    lock = threading.Lock()

    def pruner() -> None:
        while pruned := store.prune(clock.now, 3):
            with lock:
                got.extend(p.request_id for p in pruned)

    threads = [threading.Thread(target=pruner) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(f"r{i}" for i in range(40))


def test_the_sqlite_prune_walks_the_finished_index(tmp_path: Path) -> None:
    store = SqlStore.open(f"sqlite:///{tmp_path}/q.db")
    plans: list[str] = []

    def explain(conn: object, cursor: object, statement: str, parameters: object, *args: object) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM REQUESTS"):
            raw = store._engine.raw_connection()
            try:
                rows = raw.cursor().execute(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall()
            finally:
                raw.close()
            plans.extend(row[3] for row in rows)

    import sqlalchemy as sa

    sa.event.listen(store._engine, "before_cursor_execute", explain)
    store.prune(1.0, 10)
    store.close()
    # The oldest finished rows straight from ix_requests_finished: no reading of every finished row, no sort.
    assert any("INDEX ix_requests_finished" in step for step in plans), plans
    assert not any("TEMP B-TREE" in step or "ix_requests_claim" in step for step in plans), plans
