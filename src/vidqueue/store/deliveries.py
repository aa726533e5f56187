"""Webhook deliveries and signing secrets in the store: the outbox a dispatcher drains.

On SQLite and PostgreSQL a trigger writes the delivery row in the same statement as the status change (migration
0004); the in-memory twin does the same under its lock. Here: claiming due deliveries under a lease, recording how
an attempt went, listing a request's deliveries, and each organisation's secret.
"""

from __future__ import annotations

import builtins
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, replace
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Row

from vidqueue.store.records import Attempt, Delivery, RequestRecord
from vidqueue.store.schema import webhook_deliveries, webhook_secrets

_D = webhook_deliveries.c

# The request fields a delivery carries (the same the triggers snapshot).
SNAPSHOT_FIELDS = (
    "seq",
    "request_id",
    "org_id",
    "model",
    "status",
    "priority",
    "payload",
    "outcome",
    "error",
    "error_code",
    "created_at",
    "updated_at",
    "queued_at",
    "processing_at",
    "finished_at",
    "progress",
    "attempts",
    "qworker_id",
)


EMPTY: Mapping[str, int] = MappingProxyType({})


def fair_share(candidates: Sequence[Any], limit: int, cap: int, busy: Mapping[str, int]) -> builtins.list[int]:
    """The seqs to lease from (seq, org_id) candidates in round-robin order: up to ``limit``, an organisation's
    in-flight (``busy``) plus new ones never past ``cap``."""
    taken: dict[str, int] = {}
    chosen: builtins.list[int] = []
    for seq, org in candidates:
        if len(chosen) >= limit:
            break
        if busy.get(org, 0) + taken.get(org, 0) < cap:
            taken[org] = taken.get(org, 0) + 1
            chosen.append(seq)
    return chosen


_ANY_DUE = sa.text("SELECT 1 FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= :now LIMIT 1")


def _delivery(row: Row[Any]) -> Delivery:
    m = row._mapping
    return Delivery(**{name: m[name] for name in Delivery.__dataclass_fields__})


def _settled(attempt: Attempt, now: float) -> dict[str, Any]:
    """The columns an attempt sets: delivered, scheduled again, or given up."""
    state = "delivered" if attempt.ok else ("pending" if attempt.retry_at is not None else "failed")
    return {
        "state": state,
        "last_attempt_at": now,
        "last_status_code": attempt.status_code,
        "last_error": attempt.error,
        "delivered_at": now if attempt.ok else None,
        "next_attempt_at": attempt.retry_at if attempt.retry_at is not None else now,
        "lease_owner": None,
        "lease_expires_at": None,
    }


class SqlDeliveries:
    """The deliveries half of SqlStore (a mixin: it uses the store's connections and clock)."""

    _clock: Callable[[], float]
    _is_pg: bool

    # Provided by SqlStore.
    _read: Callable[..., AbstractContextManager[Connection]]
    _write: Callable[..., AbstractContextManager[Connection]]

    def webhook_secret(self, org_id: str, new: Callable[[], str]) -> str:
        """The organisation's signing secret, created with ``new()`` on first use (one winner if several race)."""
        with self._read(single=True) as conn:
            found = conn.execute(sa.select(webhook_secrets.c.secret).where(webhook_secrets.c.org_id == org_id)).first()
        if found is not None:
            return str(found[0])
        insert = pg_insert if self._is_pg else sqlite_insert
        with self._write() as conn:
            conn.execute(
                insert(webhook_secrets)
                .values(org_id=org_id, secret=new(), created_at=self._clock())
                .on_conflict_do_nothing(index_elements=["org_id"])
            )
            return str(
                conn.execute(sa.select(webhook_secrets.c.secret).where(webhook_secrets.c.org_id == org_id)).scalar_one()
            )

    def claim_deliveries(
        self, owner: str, limit: int, lease_s: float, *, per_org: int | None = None, busy: Mapping[str, int] = EMPTY
    ) -> builtins.list[Delivery]:
        """Lease up to ``limit`` due deliveries, each the oldest pending one of its request, taking organisations
        in turn, none past ``per_org`` in flight (``busy``: what each already has in flight)."""
        now = self._clock()
        with self._read(single=True) as conn:
            # Most polls find nothing due: one read of the partial index says so, without building the claim or
            # taking a write transaction (SQLite's one writer is every submit's too).
            if conn.execute(_ANY_DUE, {"now": now}).first() is None:
                return []
        cap = per_org or limit
        full = [org for org, n in busy.items() if n >= cap]
        earlier = webhook_deliveries.alias("earlier")
        conditions = [
            _D.state == "pending",
            _D.next_attempt_at <= now,
            sa.or_(_D.lease_expires_at.is_(None), _D.lease_expires_at < now),
            ~sa.exists().where(
                earlier.c.request_id == _D.request_id, earlier.c.state == "pending", earlier.c.seq < _D.seq
            ),
        ]
        if full:
            conditions.append(_D.org_id.not_in(full))
        # Each organisation's due deliveries numbered oldest first; ordering by that number takes every
        # organisation's first, then every second, ...: a round robin, so one organisation's backlog (or its slow
        # receiver) never holds the others back.
        turn = sa.func.row_number().over(partition_by=_D.org_id, order_by=(_D.next_attempt_at, _D.seq))
        ranked = sa.select(_D.seq, _D.org_id, _D.next_attempt_at, turn.label("turn")).where(*conditions).subquery()
        # Rows of an organisation beyond its free slots are skipped below: at most its ``busy`` count of them.
        spare = sum(n for org, n in busy.items() if org not in full)
        candidates = (
            sa.select(ranked.c.seq, ranked.c.org_id)
            .where(ranked.c.turn <= cap)
            .order_by(ranked.c.turn, ranked.c.next_attempt_at, ranked.c.seq)
            .limit(limit + spare)
        )
        with self._write() as conn:
            chosen = fair_share(conn.execute(candidates).all(), limit, cap, busy)
            if not chosen:
                return []
            # The lease is taken only where it is still free: a dispatcher that read the same candidates at the
            # same time (PostgreSQL) skips the rows another is leasing rather than waiting for them.
            free = sa.select(_D.seq).where(
                _D.seq.in_(chosen),
                _D.state == "pending",
                sa.or_(_D.lease_expires_at.is_(None), _D.lease_expires_at < now),
            )
            if self._is_pg:
                free = free.with_for_update(skip_locked=True)
            rows = conn.execute(
                sa.update(webhook_deliveries)
                .where(_D.seq.in_(free.scalar_subquery()))
                .values(lease_owner=owner, lease_expires_at=now + lease_s)
                .returning(*webhook_deliveries.c)
            ).all()
        return sorted((_delivery(r) for r in rows), key=lambda d: d.seq)

    def settle_delivery(self, delivery_id: str, owner: str, attempt: Attempt) -> bool:
        """Record an attempt of a delivery this owner leased; False when the lease was lost (another sent it)."""
        values = _settled(attempt, self._clock())
        with self._write(single=True) as conn:
            result = conn.execute(
                sa.update(webhook_deliveries)
                .where(_D.delivery_id == delivery_id, _D.lease_owner == owner, _D.state == "pending")
                .values(attempts=_D.attempts + 1, **values)
            )
        return bool(result.rowcount)

    def deliveries(self, request_id: str) -> builtins.list[Delivery]:
        """A request's deliveries, oldest first."""
        with self._read(single=True) as conn:
            rows = conn.execute(sa.select(webhook_deliveries).where(_D.request_id == request_id).order_by(_D.seq))
            return [_delivery(r) for r in rows]


class MemoryDeliveries:
    """The deliveries half of MemoryStore: the outbox is written under the store's lock, like the triggers do."""

    _clock: Callable[[], float]
    _lock: threading.RLock

    def _init_deliveries(self) -> None:
        self._outbox: dict[str, Delivery] = {}
        self._secrets: dict[str, str] = {}
        self._delivery_seq = 0
        self._delivery_leases: dict[str, tuple[str, float]] = {}

    def _record_change(self, row: RequestRecord) -> None:
        """Queue a delivery for a status change of a request with a callback_url (call under the lock)."""
        if row.callback_url is None:
            return
        self._delivery_seq += 1
        fields = asdict(row)
        snapshot = {name: fields[name] for name in SNAPSHOT_FIELDS}
        snapshot["status"] = row.status.value
        delivery = Delivery(
            delivery_id=f"msg_{uuid.uuid4().hex}",
            seq=self._delivery_seq,
            request_id=row.request_id,
            org_id=row.org_id,
            event=row.status.value,
            url=row.callback_url,
            snapshot=snapshot,
            state="pending",
            created_at=row.updated_at,
            next_attempt_at=row.updated_at,
        )
        self._outbox[delivery.delivery_id] = delivery

    def _pending(self) -> Iterator[Delivery]:
        return (d for d in self._outbox.values() if d.state == "pending")

    def webhook_secret(self, org_id: str, new: Callable[[], str]) -> str:
        """The organisation's signing secret, created with ``new()`` on first use."""
        with self._lock:
            if org_id not in self._secrets:
                self._secrets[org_id] = new()
            return self._secrets[org_id]

    def claim_deliveries(
        self, owner: str, limit: int, lease_s: float, *, per_org: int | None = None, busy: Mapping[str, int] = EMPTY
    ) -> builtins.list[Delivery]:
        """Lease up to ``limit`` due deliveries, each the oldest pending one of its request, organisations in turn."""
        cap = per_org or limit
        with self._lock:
            now = self._clock()
            first: dict[str, Delivery] = {}
            for d in sorted(self._pending(), key=lambda d: d.seq):
                first.setdefault(d.request_id, d)
            due = sorted(
                (
                    d
                    for d in first.values()
                    if d.next_attempt_at <= now and self._delivery_leases.get(d.delivery_id, ("", 0.0))[1] < now
                ),
                key=lambda d: (d.next_attempt_at, d.seq),
            )
            turns: dict[str, int] = {}
            ranked: list[tuple[int, float, int, Delivery]] = []
            for d in due:
                turns[d.org_id] = turns.get(d.org_id, 0) + 1
                ranked.append((turns[d.org_id], d.next_attempt_at, d.seq, d))
            ranked.sort(key=lambda r: r[:3])
            by_seq = {d.seq: d for *_, d in ranked}
            chosen = fair_share([(seq, d.org_id) for *_, seq, d in ranked], limit, cap, busy)
            for seq in chosen:
                self._delivery_leases[by_seq[seq].delivery_id] = (owner, now + lease_s)
            return sorted((by_seq[seq] for seq in chosen), key=lambda d: d.seq)

    def settle_delivery(self, delivery_id: str, owner: str, attempt: Attempt) -> bool:
        """Record an attempt of a delivery this owner leased; False when the lease was lost."""
        with self._lock:
            d = self._outbox.get(delivery_id)
            if d is None or d.state != "pending" or self._delivery_leases.get(delivery_id, ("",))[0] != owner:
                return False
            values = _settled(attempt, self._clock())
            for column in ("lease_owner", "lease_expires_at"):
                values.pop(column)
            self._delivery_leases.pop(delivery_id, None)
            self._outbox[delivery_id] = replace(d, attempts=d.attempts + 1, **values)
            return True

    def deliveries(self, request_id: str) -> builtins.list[Delivery]:
        """A request's deliveries, oldest first."""
        with self._lock:
            return sorted((d for d in self._outbox.values() if d.request_id == request_id), key=lambda d: d.seq)
