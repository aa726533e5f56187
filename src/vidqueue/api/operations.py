"""The queue operations every API dialect translates onto: submit, read, cancel and delete a request.

A dialect (GMI's request queue in ``routes``, the ``/v1/videos`` shape in ``videos``) owns only its translation: its
body into a ``Submission``, a ``RequestRecord`` into its answer, and errors into its error shape. Validation, image
intake and storage, callback vetting, limits, idempotency and the store's operations live here, once, so a request
is the same row whichever door it came in by.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool

from vidqueue.api.auth import Caller
from vidqueue.api.intake import off_loop
from vidqueue.api.limits import admit
from vidqueue.api.present import stored_image_marker
from vidqueue.errors import FieldError, InvalidInput, NotFound, QueueFull, RateLimited
from vidqueue.media.images import load_image
from vidqueue.media.netguard import FetchError, vet_url
from vidqueue.media.storage import Storage, media_key, request_prefix
from vidqueue.store import Idempotency, NewRequest, RequestRecord, Status
from vidqueue.store.records import Pruned

log = logging.getLogger("vidqueue.api")


@dataclass(frozen=True)
class Submission:
    """A submit in the queue's own terms, whichever dialect it came in by."""

    model: str
    payload: dict[str, Any]  # the model's parameters, as sent (validated by ``submit``)
    priority: int = 0
    callback_url: str | None = None
    idempotency: Idempotency | None = None
    body_bytes: int = 0  # the size of the body it came in: the work on a large one runs off the event loop


def fingerprint(fields: Mapping[str, Any]) -> str:
    """A digest of what a submit asked for (key order and whitespace do not count), for its Idempotency-Key."""
    try:
        canonical = orjson.dumps(dict(fields), option=orjson.OPT_SORT_KEYS)
    except (TypeError, ValueError) as exc:
        # Nesting past ~250 levels or an integer past 64 bits: no model takes either, so refuse it here.
        rule = "must not nest deeper than 250 levels or hold integers outside the 64-bit range"
        raise InvalidInput(details=[FieldError("payload", rule)]) from exc
    return hashlib.sha256(canonical).hexdigest()


async def submit(caller: Caller, sub: Submission) -> RequestRecord:
    """Validate the payload (fetching, checking and storing an input image) and queue the request.

    A retry of a submit that went through (the same Idempotency-Key and body) answers the original at once,
    without validating or fetching again. Errors name fields the queue's way (``payload.duration``).
    """
    state = caller.state
    if sub.idempotency is not None:
        original = await state.call(state.store.replay, caller.org_id, sub.idempotency)
        if original is not None:
            return original
    # Limits before any work (validation, an image fetch): a refused submit costs one read.
    rule = await admit(state, caller.org_id)
    spec = state.catalog.get(sub.model)
    payload = await off_loop(state, sub.body_bytes, spec.validate, sub.payload)
    if sub.callback_url is not None:
        await run_in_threadpool(_vet_callback_url, sub.callback_url, state.settings.allow_private_urls)
    request_id = str(uuid.uuid4())
    input_key: str | None = None
    image_param = spec.image_param()
    if image_param is not None and image_param in payload:
        image = await run_in_threadpool(
            load_image,
            payload[image_param],
            allow_private=state.settings.allow_private_urls,
            timeout_s=state.settings.images.fetch_timeout_s,
            max_bytes=state.settings.images.max_bytes,
            field=f"payload.{image_param}",
        )
        input_key = media_key(request_id, f"input.{'png' if image.format == 'png' else 'jpg'}")
        await run_in_threadpool(state.storage.put_bytes, input_key, image.data, image.content_type)
        if not str(payload[image_param]).strip().lower().startswith(("http://", "https://")):
            # Base64 is not kept: the stored input stands in for it, and reads answer a signed URL of it.
            payload = {**payload, image_param: stored_image_marker(input_key)}
    new = NewRequest(
        request_id=request_id,
        org_id=caller.org_id,
        model=spec.id,
        payload=payload,
        priority=sub.priority,
        input_key=input_key,
        callback_url=sub.callback_url,
        idempotency=sub.idempotency,
        admit=rule,
    )
    try:
        return await state.enqueue(new)
    except (RateLimited, QueueFull):
        # Over a limit after all (others got in while this one was checked): its stored image goes with it.
        if input_key is not None:
            await run_in_threadpool(state.storage.delete_prefix, request_prefix(request_id))
        raise


def _vet_callback_url(url: str, allow_private: bool) -> None:
    """Refuse a callback_url that is not http(s) or points to a private, loopback or link-local address."""
    try:
        vet_url(url, allow_private=allow_private, resolve_timeout_s=5.0)
    except FetchError as exc:
        raise InvalidInput(details=[FieldError("callback_url", str(exc))]) from exc


async def get(caller: Caller, request_id: str) -> RequestRecord:
    """A request of the caller's organisation; NotFound for any other."""
    state = caller.state
    record = await state.call(state.store.get, request_id, caller.org_id)
    if record is None:
        raise NotFound(f"Request '{request_id}' does not exist.")
    return record


async def cancel(caller: Caller, request_id: str) -> RequestRecord:
    """Cancel a queued request at once, or a processing one between its steps (waiting a little for that)."""
    state = caller.state
    record = await state.call(state.store.cancel, request_id, caller.org_id)
    deadline = time.monotonic() + state.settings.cancel_wait_s
    while record.status is Status.PROCESSING and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        again = await state.call(state.store.get, request_id, caller.org_id)
        if again is None:
            break
        record = again
    return record


async def delete_finished(caller: Caller, request_id: str) -> bool:
    """Delete a finished request of the caller's organisation and its media now; False when there is none."""
    state = caller.state
    gone = await state.call(state.store.delete, request_id, caller.org_id)
    if gone is None:
        return False
    await run_in_threadpool(_delete_media, state.storage, gone)
    return True


def _delete_media(storage: Storage, gone: Pruned) -> None:
    prefix = request_prefix(gone.request_id)
    try:
        # The whole folder (it also holds what no row names), and any key the row named outside it.
        storage.delete_prefix(prefix)
        for key in gone.media_keys():
            if not key.startswith(prefix):
                storage.delete_prefix(key)
    except Exception as exc:  # the row is gone already; the answer stands, and the operator is told
        log.warning("the media of deleted request %s were not deleted: %s", gone.request_id, exc)
