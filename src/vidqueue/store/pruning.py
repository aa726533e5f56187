"""Retention in the store: deleting finished requests past their time, with their idempotency keys and deliveries.

Only terminal rows are deleted, and those never change again: no worker or API call writes them, so a prune
never waits on (or fights) the queue's own writes. The media the rows named are the caller's to delete.
"""

from __future__ import annotations

import builtins
import copy
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from vidqueue.store.records import TERMINAL, Delivery, Idempotency, Pruned, RequestRecord
from vidqueue.store.schema import idempotency_keys, requests, webhook_deliveries

_R = requests.c
_K = idempotency_keys.c
_TERMINAL = sorted(s.value for s in TERMINAL)

#: An idempotency key older than this no longer names its request (see ``rules.replayed``): it may go.
KEY_WINDOW_S: float = Idempotency.window_s


class SqlPruning:
    """The retention half of SqlStore (a mixin: it uses the store's connections and clock)."""

    _clock: Callable[[], float]
    _is_pg: bool

    # Provided by SqlStore.
    _write: Callable[..., AbstractContextManager[Connection]]

    def prune(self, finished_before: float, limit: int) -> builtins.list[Pruned]:
        """Delete up to ``limit`` requests that finished before ``finished_before``, oldest first; answer them."""
        now = self._clock()
        # On SQLite `status || ''` keeps the planner off the claim index, which would read every finished row and
        # sort them; the finished_at index hands out the oldest first and stops at the limit. PostgreSQL's planner
        # has statistics and picks that index by itself (the expression would only blur its estimates).
        status = _R.status if self._is_pg else _R.status.concat("")
        oldest = (
            sa.select(_R.seq)
            .where(_R.finished_at < finished_before, status.in_(_TERMINAL))
            .order_by(_R.finished_at)
            .limit(limit)
        )
        if self._is_pg:
            # Several API machines may prune at once: each takes rows no other holds, so none waits on another
            # and each row (and its media) is handed out once.
            oldest = oldest.with_for_update(skip_locked=True)
        with self._write() as conn:
            rows = conn.execute(
                sa.delete(requests)
                .where(_R.seq.in_(oldest.scalar_subquery()))
                .returning(_R.request_id, _R.org_id, _R.input_key, _R.outcome)
            ).all()
            ids = [r.request_id for r in rows]
            # Keys past their window are dead weight whatever their request; the pruned rows' keys go with them.
            stale = _K.created_at < now - KEY_WINDOW_S
            conn.execute(sa.delete(idempotency_keys).where(sa.or_(stale, _K.request_id.in_(ids)) if ids else stale))
            if ids:
                conn.execute(sa.delete(webhook_deliveries).where(webhook_deliveries.c.request_id.in_(ids)))
        return [Pruned(r.request_id, r.org_id, r.input_key, r.outcome) for r in rows]

    def delete(self, request_id: str, org_id: str) -> Pruned | None:
        """Delete one finished request of ``org_id`` now, as retention would; None when there is no such one."""
        with self._write() as conn:
            row = conn.execute(
                sa.delete(requests)
                .where(_R.request_id == request_id, _R.org_id == org_id, _R.status.in_(_TERMINAL))
                .returning(_R.request_id, _R.org_id, _R.input_key, _R.outcome)
            ).one_or_none()
            if row is None:
                return None
            conn.execute(sa.delete(idempotency_keys).where(_K.request_id == request_id))
            conn.execute(sa.delete(webhook_deliveries).where(webhook_deliveries.c.request_id == request_id))
        return Pruned(row.request_id, row.org_id, row.input_key, row.outcome)


class MemoryPruning:
    """The retention half of MemoryStore."""

    _clock: Callable[[], float]
    _lock: threading.RLock
    _rows: dict[str, RequestRecord]
    _keys_used: dict[tuple[str, str], tuple[str, float, str]]
    _outbox: dict[str, Delivery]  # MemoryDeliveries' webhook outbox

    def prune(self, finished_before: float, limit: int) -> builtins.list[Pruned]:
        """Delete up to ``limit`` requests that finished before ``finished_before``, oldest first; answer them."""
        with self._lock:
            old = sorted(
                (
                    r
                    for r in self._rows.values()
                    if r.status in TERMINAL and r.finished_at is not None and r.finished_at < finished_before
                ),
                key=lambda r: (r.finished_at or 0.0, r.seq),
            )[:limit]
            gone = {r.request_id for r in old}
            for request_id in gone:
                del self._rows[request_id]
            stale = self._clock() - KEY_WINDOW_S
            for key in [k for k, (_, at, rid) in self._keys_used.items() if rid in gone or at < stale]:
                del self._keys_used[key]
            for delivery_id in [d.delivery_id for d in self._outbox.values() if d.request_id in gone]:
                del self._outbox[delivery_id]
            return [Pruned(r.request_id, r.org_id, r.input_key, copy.deepcopy(r.outcome)) for r in old]

    def delete(self, request_id: str, org_id: str) -> Pruned | None:
        """Delete one finished request of ``org_id`` now, as retention would; None when there is no such one."""
        with self._lock:
            row = self._rows.get(request_id)
            if row is None or row.org_id != org_id or row.status not in TERMINAL:
                return None
            del self._rows[request_id]
            for key in [k for k, (_, _, rid) in self._keys_used.items() if rid == request_id]:
                del self._keys_used[key]
            for delivery_id in [d.delivery_id for d in self._outbox.values() if d.request_id == request_id]:
                del self._outbox[delivery_id]
            return Pruned(row.request_id, row.org_id, row.input_key, copy.deepcopy(row.outcome))
