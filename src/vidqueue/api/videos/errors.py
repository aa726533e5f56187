"""The /v1 error shape: ``{"error": {"message", "type", "param", "code"}}``, so OpenAI-style clients raise their usual
classes (``BadRequestError`` on 400, ``AuthenticationError`` on 401, ``NotFoundError`` on 404, ``RateLimitError`` on
429). ``code`` is vidqueue's own code (the GMI paths carry the same one), ``param`` the field to blame, in the
dialect's names (``size``, ``seconds``, ``input_reference``); ``details`` lists every broken rule when there are
several.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse
from starlette.responses import Response

from vidqueue.api.errors import MAX_DETAILS, ErrorAnswer
from vidqueue.errors import FieldError, InvalidInput, NotFound

# The error types OpenAI's API answers, by status.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type(status: int) -> str:
    """The ``type`` of an error answer with this status."""
    return _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def openai_error(answer: ErrorAnswer) -> Response:
    """An error answer of the /v1 paths."""
    param = answer.param or (answer.details[0].field if answer.details else None)
    error: dict[str, Any] = {
        "message": answer.message,
        "type": error_type(answer.status),
        "param": param,
        "code": answer.code,
    }
    if len(answer.details) > 1:
        error["details"] = [d.as_dict() for d in answer.details[:MAX_DETAILS]]
    return JSONResponse({"error": error}, status_code=answer.status, headers=answer.headers)


class ModelNotFound(NotFound):
    """The model does not exist."""

    code = "model_not_found"
    param = "model"


def renamed(exc: InvalidInput, names: Mapping[str, str]) -> InvalidInput:
    """``exc`` with its fields named the dialect's way: ``names`` maps the queue's names (``payload.duration``) to the
    dialect's (``seconds``); any other ``payload.x`` becomes ``x``."""

    def name(field: str) -> str:
        for old, new in names.items():
            if field == old or field.startswith(old + "."):
                return new + field[len(old) :]
        return field.removeprefix("payload.") if field != "payload" else "body"

    details = [FieldError(name(d.field), d.message) for d in exc.details]
    message = exc.message
    if exc.details and message.startswith(exc.details[0].field):
        # The summary starts with the first detail's field: name it the same way, keep the rest ("and 2 more").
        message = details[0].field + message[len(exc.details[0].field) :]
    out = type(exc)(message, details)
    out.__cause__ = exc.__cause__
    return out
