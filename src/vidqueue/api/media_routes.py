"""Serving local media: signed, expiring URLs, with HTTP Range (browsers seek in video)."""

from __future__ import annotations

import mimetypes
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse

from vidqueue.api.schemas import ErrorOut
from vidqueue.api.state import AppState, get_state
from vidqueue.errors import Forbidden, NotFound

router = APIRouter(tags=["media"])
State = Annotated[AppState, Depends(get_state)]

_TYPES = {".mp4": "video/mp4", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
_FILE = {media_type: {"schema": {"type": "string", "format": "binary"}} for media_type in sorted(set(_TYPES.values()))}
# What the route really answers, for the OpenAPI document (FastAPI would claim JSON and a 422 it never sends).
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The file", "content": _FILE},
    206: {"description": "The requested byte range of the file (HTTP Range)", "content": _FILE},
    400: {"model": ErrorOut, "description": "The expires or sig query parameter is missing or malformed"},
    403: {"model": ErrorOut, "description": "The signature is wrong or the URL has expired"},
    404: {"model": ErrorOut, "description": "No such file, or this server does not serve media itself"},
}


# GET and HEAD as two routes, so each has its own operation id in the OpenAPI document.
@router.get(
    "/media/{key:path}", summary="A result file (signed URL)", response_class=FileResponse, responses=_RESPONSES
)
@router.head(
    "/media/{key:path}",
    summary="A result file's headers (signed URL)",
    response_class=FileResponse,
    responses=_RESPONSES,
)
def get_media(
    key: str,
    state: State,
    expires: Annotated[int, Query()],
    sig: Annotated[str, Query()],
) -> FileResponse:
    """The file behind an outcome URL, if its signature is good and it has not expired."""
    storage = state.local_storage
    if storage is None:
        raise NotFound("This server does not serve media itself.")
    if not storage.verify(key, expires, sig):
        raise Forbidden("The media URL is invalid or has expired; GET the request again for a fresh URL.")
    try:
        path = storage.path(key)
    except ValueError as exc:
        raise NotFound("No such media file.") from exc
    if not path.is_file():
        raise NotFound("No such media file.")
    suffix = path.suffix.lower()
    media_type = _TYPES.get(suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})
