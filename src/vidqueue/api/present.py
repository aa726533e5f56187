"""Turning store records into wire objects: whole-second times, fresh signed media URLs."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import JSONResponse

from vidqueue.media.storage import Storage, media_key
from vidqueue.store import Delivery, RequestRecord


class Json(JSONResponse):
    """A JSON answer rendered by orjson: the request object is on every hot path, and orjson is 5x json's speed."""

    def render(self, content: Any) -> bytes:
        """Serialise ``content``."""
        return orjson.dumps(content)


# What a stored payload keeps in place of an image sent as base64: the stored input's file name behind a scheme that
# image intake refuses, so no value a client sends can read as one. Reads answer a signed URL of the stored input.
STORED_IMAGE = "vidqueue-stored:"


def stored_image_marker(key: str) -> str:
    """The payload value that stands for the input image stored under ``key``."""
    return STORED_IMAGE + key.rsplit("/", 1)[-1]


def present_payload(record: RequestRecord, storage: Storage, ttl_s: int) -> dict[str, Any]:
    """The accepted payload, a stored input image in it as a fresh signed URL (never megabytes of base64)."""
    payload = record.payload
    marked = [k for k, v in payload.items() if isinstance(v, str) and v.startswith(STORED_IMAGE)]
    if not marked:
        return payload
    out = dict(payload)
    for name in marked:
        # A webhook's snapshot has no input_key; the marker names the file in the request's folder.
        key = record.input_key or media_key(record.request_id, payload[name].removeprefix(STORED_IMAGE))
        out[name] = storage.url(key, ttl_s)
    return out


def _secs(value: float | None) -> int | None:
    return None if value is None else int(value)


def present_outcome(outcome: dict[str, Any] | None, storage: Storage, ttl_s: int) -> dict[str, Any] | None:
    """The public outcome: stored media keys become absolute, signed, expiring URLs."""
    if outcome is None:
        return None
    if "error" in outcome:
        return {"error": outcome["error"]}
    media = [{"id": m["id"], "url": storage.url(m["key"], ttl_s)} for m in outcome.get("media", [])]
    out: dict[str, Any] = {"media_urls": media}
    if media:
        out["video_url"] = media[0]["url"]
    if outcome.get("thumbnail_key"):
        out["thumbnail_image_url"] = storage.url(outcome["thumbnail_key"], ttl_s)
    for key in ("video", "engine", "upstream", "generation"):
        if key in outcome:
            out[key] = outcome[key]
    return out


def present_request(record: RequestRecord, storage: Storage, ttl_s: int) -> dict[str, Any]:
    """The request object every request endpoint answers."""
    return {
        "request_id": record.request_id,
        "org_id": record.org_id,
        "model": record.model,
        "status": record.status.value,
        "is_public": False,
        "payload": present_payload(record, storage, ttl_s),
        "outcome": present_outcome(record.outcome, storage, ttl_s),
        "created_at": int(record.created_at),
        "updated_at": int(record.updated_at),
        "queued_at": int(record.queued_at),
        "processing_at": _secs(record.processing_at),
        "finished_at": _secs(record.finished_at),
        "progress": record.progress,
        "queue_position": record.queue_position,
        "qworker_id": record.qworker_id,
        "attempts": record.attempts,
        "error": record.error,
    }


def present_delivery(delivery: Delivery) -> dict[str, Any]:
    """One webhook delivery as GET …/deliveries answers it."""
    return {
        "delivery_id": delivery.delivery_id,
        "event": delivery.event,
        "url": delivery.url,
        "state": delivery.state,
        "attempts": delivery.attempts,
        "created_at": int(delivery.created_at),
        "next_attempt_at": int(delivery.next_attempt_at) if delivery.state == "pending" else None,
        "last_attempt_at": _secs(delivery.last_attempt_at),
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "delivered_at": _secs(delivery.delivered_at),
    }
