"""The request-queue API, served identically under both base paths."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel

from vidqueue.api import operations
from vidqueue.api.auth import Auth, Caller
from vidqueue.api.intake import AuthenticatedRoute, off_loop
from vidqueue.api.operations import Submission, fingerprint
from vidqueue.api.present import Json, present_delivery, present_request
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
from vidqueue.store import Idempotency, Status

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


class WhoAmI(BaseModel):
    """GET /whoami: whose key this is (the console's header shows it)."""

    org_id: str
    key_prefix: str


@router.get("/whoami", response_model=None, responses={200: {"model": WhoAmI}}, summary="The caller's organisation")
async def whoami(caller: Auth) -> Json:
    """The organisation the key belongs to, and the key's first characters (the key itself is never stored)."""
    return Json({"org_id": caller.org_id, "key_prefix": caller.key.prefix})


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
    # Read (and parsed) already; the work on a large one (a million keys, a 10 MB image) runs in a thread.
    return await submit_answer(caller, body, idempotency_key, len(await request.body()))


async def submit_answer(caller: Caller, body: SubmitBody, idempotency_key: str | None, size: int) -> Json:
    """The answer to a submit whose body (of ``size`` bytes) is parsed: the route's, and the fast path's."""
    state = caller.state
    idem = await off_loop(state, size, _intake, body, idempotency_key)
    submission = Submission(body.model, body.payload, body.priority, body.callback_url, idem, size)
    record = await operations.submit(caller, submission)
    return Json(present_request(record, state.storage, state.settings.media_url_ttl_s))


def _intake(body: SubmitBody, idempotency_key: str | None) -> Idempotency | None:
    """Check the payload's text, and fingerprint the body when it comes with an Idempotency-Key."""
    check_text(body.payload)
    return None if idempotency_key is None else Idempotency(idempotency_key, _fingerprint(body))


def _fingerprint(body: SubmitBody) -> str:
    """A digest of what a submit asked for, as sent (key order and whitespace do not count)."""
    # The fields as they are (JSON values already): the same bytes as model_dump(mode="json") gave, in a tenth of the
    # time on a big payload, most of which model_dump spends holding the GIL.
    return fingerprint({name: getattr(body, name) for name in SubmitBody.model_fields})


@router.get(
    "/requests/{request_id}", response_model=None, responses={200: {"model": RequestOut}}, summary="One request"
)
async def get_request(request_id: str, caller: Auth) -> Json:
    """A request of the caller's organisation."""
    return await request_answer(caller, request_id)


async def request_answer(caller: Caller, request_id: str) -> Json:
    """The answer to a read of one request: the route's, and the fast path's."""
    state = caller.state
    record = await operations.get(caller, request_id)
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
    await operations.get(caller, request_id)
    found = await state.call(state.store.deliveries, request_id)
    return Json({"request_id": request_id, "deliveries": [present_delivery(d) for d in found]})


async def _cancel(request_id: str, caller: Caller) -> Json:
    record = await operations.cancel(caller, request_id)
    state = caller.state
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
