"""The in-memory twin of the store, for unit tests: same rules, no database."""

from __future__ import annotations

import builtins
import copy
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from vidqueue.errors import LeaseLost, NotFound
from vidqueue.store.base import enqueue_each
from vidqueue.store.changes import ChangeFeed
from vidqueue.store.deliveries import MemoryDeliveries
from vidqueue.store.pruning import MemoryPruning
from vidqueue.store.records import (
    Admission,
    ApiKey,
    Idempotency,
    NewRequest,
    Page,
    QueueStats,
    Recovered,
    RequestRecord,
    Status,
)
from vidqueue.store.rules import (
    CANCELLED_MESSAGE,
    clean_facts,
    decode_cursor,
    encode_cursor,
    ending,
    ensure_transition,
    log_transition,
    recovery,
    replayed,
)


class MemoryStore(MemoryDeliveries, MemoryPruning):
    """The store interface over dicts, guarded by one lock."""

    inline_calls = True

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._rows: dict[str, RequestRecord] = {}
        self._keys: dict[str, ApiKey] = {}
        self._seq = 0
        self._workers: dict[str, tuple[builtins.list[str], float]] = {}
        self._facts: dict[str, dict[str, dict[str, float]]] = {}
        self._keys_used: dict[tuple[str, str], tuple[str, float, str]] = {}  # (org, key) → fingerprint, time, id
        self._wakers: builtins.list[Callable[[str], None]] = []
        self._changes = ChangeFeed()
        self._init_deliveries()

    # -- helpers -----------------------------------------------------------------------------------------
    def _queued_order(self) -> list[RequestRecord]:
        queued = [r for r in self._rows.values() if r.status is Status.QUEUED]
        return sorted(queued, key=lambda r: (-r.priority, r.seq))

    def _with_position(self, row: RequestRecord) -> RequestRecord:
        if row.status is not Status.QUEUED:
            return row
        order = [r.request_id for r in self._queued_order()]
        return row.evolve(queue_position=order.index(row.request_id) + 1)

    def _set(self, row: RequestRecord, **changes: Any) -> RequestRecord:
        if "status" in changes and changes["status"] is not row.status:
            ensure_transition(row.status, changes["status"])
        new = row.evolve(**changes)
        self._rows[row.request_id] = new
        if new.status is not row.status:
            self._record_change(new)
        if (new.status, new.progress) != (row.status, row.progress):
            self._changes.notify(new.request_id)
        return copy.deepcopy(new)

    def _fenced(self, request_id: str, worker_id: str) -> RequestRecord:
        row = self._rows.get(request_id)
        if row is None or row.lease_owner != worker_id or row.status is not Status.PROCESSING:
            raise LeaseLost(f"Worker {worker_id} no longer holds request {request_id}.")
        return row

    # -- the API side ------------------------------------------------------------------------------------
    def enqueue(self, new: NewRequest) -> RequestRecord:
        """Insert a queued request."""
        with self._lock:
            now = self._clock()
            if new.idempotency is not None:
                original = self._replay(new.org_id, new.idempotency, now)
                if original is not None:
                    return original
            if new.admit is not None:
                rule = new.admit
                rule.check(self._admission(new.org_id, rule.recent, rule.active_cap, rule.queued_cap))
            if new.idempotency is not None:
                self._keys_used[(new.org_id, new.idempotency.key)] = (new.idempotency.fingerprint, now, new.request_id)
            self._seq += 1
            row = RequestRecord(
                request_id=new.request_id,
                seq=self._seq,
                org_id=new.org_id,
                model=new.model,
                status=Status.QUEUED,
                payload=copy.deepcopy(new.payload),
                created_at=now,
                updated_at=now,
                queued_at=now,
                priority=new.priority,
                callback_url=new.callback_url,
                input_key=new.input_key,
            )
            self._rows[row.request_id] = row
            self._record_change(row)
            out = copy.deepcopy(self._with_position(row))
        for wake in self._wakers:
            wake(new.model)
        log_transition(new.request_id, "new", Status.QUEUED, model=new.model, org=new.org_id)
        return out

    def enqueue_many(self, news: Sequence[NewRequest]) -> builtins.list[RequestRecord | Exception]:
        """Insert queued requests one by one; each answer, or its error, in its request's place."""
        return enqueue_each(self.enqueue, news)

    def replay(self, org_id: str, idem: Idempotency) -> RequestRecord | None:
        """The request an Idempotency-Key already made with this body (Conflict if with another), or None."""
        with self._lock:
            return self._replay(org_id, idem, self._clock())

    def _replay(self, org_id: str, idem: Idempotency, now: float) -> RequestRecord | None:
        found = self._keys_used.get((org_id, idem.key))
        if not replayed(idem, found[:2] if found else None, now):
            return None
        assert found is not None
        row = self._rows.get(found[2])
        return None if row is None else copy.deepcopy(self._with_position(row))

    def get(self, request_id: str, org_id: str | None = None) -> RequestRecord | None:
        """One request (only within ``org_id`` when given), with its queue position."""
        with self._lock:
            row = self._rows.get(request_id)
            if row is None or (org_id is not None and row.org_id != org_id):
                return None
            return copy.deepcopy(self._with_position(row))

    def list(
        self,
        org_id: str,
        *,
        model: str | None = None,
        status: Status | None = None,
        limit: int = 20,
        cursor: str | None = None,
        oldest_first: bool = False,
    ) -> Page:
        """The organisation's requests, newest first (or oldest first), a page at a time."""
        with self._lock:
            rows = [
                r
                for r in self._rows.values()
                if r.org_id == org_id and (model is None or r.model == model) and (status is None or r.status is status)
            ]
            rows.sort(key=lambda r: r.seq if oldest_first else -r.seq)
            total = len(rows)
            if cursor is not None:
                after = decode_cursor(cursor)
                rows = [r for r in rows if (r.seq > after if oldest_first else r.seq < after)]
            page = [copy.deepcopy(self._with_position(r)) for r in rows[:limit]]
            more = len(rows) > limit
        return Page(items=page, total=total, next_cursor=encode_cursor(page[-1].seq) if more else None)

    def cancel(self, request_id: str, org_id: str) -> RequestRecord:
        """Cancel a queued request now, or ask the worker to stop a processing one."""
        with self._lock:
            row = self._rows.get(request_id)
            if row is None or row.org_id != org_id:
                raise NotFound(f"Request '{request_id}' does not exist.")
            now = self._clock()
            if row.status is Status.QUEUED:
                log_transition(request_id, row.status, Status.CANCELLED)
                return self._set(
                    row,
                    status=Status.CANCELLED,
                    cancel_requested_at=now,
                    finished_at=now,
                    updated_at=now,
                    **ending("cancelled", CANCELLED_MESSAGE),
                )
            if row.status is Status.PROCESSING and row.cancel_requested_at is None:
                return self._set(row, cancel_requested_at=now, updated_at=now)
            return copy.deepcopy(row)

    def admission(self, org_id: str, *, recent: int = 0, active_cap: int = 0, queued_cap: int = 0) -> Admission:
        """In one read: the times of the org's ``recent`` newest submits, and its active and the queued counts."""
        with self._lock:
            return self._admission(org_id, recent, active_cap, queued_cap)

    def _admission(self, org_id: str, recent: int, active_cap: int, queued_cap: int) -> Admission:
        rows = sorted((r for r in self._rows.values() if r.org_id == org_id), key=lambda r: -r.seq)
        active = sum(1 for r in rows if r.status in (Status.QUEUED, Status.PROCESSING))
        queued = sum(1 for r in self._rows.values() if r.status is Status.QUEUED)
        return Admission(
            now=self._clock(),
            recent=tuple(r.created_at for r in rows[:recent]),
            active=min(active, active_cap),
            queued=min(queued, queued_cap),
        )

    # -- the worker side -------------------------------------------------------------------------------
    def claim(
        self, worker_id: str, models: Collection[str], lease_s: float, limit: int | None = None
    ) -> RequestRecord | None:
        """Take the next claimable request: fewest processing in its organisation, then priority, then age."""
        with self._lock:
            busy: dict[str, int] = {}
            running = 0
            for r in self._rows.values():
                if r.status is Status.PROCESSING:
                    busy[r.org_id] = busy.get(r.org_id, 0) + 1
                    running += r.model in models
            if limit is not None and running >= limit:
                return None
            candidates = [r for r in self._rows.values() if r.status is Status.QUEUED and r.model in models]
            if not candidates:
                return None
            row = min(candidates, key=lambda r: (busy.get(r.org_id, 0), -r.priority, r.seq))
            now = self._clock()
            out = self._set(
                row,
                status=Status.PROCESSING,
                lease_owner=worker_id,
                qworker_id=worker_id,
                lease_expires_at=now + lease_s,
                attempts=row.attempts + 1,
                processing_at=now,
                updated_at=now,
                progress=0,
            )
        log_transition(row.request_id, Status.QUEUED, Status.PROCESSING, worker=worker_id, attempt=out.attempts)
        return out

    def heartbeat(self, request_id: str, worker_id: str, lease_s: float) -> bool:
        """Extend the lease; answer whether a cancel was requested."""
        with self._lock:
            row = self._fenced(request_id, worker_id)
            row = self._set(row, lease_expires_at=self._clock() + lease_s)
            return row.cancel_requested_at is not None

    def set_progress(self, request_id: str, worker_id: str, progress: int, lease_s: float) -> bool:
        """Record progress (0-100) and extend the lease; answer whether a cancel was requested."""
        with self._lock:
            row = self._fenced(request_id, worker_id)
            now = self._clock()
            value = max(row.progress, max(0, min(100, int(progress))))
            row = self._set(row, progress=value, lease_expires_at=now + lease_s, updated_at=now)
            return row.cancel_requested_at is not None

    def checkpoint(self, request_id: str, worker_id: str, state: dict[str, Any]) -> None:
        """Persist engine state (an upstream task id) for a later attempt."""
        with self._lock:
            row = self._fenced(request_id, worker_id)
            self._set(row, engine_state=copy.deepcopy(state), updated_at=self._clock())

    def _end(self, request_id: str, worker_id: str, status: Status, **values: Any) -> RequestRecord:
        with self._lock:
            row = self._fenced(request_id, worker_id)
            now = self._clock()
            out = self._set(
                row,
                status=status,
                finished_at=now,
                updated_at=now,
                lease_owner=None,
                lease_expires_at=None,
                **values,
            )
        log_transition(request_id, Status.PROCESSING, status, worker=worker_id, code=values.get("error_code"))
        return out

    def finish(self, request_id: str, worker_id: str, outcome: dict[str, Any]) -> RequestRecord:
        """End a request in success."""
        return self._end(request_id, worker_id, Status.SUCCESS, outcome=copy.deepcopy(outcome), progress=100)

    def fail(self, request_id: str, worker_id: str, code: str, message: str) -> RequestRecord:
        """End a request in failure."""
        return self._end(request_id, worker_id, Status.FAILED, **ending(code, message))

    def finish_cancelled(self, request_id: str, worker_id: str, message: str) -> RequestRecord:
        """End a processing request as cancelled (the worker saw the cancel)."""
        return self._end(request_id, worker_id, Status.CANCELLED, **ending("cancelled", message))

    def release(self, request_id: str, worker_id: str) -> RequestRecord:
        """Give a processing request back to the queue without counting the attempt."""
        with self._lock:
            row = self._fenced(request_id, worker_id)
            out = self._set(
                row,
                status=Status.QUEUED,
                lease_owner=None,
                lease_expires_at=None,
                attempts=row.attempts - 1,
                progress=0,
                updated_at=self._clock(),
            )
        log_transition(request_id, Status.PROCESSING, Status.QUEUED, worker=worker_id, reason="released")
        return out

    # -- recovery ----------------------------------------------------------------------------------------
    def expire_leases(self, worker_id: str) -> int:
        """Expire every lease a (dead) worker holds, so the next sweep recovers its requests at once."""
        with self._lock:
            held = [r for r in self._rows.values() if r.lease_owner == worker_id and r.status is Status.PROCESSING]
            for r in held:
                self._set(r, lease_expires_at=self._clock() - 1)
            return len(held)

    def recover(self, max_attempts: int) -> builtins.list[Recovered]:
        """Requeue expired processing requests; fail those that used up their attempts; end cancelled ones."""
        done: builtins.list[Recovered] = []
        with self._lock:
            now = self._clock()
            for r in list(self._rows.values()):
                if r.status is not Status.PROCESSING or (r.lease_expires_at or 0) >= now:
                    continue
                new, changes = recovery(r.attempts, r.cancel_requested_at is not None, max_attempts, now)
                self._set(r, status=new, **changes)
                done.append(Recovered(r.request_id, new, r.attempts))
        for rec in done:
            log_transition(rec.request_id, Status.PROCESSING, rec.status, reason="lease expired", attempt=rec.attempts)
        return done

    # -- workers -------------------------------------------------------------------------------------------
    def worker_seen(
        self, worker_id: str, models: Collection[str], facts: Mapping[str, Mapping[str, float]] | None = None
    ) -> None:
        """Record that a worker is alive, which models it serves and (unless None) its facts by name and model."""
        with self._lock:
            self._workers[worker_id] = (sorted(models), self._clock())
            if facts is not None:
                self._facts[worker_id] = clean_facts(facts)

    def worker_gone(self, worker_id: str) -> None:
        """Forget a worker that stopped."""
        with self._lock:
            self._workers.pop(worker_id, None)
            self._facts.pop(worker_id, None)

    def live_workers(self, within_s: float) -> dict[str, builtins.list[str]]:
        """Workers seen within the last ``within_s`` seconds, with their models."""
        since = self._clock() - within_s
        with self._lock:
            return {w: list(models) for w, (models, seen) in self._workers.items() if seen >= since}

    def worker_facts(self, within_s: float) -> dict[str, dict[str, dict[str, float]]]:
        """Workers seen within the last ``within_s`` seconds, with their facts ({} for one that published none)."""
        since = self._clock() - within_s
        with self._lock:
            return {w: clean_facts(self._facts.get(w, {})) for w, (_, seen) in self._workers.items() if seen >= since}

    # -- keys --------------------------------------------------------------------------------------------
    def add_key(self, key: ApiKey) -> None:
        """Store a new API key (hash only)."""
        with self._lock:
            self._keys[key.key_id] = key

    def find_key(self, key_hash: str) -> ApiKey | None:
        """The active key with this hash."""
        with self._lock:
            for key in self._keys.values():
                if key.key_hash == key_hash and key.revoked_at is None:
                    return key
        return None

    def list_keys(self, org_id: str | None = None) -> builtins.list[ApiKey]:
        """Keys, oldest first."""
        with self._lock:
            keys = [k for k in self._keys.values() if org_id is None or k.org_id == org_id]
        return sorted(keys, key=lambda k: (k.created_at, k.key_id))

    def revoke_key(self, key_id: str) -> bool:
        """Revoke a key; answer whether one was revoked."""
        with self._lock:
            key = self._keys.get(key_id)
            if key is None or key.revoked_at is not None:
                return False
            self._keys[key_id] = ApiKey(**{**key.__dict__, "revoked_at": self._clock()})
            return True

    # -- operations --------------------------------------------------------------------------------------
    def stats(self) -> QueueStats:
        """Counts for metrics."""
        out = QueueStats()
        with self._lock:
            for r in self._rows.values():
                k = (r.model, r.status.value)
                out.by_model_status[k] = out.by_model_status.get(k, 0) + 1
                if r.status is Status.FAILED:
                    fk = (r.model, r.error_code or "unknown")
                    out.failures_by_code[fk] = out.failures_by_code.get(fk, 0) + 1
                if r.status is Status.SUCCESS and r.processing_at is not None and r.finished_at is not None:
                    out.duration_sum[r.model] = out.duration_sum.get(r.model, 0.0) + r.finished_at - r.processing_at
                    out.duration_count[r.model] = out.duration_count.get(r.model, 0) + 1
        return out

    def subscribe(self, wake: Callable[[str], None]) -> None:
        """Call ``wake(model)`` when a request is queued."""
        self._wakers.append(wake)

    def watch_changes(self, changed: Callable[[str], None], watching: Callable[[], Collection[str]]) -> None:
        """Call ``changed(request_id)`` when a request's status or progress changes (at once, under the lock)."""
        self._changes.add(changed, watching)

    def ping(self) -> None:
        """The in-memory store always answers."""

    def close(self) -> None:
        """Nothing to release."""
