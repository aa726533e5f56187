"""The /v1/videos dialect: OpenAI's videos API (and /v1/models) over the same queue, keys, limits and storage.

Each route translates and calls the shared queue operations (``api.operations``); a video is a request, with the
same id on the GMI paths.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, RedirectResponse
from starlette.datastructures import UploadFile
from starlette.responses import Response

from vidqueue.api import operations
from vidqueue.api.auth import Auth, Caller
from vidqueue.api.intake import AuthenticatedRoute, loads, off_loop
from vidqueue.api.operations import Submission, fingerprint
from vidqueue.api.present import Json
from vidqueue.api.state import AppState
from vidqueue.api.videos.errors import ModelNotFound, renamed
from vidqueue.api.videos.shapes import (
    CREATE_BODY,
    CreateBody,
    ModelListOut,
    ModelOut,
    OpenAIErrorOut,
    VideoDeleted,
    VideoList,
    VideoOut,
    check_fields,
    model_of,
    present_model,
    present_video,
    translate,
)
from vidqueue.catalog import ModelSpec
from vidqueue.errors import FieldError, InvalidInput, NotFound, Unsupported
from vidqueue.store import Idempotency, RequestRecord, Status
from vidqueue.store.rules import encode_cursor

PREFIX = "/v1"

# How soon the SDK's poll helper asks again (the openai-poll-after-ms header), while a video is not finished.
POLL_AFTER_MS = {Status.QUEUED: 1000, Status.PROCESSING: 500}
IDEMPOTENCY_KEY_MAX = 255

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": OpenAIErrorOut, "description": text}
    for code, text in {
        400: "Invalid field (named in error.param)",
        401: "No or bad API key",
        403: "Organisation mismatch",
        404: "Unknown video or model",
        503: "Unavailable; retry after Retry-After seconds",
    }.items()
}
_POLL_HEADER = {
    "openai-poll-after-ms": {
        "description": "While the video is not finished: milliseconds to wait before asking again.",
        "schema": {"type": "integer"},
    }
}
_IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX},
    "description": "The same key with the same body within 24 h answers the original video, not a new one "
    "(shared with the GMI paths).",
}
_FILE = {"schema": {"type": "string", "format": "binary"}}

router = APIRouter(responses=_ERRORS, route_class=AuthenticatedRoute)


def _spec(state: AppState, model_id: str) -> ModelSpec | None:
    try:
        return state.catalog.get(model_id)
    except NotFound:
        return None  # a model taken out of the configuration since; its requests still read


def _video(state: AppState, record: RequestRecord, spec: ModelSpec | None = None) -> Json:
    video = present_video(record, spec or _spec(state, record.model), state.settings.retention.max_age_s)
    poll = POLL_AFTER_MS.get(record.status)
    return Json(video, headers={"openai-poll-after-ms": str(poll)} if poll is not None else None)


async def _record(caller: Caller, video_id: str) -> RequestRecord:
    try:
        return await operations.get(caller, video_id)
    except NotFound:
        raise NotFound(f"Video '{video_id}' does not exist.") from None


# -- create -----------------------------------------------------------------------------------------------------


@router.post(
    "/videos",
    response_model=None,
    summary="Create a video",
    responses={
        200: {"model": VideoOut},
        409: {"model": OpenAIErrorOut, "description": "Idempotency-Key used before with a different body"},
        413: {"model": OpenAIErrorOut, "description": "Body too large"},
        415: {"model": OpenAIErrorOut, "description": "Body is neither multipart/form-data nor JSON"},
        429: {"model": OpenAIErrorOut, "description": "Over the organisation's limits; retry after Retry-After"},
    },
    openapi_extra={"requestBody": CREATE_BODY, "parameters": [_IDEMPOTENCY_HEADER]},
)
async def create_video(caller: Auth, request: Request) -> Json:
    """Queue a video: `model`, `prompt`, `seconds`, `size`, `input_reference` (multipart form or JSON)."""
    state = caller.state
    body = await _read_create(state, request)
    await off_loop(state, body.size, check_fields, body.fields)
    model = model_of(body.fields)
    try:
        spec = state.catalog.get(model)
    except NotFound as exc:
        raise ModelNotFound(exc.message, exc.details) from None
    # An uploaded image is base64-encoded for image intake: on a large body, off the event loop.
    done = await off_loop(state, body.size, translate, spec, body)
    try:
        idem = await _idempotency(state, request, body.size, done.model, done.payload, done.priority, done.callback_url)
        submission = Submission(done.model, done.payload, done.priority, done.callback_url, idem, body.size)
        record = await operations.submit(caller, submission)
    except InvalidInput as exc:
        raise renamed(exc, done.names) from None
    return _video(state, record, spec)


async def _idempotency(
    state: AppState, request: Request, size: int, model: str, payload: dict[str, Any], priority: int, url: str | None
) -> Idempotency | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX:
        raise InvalidInput(details=[FieldError("Idempotency-Key", f"must be 1 to {IDEMPOTENCY_KEY_MAX} characters")])
    # The fields of a GMI submit, so the same key and the same request through either dialect replay each other.
    fields = {"model": model, "payload": payload, "priority": priority, "callback_url": url}
    return Idempotency(key, await off_loop(state, size, fingerprint, fields))


_NESTED = re.compile(r"([^\[\]]+)\[([^\[\]]+)\]")


async def _read_create(state: AppState, request: Request) -> CreateBody:
    """The create call's fields, from a JSON body or a form (multipart, with input_reference as a file)."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if media == "application/json":
        raw = await request.body()
        try:
            parsed = await off_loop(state, len(raw), loads, raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise InvalidInput(details=[FieldError("body", "is not valid JSON")]) from exc
        if not isinstance(parsed, dict):
            raise InvalidInput(details=[FieldError("body", "must be a JSON object")])
        return CreateBody(parsed, size=len(raw))
    if media not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise Unsupported(
            f"The body must be multipart/form-data or JSON (application/json); got '{content_type or 'none'}'."
        )
    # A data URL may be a field of ~14 MB: fields may be as large as the body cap allows.
    form = await request.form(max_files=1, max_fields=1000, max_part_size=state.settings.limits.max_body_bytes)
    fields: dict[str, Any] = {}
    upload: bytes | None = None
    size = 0
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key != "input_reference":
                    raise InvalidInput(details=[FieldError(key, "is a file; only input_reference takes one")])
                upload = await value.read()
                size += len(upload)
                continue
            size += len(value)
            _put(fields, key, value)
    finally:
        await form.close()
    return CreateBody(fields, form=True, upload=upload, size=size)


def _put(fields: dict[str, Any], key: str, value: str) -> None:
    """Set a form field; ``outer[inner]`` (as OpenAI's SDK spells an object's keys) goes into an object."""
    nested = _NESTED.fullmatch(key)
    if nested is None:
        if key in fields:
            raise InvalidInput(details=[FieldError(key, "is given more than once")])
        fields[key] = value
        return
    outer, inner = nested.groups()
    target = fields.setdefault(outer, {})
    if not isinstance(target, dict) or inner in target:
        raise InvalidInput(details=[FieldError(key, "is given more than once")])
    target[inner] = value


# -- read ---------------------------------------------------------------------------------------------------


@router.get(
    "/videos/{video_id}",
    response_model=None,
    summary="One video",
    responses={200: {"model": VideoOut, "headers": _POLL_HEADER}},
)
async def get_video(video_id: str, caller: Auth) -> Json:
    """A video of the caller's organisation (any request, whichever API made it)."""
    return _video(caller.state, await _record(caller, video_id))


@router.get("/videos", response_model=None, summary="List videos", responses={200: {"model": VideoList}})
async def list_videos(
    caller: Auth,
    after: Annotated[str | None, Query(description="The last id of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 20,
    order: Annotated[Literal["asc", "desc"], Query(description="By creation time; newest first by default.")] = "desc",
) -> Json:
    """The organisation's videos (every request, whichever API made it), a page at a time."""
    state = caller.state
    cursor: str | None = None
    if after is not None:
        anchor = await state.call(state.store.get, after, caller.org_id)
        if anchor is None:
            raise InvalidInput(details=[FieldError("after", "is not the id of a video of this organisation")])
        cursor = encode_cursor(anchor.seq)
    page = await state.call(state.store.list, caller.org_id, limit=limit, cursor=cursor, oldest_first=order == "asc")
    retention_s = state.settings.retention.max_age_s
    specs: dict[str, ModelSpec | None] = {}
    data = []
    for record in page.items:
        if record.model not in specs:
            specs[record.model] = _spec(state, record.model)
        data.append(present_video(record, specs[record.model], retention_s))
    return Json(
        {
            "object": "list",
            "data": data,
            "has_more": page.next_cursor is not None,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


@router.get(
    "/videos/{video_id}/content",
    response_model=None,
    response_class=FileResponse,
    summary="Download a video or its thumbnail",
    responses={
        200: {"description": "The file", "content": {"video/mp4": _FILE, "image/jpeg": _FILE}},
        206: {"description": "The requested byte range (HTTP Range)", "content": {"video/mp4": _FILE}},
        307: {"description": "Media stored in S3: a presigned URL of the file"},
    },
)
async def download_video(
    video_id: str,
    caller: Auth,
    variant: Annotated[Literal["video", "thumbnail"], Query(description="The MP4, or its JPEG thumbnail.")] = "video",
) -> Response:
    """The bytes of a completed video (Range supported), or its thumbnail."""
    state = caller.state
    record = await _record(caller, video_id)
    if record.status is not Status.SUCCESS:
        shown = present_video(record, None, 0)["status"]
        raise NotFound(f"Video '{video_id}' has no content: it is {shown}, and content exists once it is completed.")
    outcome = record.outcome or {}
    media = outcome.get("media") or []
    key = outcome.get("thumbnail_key") if variant == "thumbnail" else (media[0].get("key") if media else None)
    if not isinstance(key, str):
        raise NotFound(f"Video '{video_id}' has no {variant}.")
    local = state.local_storage
    if local is None:
        return RedirectResponse(state.storage.url(key, state.settings.media_url_ttl_s), status_code=307)
    try:
        path = local.path(key)
    except ValueError:
        path = None
    if path is None or not path.is_file():
        raise NotFound(f"The {variant} of video '{video_id}' is missing from storage.")
    media_type = "image/jpeg" if variant == "thumbnail" else "video/mp4"
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})


# -- delete -------------------------------------------------------------------------------------------------


@router.delete(
    "/videos/{video_id}", response_model=None, summary="Delete a video", responses={200: {"model": VideoDeleted}}
)
async def delete_video(video_id: str, caller: Auth) -> Json:
    """Cancel a queued or running video (it stays, failed with code `cancelled`); delete a finished one and its
    media."""
    record = await _record(caller, video_id)
    if not record.status.is_terminal():
        await operations.cancel(caller, video_id)
    elif not await operations.delete_finished(caller, video_id):
        raise NotFound(f"Video '{video_id}' does not exist.")
    return Json({"id": video_id, "object": "video.deleted", "deleted": True})


# -- models -------------------------------------------------------------------------------------------------


@router.get("/models", response_model=None, summary="List the models", responses={200: {"model": ModelListOut}})
async def list_models(caller: Auth) -> Json:
    """Every model this server serves."""
    return Json({"object": "list", "data": [present_model(spec) for spec in caller.state.catalog]})


@router.get("/models/{model_id}", response_model=None, summary="One model", responses={200: {"model": ModelOut}})
async def get_model(model_id: str, caller: Auth) -> Json:
    """One model."""
    try:
        spec = caller.state.catalog.get(model_id)
    except NotFound as exc:
        raise ModelNotFound(exc.message, exc.details) from None
    return Json(present_model(spec))
