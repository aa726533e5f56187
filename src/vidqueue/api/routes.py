"""The request-queue API, served identically under both base paths."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request
from starlette.concurrency import run_in_threadpool

from vidqueue.api.auth import Auth, Caller
from vidqueue.api.intake import AuthenticatedRoute, off_loop
from vidqueue.api.limits import admit
from vidqueue.api.present import Json, present_delivery, present_request, stored_image_marker
from vidqueue.api.schemas import (
    DeliveryList,
    ErrorOut,
    ModelDetails,
    ModelList,
    RequestList,
    RequestOut,
    StatusName,
    SubmitBody,
    check_text,
)
from vidqueue.api.state import AppState
from vidqueue.errors import FieldError, InvalidInput, NotFound, QueueFull, RateLimited
from vidqueue.media.images import load_image
from vidqueue.media.netguard import FetchError, vet_url
from vidqueue.media.storage import media_key, request_prefix
from vidqueue.store import Idempotency, NewRequest, Status

BASE_PATHS = ("/api/v1/ie/requestqueue/apikey", "/api/v1/ie/requestqueue")
LIVE_WORKER_S = 30.0


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in {
        400: "Invalid body or payload",
        401: "No or bad API key",
        403: "Organisation mismatch",
        404: "Unknown model or request",
        503: "Unavailable; retry after Retry-After seconds",
    }.items()
}

# Routes answer Json directly: the response models below document the shapes (tests check real answers
# against them) without FastAPI re-validating every answer on the hot path. Each route authenticates before its
# body is read, and parses a large body off the event loop (AuthenticatedRoute).
router = APIRouter(responses=_ERRORS, route_class=AuthenticatedRoute)


def model_details(state: AppState, model_id: str, live: dict[str, list[str]]) -> dict[str, Any]:
    """A model's details: the catalog's fields, plus which engine serves it and how many workers do now."""
    spec = state.catalog.get(model_id)
    engine = state.settings.engine_for(model_id, spec.engines)
    details = spec.details()
    upstream = engine in ("kling", "gmi")
    details.update(
        engine=engine,
        host_type="external" if upstream else "internal",
        qworkers=sum(1 for models in live.values() if model_id in models),
    )
    if upstream:
        details["external_provider"] = engine  # where requests really go (else the catalog's maker)
    return details


@router.get("/models", response_model=None, responses={200: {"model": ModelList}}, summary="List the models")
async def list_models(caller: Auth) -> Json:
    """Every model this server serves."""
    state = caller.state
    live = await state.call(state.store.live_workers, LIVE_WORKER_S)
    ids = state.catalog.ids()
    return Json({"model_ids": ids, "models": [model_details(state, m, live) for m in ids]})


@router.get(
    "/models/{model_id}", response_model=None, responses={200: {"model": ModelDetails}}, summary="One model's details"
)
async def get_model(model_id: str, caller: Auth) -> Json:
    """A model's parameters, schema and engine."""
    state = caller.state
    live = await state.call(state.store.live_workers, LIVE_WORKER_S)
    return Json(model_details(state, model_id, live))


@router.post(
    "/requests",
    response_model=None,
    summary="Submit a request",
    responses={
        200: {"model": RequestOut},
        409: {"model": ErrorOut, "description": "Idempotency-Key used before with a different body"},
        413: {"model": ErrorOut, "description": "Body too large"},
        415: {"model": ErrorOut, "description": "Body is not JSON"},
        429: {"model": ErrorOut, "description": "Over the organisation's limits; retry after Retry-After seconds"},
    },
)
async def submit(
    body: SubmitBody,
    caller: Auth,
    request: Request,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            description="The same key with the same body within 24 h answers the original request, not a new one.",
        ),
    ] = None,
) -> Json:
    """Validate the payload (fetching and checking an input image) and queue the request."""
    state = caller.state
    # Read (and parsed) already; the work on a large one (a million keys, a 10 MB image) runs in a thread.
    size = len(await request.body())
    idem = await off_loop(state, size, _intake, body, idempotency_key)
    if idem is not None:
        # A retry of a submit that went through answers at once, without validating or fetching again.
        original = await state.call(state.store.replay, caller.org_id, idem)
        if original is not None:
            return Json(present_request(original, state.storage, state.settings.media_url_ttl_s))
    # Limits before any work (validation, an image fetch): a refused submit costs one read.
    rule = await admit(state, caller.org_id)
    spec = state.catalog.get(body.model)
    payload = await off_loop(state, size, spec.validate, body.payload)
    if body.callback_url is not None:
        await run_in_threadpool(_vet_callback_url, body.callback_url, state.settings.allow_private_urls)
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
        priority=body.priority,
        input_key=input_key,
        callback_url=body.callback_url,
        idempotency=idem,
        admit=rule,
    )
    try:
        record = await state.call(state.store.enqueue, new)
    except (RateLimited, QueueFull):
        # Over a limit after all (others got in while this one was checked): its stored image goes with it.
        if input_key is not None:
            await run_in_threadpool(state.storage.delete_prefix, request_prefix(request_id))
        raise
    return Json(present_request(record, state.storage, state.settings.media_url_ttl_s))


def _vet_callback_url(url: str, allow_private: bool) -> None:
    """Refuse a callback_url that is not http(s) or points to a private, loopback or link-local address."""
    try:
        vet_url(url, allow_private=allow_private, resolve_timeout_s=5.0)
    except FetchError as exc:
        raise InvalidInput(details=[FieldError("callback_url", str(exc))]) from exc


def _intake(body: SubmitBody, idempotency_key: str | None) -> Idempotency | None:
    """Check the payload's text, and fingerprint the body when it comes with an Idempotency-Key."""
    check_text(body.payload)
    return None if idempotency_key is None else Idempotency(idempotency_key, _fingerprint(body))


def _fingerprint(body: SubmitBody) -> str:
    """A digest of what a submit asked for, as sent (key order and whitespace do not count)."""
    # The fields as they are (JSON values already): the same bytes as model_dump(mode="json") gave, in a tenth of the
    # time on a big payload, most of which model_dump spends holding the GIL.
    fields = {name: getattr(body, name) for name in SubmitBody.model_fields}
    try:
        canonical = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    except (TypeError, ValueError) as exc:
        # Nesting past ~250 levels or an integer past 64 bits: no model takes either, so refuse it here.
        rule = "must not nest deeper than 250 levels or hold integers outside the 64-bit range"
        raise InvalidInput(details=[FieldError("payload", rule)]) from exc
    return hashlib.sha256(canonical).hexdigest()


@router.get(
    "/requests/{request_id}", response_model=None, responses={200: {"model": RequestOut}}, summary="One request"
)
async def get_request(request_id: str, caller: Auth) -> Json:
    """A request of the caller's organisation."""
    state = caller.state
    record = await state.call(state.store.get, request_id, caller.org_id)
    if record is None:
        raise NotFound(f"Request '{request_id}' does not exist.")
    return Json(present_request(record, state.storage, state.settings.media_url_ttl_s))


@router.get(
    "/requests", response_model=None, responses={200: {"model": RequestList}}, summary="List requests, newest first"
)
async def list_requests(
    caller: Auth,
    model_id: Annotated[str | None, Query(description="Only this model's requests.")] = None,
    status: Annotated[StatusName | None, Query(description="Only requests in this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 20,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
) -> Json:
    """The organisation's requests; `total` counts every match."""
    state = caller.state
    page = await state.call(
        state.store.list,
        caller.org_id,
        model=model_id,
        status=Status(status) if status else None,
        limit=limit,
        cursor=cursor,
    )
    ttl = state.settings.media_url_ttl_s
    return Json(
        {
            "requests": [present_request(r, state.storage, ttl) for r in page.items],
            "total": page.total,
            "next_cursor": page.next_cursor,
        }
    )


@router.get(
    "/requests/{request_id}/deliveries",
    response_model=None,
    responses={200: {"model": DeliveryList}},
    summary="A request's webhook deliveries",
)
async def list_deliveries(request_id: str, caller: Auth) -> Json:
    """Every status change of the request sent (or still to be sent) to its callback_url, oldest first."""
    state = caller.state
    record = await state.call(state.store.get, request_id, caller.org_id)
    if record is None:
        raise NotFound(f"Request '{request_id}' does not exist.")
    found = await state.call(state.store.deliveries, request_id)
    return Json({"request_id": request_id, "deliveries": [present_delivery(d) for d in found]})


async def _cancel(request_id: str, caller: Caller) -> Json:
    state = caller.state
    record = await state.call(state.store.cancel, request_id, caller.org_id)
    # A processing request ends when its worker sees the cancel between steps; wait a little for that.
    deadline = time.monotonic() + state.settings.cancel_wait_s
    while record.status is Status.PROCESSING and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        again = await state.call(state.store.get, request_id, caller.org_id)
        if again is None:
            break
        record = again
    return Json(present_request(record, state.storage, state.settings.media_url_ttl_s))


@router.post(
    "/requests/{request_id}/cancel",
    response_model=None,
    responses={200: {"model": RequestOut}},
    summary="Cancel a request",
)
async def cancel_request(request_id: str, caller: Auth) -> Json:
    """Cancel a queued request at once, or a processing one between its steps."""
    return await _cancel(request_id, caller)


@router.delete(
    "/requests/{request_id}",
    response_model=None,
    responses={200: {"model": RequestOut}},
    summary="Cancel a request (same as POST …/cancel)",
)
async def delete_request(request_id: str, caller: Auth) -> Json:
    """Same as POST /requests/{request_id}/cancel."""
    return await _cancel(request_id, caller)
