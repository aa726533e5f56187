"""Rules both store implementations share: cursors, cancel messages, recovery decisions, idempotency keys, facts."""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re
from collections.abc import Mapping
from typing import Any

from vidqueue.errors import Conflict, FieldError, InvalidInput
from vidqueue.store.records import TERMINAL, Idempotency, Status

log = logging.getLogger("vidqueue.store")

CANCELLED_MESSAGE = "The request was cancelled by its owner."
WORKER_LOST_MESSAGE = (
    "The worker processing this request stopped {attempts} times (crash or out of memory); "
    "the request was not retried again. Submit it again, or with smaller settings."
)


MAX_SEQ = 2**63 - 1  # the largest row sequence number a store can hold (a signed 64-bit integer)
_CURSOR = re.compile(r"s(0|[1-9][0-9]{0,18})", re.ASCII)  # at most 19 digits; MAX_SEQ bounds the rest
_MAX_CURSOR_CHARS = 64  # "s" and 19 digits are 28 base64 characters


def encode_cursor(seq: int) -> str:
    """An opaque cursor pointing just past a row."""
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The row sequence number a cursor points past; InvalidInput if it is not ours.

    Only what ``encode_cursor`` writes is read back: ``s`` and a plain decimal in the range of a signed 64-bit
    integer. ``int()`` alone would also take signs, spaces, underscores, non-ASCII digits and numbers no database
    column can be compared with (a driver error, not a 400).
    """
    raw = ""
    if len(cursor) <= _MAX_CURSOR_CHARS:
        try:
            raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode("ascii")
        except (ValueError, binascii.Error):
            raw = ""
    match = _CURSOR.fullmatch(raw)
    if match is None or int(match.group(1)) > MAX_SEQ:
        raise InvalidInput(details=[FieldError("cursor", "is not a cursor returned by this server")])
    return int(match.group(1))


def clean_facts(facts: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """A worker's facts as stored: plain floats, finite ones only (JSON has no NaN or infinity)."""
    return {name: {m: float(v) for m, v in per.items() if math.isfinite(v)} for name, per in facts.items()}


def ending(code: str, message: str) -> dict[str, Any]:
    """The columns a failed or cancelled request ends with."""
    return {"outcome": {"error": {"code": code, "message": message}}, "error": message, "error_code": code}


def recovery(attempts: int, cancel_requested: bool, max_attempts: int, now: float) -> tuple[Status, dict[str, Any]]:
    """Where an expired processing request goes (cancelled, failed worker_lost, or queued), and its columns."""
    values: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None, "updated_at": now}
    if cancel_requested:
        return Status.CANCELLED, {**values, "finished_at": now, **ending("cancelled", CANCELLED_MESSAGE)}
    if attempts >= max_attempts:
        message = WORKER_LOST_MESSAGE.format(attempts=attempts)
        return Status.FAILED, {**values, "finished_at": now, **ending("worker_lost", message)}
    return Status.QUEUED, {**values, "progress": 0}


_ALLOWED = {
    Status.QUEUED: {Status.PROCESSING, Status.CANCELLED},
    # back to queued: a lease recovered or released
    Status.PROCESSING: {Status.SUCCESS, Status.FAILED, Status.CANCELLED, Status.QUEUED},
}


def ensure_transition(old: Status, new: Status) -> None:
    """Raise Conflict for a transition the state diagram does not allow; terminal rows never change."""
    if old in TERMINAL or new not in _ALLOWED.get(old, set()):
        raise Conflict(f"A request cannot go from {old} to {new}.")


def log_transition(request_id: str, old: Status | str, new: Status, **extra: Any) -> None:
    """The one log line per state change of a request."""
    tail = " ".join(f"{k}={v}" for k, v in extra.items() if v is not None)
    log.info("request %s %s -> %s%s", request_id, old, new, f" {tail}" if tail else "")


def replayed(idem: Idempotency, found: tuple[str, float] | None, now: float) -> bool:
    """Whether a stored key (its fingerprint and time) means "answer the original request".

    False when there is no key or it is older than its window (a new request may take it); Conflict when the
    key is fresh but came with another body.
    """
    if found is None or now - found[1] >= idem.window_s:
        return False
    if found[0] != idem.fingerprint:
        raise Conflict(
            f"Idempotency-Key '{idem.key}' was used with a different body in the last "
            f"{idem.window_s / 3600:g} h; use a new key for a new request."
        )
    return True
