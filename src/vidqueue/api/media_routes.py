"""Serving local media: signed, expiring URLs, with HTTP Range (browsers seek in video)."""

from __future__ import annotations

import mimetypes
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse

from vidqueue.api.state import AppState, get_state
from vidqueue.errors import Forbidden, NotFound

router = APIRouter(tags=["media"])
State = Annotated[AppState, Depends(get_state)]

_TYPES = {".mp4": "video/mp4", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


@router.api_route("/media/{key:path}", methods=["GET", "HEAD"], summary="A result file (signed URL)")
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
