"""Admission of a submit (draining, per-organisation limits, the queue cap) and the cap on request bodies."""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidqueue.api.errors import ErrorAnswer, ErrorShape, shape_for
from vidqueue.api.state import AppState
from vidqueue.config import LimitsSettings
from vidqueue.errors import QueueFull, RateLimited, ShuttingDown, TooLarge
from vidqueue.store import Admission, AdmitRule

WINDOW_S = 60.0  # the per-minute limit counts submits in any 60 s
# An active request ends in seconds to minutes and the queue moves as fast: a short wait, then try again.
ACTIVE_RETRY_S = 5
QUEUE_RETRY_S = 5
DRAIN_RETRY_S = 5


def check(limits: LimitsSettings, org_id: str, seen: Admission) -> None:
    """Raise RateLimited (429) or QueueFull (503) when one more submit by ``org_id`` would go over a limit."""
    rpm = limits.requests_per_minute or 0
    if rpm and len(seen.recent) >= rpm:
        oldest = min(seen.recent)
        if oldest > seen.now - WINDOW_S:
            # Honest: one more fits once the oldest of the last ``rpm`` submits leaves the window.
            wait = min(int(WINDOW_S), max(1, math.ceil(oldest + WINDOW_S - seen.now)))
            raise RateLimited(
                f"Organisation '{org_id}' is over its limit of {rpm} requests per minute "
                f"(limits.requests_per_minute); retry in {wait} s.",
                retry_after=wait,
            )
    cap = limits.max_active_per_org or 0
    if cap and seen.active >= cap:
        raise RateLimited(
            f"Organisation '{org_id}' already has {seen.active} requests queued or processing, its limit of {cap} "
            "(limits.max_active_per_org); submit more as they finish.",
            retry_after=ACTIVE_RETRY_S,
            code="too_many_active",
        )
    queue = limits.max_queued or 0
    if queue and seen.queued >= queue:
        raise QueueFull(
            f"The queue is full: {seen.queued} requests are queued, its limit of {queue} (limits.max_queued); "
            "retry later.",
            retry_after=QUEUE_RETRY_S,
        )


def admit_rule(limits: LimitsSettings, org_id: str) -> AdmitRule | None:
    """The limits a submit by ``org_id`` is inserted under (None when there are none)."""
    if not (limits.requests_per_minute or limits.max_active_per_org or limits.max_queued):
        return None
    return AdmitRule(
        recent=limits.requests_per_minute or 0,
        active_cap=limits.max_active_per_org or 0,
        queued_cap=limits.max_queued or 0,
        check=partial(check, limits, org_id),
    )


async def admit(state: AppState, org_id: str) -> AdmitRule | None:
    """Refuse a new submit while draining or over a limit, early; answer the rule its insert must pass as well.

    This first check costs one read and spares a refused submit any work (validation, an image fetch). It cannot
    be the last word: submits in flight together all read the same counts. The store checks the rule again in
    the insert's own transaction, one submit of the organisation at a time, which is what makes the limits exact.
    """
    if state.draining:
        raise ShuttingDown(
            "The server is shutting down and takes no new requests; retry shortly (another instance may take it).",
            retry_after=DRAIN_RETRY_S,
        )
    rule = admit_rule(state.settings.limits, org_id)
    if rule is None:
        return None
    seen = await state.call(
        state.store.admission, org_id, recent=rule.recent, active_cap=rule.active_cap, queued_cap=rule.queued_cap
    )
    rule.check(seen)
    return rule


def _size(n: int) -> str:
    if n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MiB"
    if n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} bytes"


class BodyTooLarge(HTTPException):
    """A body over the cap, found while reading it (an HTTPException, so FastAPI does not turn it into a 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(status_code=413, detail=message)


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` gets 413 with the usual error body.

    A body that declares its length is refused before a byte of it is read; a chunked one when the count passes
    the cap.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, shapes: Mapping[str, ErrorShape] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.shapes = dict(shapes or {})  # the error shape of each dialect's path prefix
        self.message = f"The request body is over the {_size(max_bytes)} limit (limits.max_body_bytes)."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the call on with a counting ``receive``, or answer 413 at once."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            shape = shape_for(scope.get("path", ""), self.shapes)
            response = shape(ErrorAnswer(413, self.message, TooLarge.code))
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.message)
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
