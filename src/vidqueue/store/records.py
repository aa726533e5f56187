"""Values the store hands out: request rows, pages and API keys."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any


class Status(enum.StrEnum):
    """A request's status: queued → processing → success | failed | cancelled; queued → cancelled."""

    QUEUED = "queued"
    PROCESSING = "processing"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def is_terminal(self) -> bool:
        """Whether the status never changes again."""
        return self in TERMINAL


TERMINAL = frozenset({Status.SUCCESS, Status.FAILED, Status.CANCELLED})


@dataclass(frozen=True)
class Idempotency:
    """A submit's Idempotency-Key and the fingerprint of the body it came with."""

    key: str
    fingerprint: str
    window_s: float = 24 * 3600  # how long the key holds; after that it may name a new request


@dataclass(frozen=True)
class NewRequest:
    """A validated submission, ready to be queued."""

    request_id: str
    org_id: str
    model: str
    payload: dict[str, Any]
    priority: int = 0
    callback_url: str | None = None
    input_key: str | None = None  # storage key of the checked input image
    idempotency: Idempotency | None = None
    admit: AdmitRule | None = None  # limits checked in the insert's own transaction


@dataclass(frozen=True)
class AdmitRule:
    """Limits a submit is admitted under: what to count, and the check that raises when one more is over.

    The store reads the counts and runs ``check`` in the transaction that inserts the request, holding the
    organisation's turn, so concurrent submits cannot all pass a check made before any of them was inserted.
    """

    recent: int  # how many of the organisation's newest submit times to read (its per-minute limit)
    active_cap: int  # count the organisation's queued and processing requests up to this
    queued_cap: int  # count every queued request up to this (a cap across organisations)
    check: Callable[[Admission], None]


@dataclass(frozen=True)
class RequestRecord:
    """One row of the requests table."""

    request_id: str
    seq: int
    org_id: str
    model: str
    status: Status
    payload: dict[str, Any]
    created_at: float
    updated_at: float
    queued_at: float
    priority: int = 0
    outcome: dict[str, Any] | None = None
    error: str | None = None
    error_code: str | None = None
    processing_at: float | None = None
    finished_at: float | None = None
    progress: int = 0
    attempts: int = 0
    qworker_id: str | None = None  # the worker that holds or last held the request
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    cancel_requested_at: float | None = None
    engine_state: dict[str, Any] | None = None
    callback_url: str | None = None
    input_key: str | None = None
    queue_position: int | None = None  # derived at read time, only while queued

    def evolve(self, **changes: Any) -> RequestRecord:
        """A copy with some fields changed."""
        return replace(self, **changes)

    @classmethod
    def from_mapping(cls, m: Mapping[Any, Any], position: int | None = None) -> RequestRecord:
        """A record from a row of the requests table, or from a webhook's snapshot of one (missing columns: unset)."""
        get = m.get
        return cls(
            request_id=m["request_id"],
            seq=m["seq"],
            org_id=m["org_id"],
            model=m["model"],
            status=Status(m["status"]),
            payload=m["payload"],
            created_at=m["created_at"],
            updated_at=m["updated_at"],
            queued_at=m["queued_at"],
            priority=get("priority") or 0,
            outcome=get("outcome"),
            error=get("error"),
            error_code=get("error_code"),
            processing_at=get("processing_at"),
            finished_at=get("finished_at"),
            progress=get("progress") or 0,
            attempts=get("attempts") or 0,
            qworker_id=get("qworker_id"),
            lease_owner=get("lease_owner"),
            lease_expires_at=get("lease_expires_at"),
            cancel_requested_at=get("cancel_requested_at"),
            engine_state=get("engine_state"),
            callback_url=get("callback_url"),
            input_key=get("input_key"),
            queue_position=position,
        )


@dataclass(frozen=True)
class Admission:
    """What a submit is checked against: the organisation's newest submits and active requests, and the queue."""

    now: float  # the store's clock, the one that stamped created_at
    recent: tuple[float, ...]  # created_at of the organisation's newest requests (as many as asked), newest first
    active: int  # the organisation's queued and processing requests, counted up to the cap asked
    queued: int  # queued requests of every organisation, counted up to the cap asked


@dataclass(frozen=True)
class Page:
    """One page of a listing, newest first."""

    items: list[RequestRecord]
    total: int
    next_cursor: str | None


@dataclass(frozen=True)
class ApiKey:
    """A stored API key: only its hash is kept."""

    key_id: str
    org_id: str
    name: str
    key_hash: str
    prefix: str
    created_at: float
    revoked_at: float | None = None


@dataclass(frozen=True)
class Recovered:
    """What a recovery sweep did to one request whose lease had expired."""

    request_id: str
    status: Status
    attempts: int


@dataclass
class QueueStats:
    """Counts for metrics: rows by (model, status), failures by code, processing time sums."""

    by_model_status: dict[tuple[str, str], int] = field(default_factory=dict)
    failures_by_code: dict[tuple[str, str], int] = field(default_factory=dict)
    duration_sum: dict[str, float] = field(default_factory=dict)
    duration_count: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery: a request's status change, to be POSTed to its callback_url."""

    delivery_id: str  # also the webhook-id header: the same on every retry, so receivers can drop repeats
    seq: int
    request_id: str
    org_id: str
    event: str  # the status the request changed to
    url: str
    snapshot: dict[str, Any]  # the request row at the change
    state: str  # pending | delivered | failed
    created_at: float
    next_attempt_at: float
    attempts: int = 0
    last_attempt_at: float | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_at: float | None = None

    def request(self) -> RequestRecord:
        """The request as it was at the change."""
        return RequestRecord.from_mapping(self.snapshot)


@dataclass(frozen=True)
class Attempt:
    """How one delivery attempt went, and what to do next."""

    ok: bool
    status_code: int | None = None
    error: str | None = None
    retry_at: float | None = None  # when to try again; None after a failure means give up


@dataclass(frozen=True)
class Pruned:
    """A finished request that retention deleted, with what is needed to delete its media."""

    request_id: str
    org_id: str
    input_key: str | None = None
    outcome: dict[str, Any] | None = None

    def media_keys(self) -> list[str]:
        """The storage keys the row named: its input image, its videos and its thumbnail."""
        outcome = self.outcome or {}
        keys = [self.input_key] if self.input_key else []
        keys += [m["key"] for m in outcome.get("media") or [] if isinstance(m, dict) and m.get("key")]
        if outcome.get("thumbnail_key"):
            keys.append(outcome["thumbnail_key"])
        return list(dict.fromkeys(keys))
