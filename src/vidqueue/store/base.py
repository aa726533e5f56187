"""The store interface: the durable requests table and the queue operations on it."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

from vidqueue.store.records import (
    Admission,
    ApiKey,
    Attempt,
    Delivery,
    Idempotency,
    NewRequest,
    Page,
    Pruned,
    QueueStats,
    Recovered,
    RequestRecord,
    Status,
)


class Store(Protocol):
    """One interface with SQLite, PostgreSQL and an in-memory twin behind it.

    Every write by a worker is fenced by (request_id, lease_owner, status='processing'); a fenced write
    that matches no row raises ``LeaseLost``.
    """

    #: Calls are local and take well under a millisecond (SQLite, memory): an event loop may run them inline.
    inline_calls: bool

    # -- the API side ------------------------------------------------------------------------------------
    def enqueue(self, new: NewRequest) -> RequestRecord:
        """Insert a queued request."""
        ...

    def enqueue_many(self, news: Sequence[NewRequest]) -> builtins.list[RequestRecord | Exception]:
        """Insert queued requests (together where the store can); each answer, or its error, in its request's place."""
        ...

    def replay(self, org_id: str, idem: Idempotency) -> RequestRecord | None:
        """The request an Idempotency-Key already made with this body (Conflict if with another), or None."""
        ...

    def get(self, request_id: str, org_id: str | None = None) -> RequestRecord | None:
        """One request (only within ``org_id`` when given), with its queue position."""
        ...

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
        ...

    def cancel(self, request_id: str, org_id: str) -> RequestRecord:
        """Cancel a queued request now, or ask the worker to stop a processing one."""
        ...

    def admission(self, org_id: str, *, recent: int = 0, active_cap: int = 0, queued_cap: int = 0) -> Admission:
        """In one read: the times of the org's ``recent`` newest submits, and its active and the queued counts.

        Counts stop at their cap (0: not counted), which is all a limit needs and keeps the read short.
        """
        ...

    # -- the worker side -------------------------------------------------------------------------------
    def claim(
        self, worker_id: str, models: Collection[str], lease_s: float, limit: int | None = None
    ) -> RequestRecord | None:
        """Take the next claimable request for these models, or None (also when ``limit`` of them are processing)."""
        ...

    def heartbeat(self, request_id: str, worker_id: str, lease_s: float) -> bool:
        """Extend the lease; answer whether a cancel was requested."""
        ...

    def set_progress(self, request_id: str, worker_id: str, progress: int, lease_s: float) -> bool:
        """Record progress (0-100) and extend the lease; answer whether a cancel was requested."""
        ...

    def checkpoint(self, request_id: str, worker_id: str, state: dict[str, Any]) -> None:
        """Persist engine state (an upstream task id) for a later attempt."""
        ...

    def finish(self, request_id: str, worker_id: str, outcome: dict[str, Any]) -> RequestRecord:
        """End a request in success."""
        ...

    def fail(self, request_id: str, worker_id: str, code: str, message: str) -> RequestRecord:
        """End a request in failure."""
        ...

    def finish_cancelled(self, request_id: str, worker_id: str, message: str) -> RequestRecord:
        """End a processing request as cancelled (the worker saw the cancel)."""
        ...

    def release(self, request_id: str, worker_id: str) -> RequestRecord:
        """Give a processing request back to the queue without counting the attempt."""
        ...

    # -- recovery ----------------------------------------------------------------------------------------
    def expire_leases(self, worker_id: str) -> int:
        """Expire every lease a (dead) worker holds, so the next sweep recovers its requests at once."""
        ...

    def recover(self, max_attempts: int) -> builtins.list[Recovered]:
        """Requeue expired processing requests; fail those that used up their attempts; end cancelled ones."""
        ...

    def subscribe(self, wake: Callable[[str], None]) -> None:
        """Call ``wake(model)`` when a request is queued, from any thread; "" when the model is not known.

        Within one process always; across processes on PostgreSQL (LISTEN/NOTIFY, "" after a reconnect, as some may
        have been missed) and SQLite (a watch of the file's newest request, which says ""). Workers still poll, so
        a wake-up that goes missing only delays work.
        """
        ...

    def watch_changes(self, changed: Callable[[str], None], watching: Callable[[], Collection[str]]) -> None:
        """Call ``changed(request_id)`` when a request's status or progress changes, by any process; "" when some
        changes may have been missed (re-read every watched request). From any thread; it must not block.

        ``watching()`` names the requests of interest (SQLite, with no notifications, reads only those when its file
        changes; PostgreSQL's trigger notifies every change). Status streams use it; they never poll per client.
        """
        ...

    # -- workers -------------------------------------------------------------------------------------------
    def worker_seen(
        self, worker_id: str, models: Collection[str], facts: Mapping[str, Mapping[str, float]] | None = None
    ) -> None:
        """Record that a worker is alive, which models it serves and (unless None) its facts by name and model."""
        ...

    def worker_gone(self, worker_id: str) -> None:
        """Forget a worker that stopped."""
        ...

    def live_workers(self, within_s: float) -> dict[str, builtins.list[str]]:
        """Workers seen within the last ``within_s`` seconds, with their models."""
        ...

    def worker_facts(self, within_s: float) -> dict[str, dict[str, dict[str, float]]]:
        """Workers seen within the last ``within_s`` seconds, with their facts ({} for one that published none)."""
        ...

    # -- webhooks ----------------------------------------------------------------------------------------
    def webhook_secret(self, org_id: str, new: Callable[[], str]) -> str:
        """The organisation's signing secret, created with ``new()`` on first use."""
        ...

    def claim_deliveries(
        self, owner: str, limit: int, lease_s: float, *, per_org: int | None = None, busy: Mapping[str, int] = ...
    ) -> builtins.list[Delivery]:
        """Lease up to ``limit`` due deliveries, each the oldest pending one of its request, organisations in turn
        and none past ``per_org`` in flight counting ``busy`` (what each already has in flight)."""
        ...

    def settle_delivery(self, delivery_id: str, owner: str, attempt: Attempt) -> bool:
        """Record how an attempt went; False when this owner no longer held the delivery."""
        ...

    def deliveries(self, request_id: str) -> builtins.list[Delivery]:
        """A request's deliveries, oldest first."""
        ...

    # -- keys --------------------------------------------------------------------------------------------
    def add_key(self, key: ApiKey) -> None:
        """Store a new API key (hash only)."""
        ...

    def find_key(self, key_hash: str) -> ApiKey | None:
        """The active key with this hash."""
        ...

    def list_keys(self, org_id: str | None = None) -> builtins.list[ApiKey]:
        """Keys, oldest first."""
        ...

    def revoke_key(self, key_id: str) -> bool:
        """Revoke a key; answer whether one was revoked."""
        ...

    # -- retention ---------------------------------------------------------------------------------------
    def prune(self, finished_before: float, limit: int) -> builtins.list[Pruned]:
        """Delete up to ``limit`` finished requests that ended before ``finished_before``, oldest first.

        Their idempotency keys and webhook deliveries go in the same transaction (and every key past its window,
        whatever its request); answers what was deleted, so the caller can delete the media. Safe to run from
        several processes at once: each row is handed out once.
        """
        ...

    def delete(self, request_id: str, org_id: str) -> Pruned | None:
        """Delete one finished request of ``org_id`` now, with its idempotency keys and webhook deliveries, as
        ``prune`` would; answers what was deleted (None when there is no such finished request)."""
        ...

    # -- operations --------------------------------------------------------------------------------------
    def stats(self) -> QueueStats:
        """Counts for metrics."""
        ...

    def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers and its schema is current."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def enqueue_each(
    enqueue: Callable[[NewRequest], RequestRecord], news: Sequence[NewRequest]
) -> builtins.list[RequestRecord | Exception]:
    """``enqueue`` of each request in turn; each answer, or the error it raised, in its request's place."""
    out: builtins.list[RequestRecord | Exception] = []
    for new in news:
        try:
            out.append(enqueue(new))
        except Exception as exc:
            out.append(exc)
    return out
