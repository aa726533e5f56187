"""HTTP answers for vidqueue's exceptions: one table, one body shape, never a traceback."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vidqueue.errors import (
    Conflict,
    FieldError,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    ServiceError,
    StoreDamaged,
    TooLarge,
    Unauthenticated,
    Unavailable,
    Unsupported,
)

log = logging.getLogger("vidqueue.api")

# Most specific first: the first class in an exception's MRO that is here decides its status.
STATUS: dict[type[ServiceError], int] = {
    InvalidInput: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    Unsupported: 415,
    RateLimited: 429,
    Unavailable: 503,
}

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}
_FASTAPI_PARSE_ERROR = "There was an error parsing the body"
_PARSE_FAILURES: dict[type[BaseException], str] = {
    UnicodeDecodeError: "is not valid JSON: it is not UTF-8 text",
    RecursionError: "is not valid JSON that can be read: it is nested too deeply",
    ValueError: "is not valid JSON that can be read: a number in it is too long",
}


# A body of a million unknown keys must not get a million details back (a 12 MB request, a 150 MB answer).
MAX_DETAILS = 50


def error_body(message: str, code: str, details: list[FieldError] | None = None) -> dict[str, Any]:
    """The body of every non-2xx answer (the first MAX_DETAILS details; the message counts them all)."""
    return {"error": message, "code": code, "details": [d.as_dict() for d in (details or [])[:MAX_DETAILS]]}


def status_for(exc: ServiceError) -> int:
    """The HTTP status of an exception, from the table."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


# When the damaged-store line was last logged: once a minute tells the operator without flooding the log.
_damage_logged = [-float("inf")]


def _vidqueue_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    if isinstance(exc, StoreDamaged) and time.monotonic() - _damage_logged[0] >= 60:
        _damage_logged[0] = time.monotonic()
        log.error("%s", exc.operator_message)
    status = status_for(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, Unavailable | RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    if status == 500:
        log.error("unmapped error %s: %s", type(exc).__name__, exc.message)
        return JSONResponse(error_body("Internal server error; it was logged.", "internal_error"), status_code=500)
    details = exc.details if isinstance(exc, InvalidInput) else []
    return JSONResponse(error_body(exc.message, exc.code, details), status_code=status, headers=headers)


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    content_type = request.headers.get("content-type", "")
    if request.method in ("POST", "PUT", "PATCH") and content_type.split(";")[0].strip().lower() != "application/json":
        # Checked here rather than in a dependency, so valid JSON calls pay nothing for it.
        message = f"The body must be JSON with 'Content-Type: application/json' (got '{content_type}')."
        return JSONResponse(error_body(message, Unsupported.code), status_code=415)
    details: list[FieldError] = []
    for err in exc.errors()[:MAX_DETAILS]:  # the first ones name the problem; a million would only cost
        if err.get("type") == "json_invalid":
            details.append(FieldError("body", "is not valid JSON"))
            continue
        message = str(err.get("msg", "is invalid"))
        if err.get("type") == "extra_forbidden":
            message = "is not a known field"
        elif err.get("type") == "missing":
            message = "is required"
        # A validator of a free-form field (the payload) names the exact spot in ctx["field"].
        field = str((err.get("ctx") or {}).get("field") or _field_path(tuple(err.get("loc", ()))))
        details.append(FieldError(field, message))
    first = details[0] if details else FieldError("body", "is invalid")
    message = f"{first.field} {first.message}"
    return JSONResponse(error_body(message, "invalid_request", details), status_code=400)


def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "Request failed."
    if exc.status_code == 404 and message == "Not Found":
        message = "There is no such path; see /docs for the API."
    if exc.status_code == 400 and message == _FASTAPI_PARSE_ERROR:
        # The JSON reader failed on something other than syntax; answer like any invalid body, naming why.
        cause = exc.__cause__
        reason = _PARSE_FAILURES.get(type(cause), "is not valid JSON") if cause is not None else "is not valid JSON"
        return JSONResponse(error_body(f"body {reason}", "invalid_request", [FieldError("body", reason)]), 400)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return JSONResponse(error_body(message, code), status_code=exc.status_code, headers=exc.headers)


def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error", exc_info=exc)
    return JSONResponse(error_body("Internal server error; it was logged.", "internal_error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers: vidqueue errors, validation errors, HTTP errors, and anything else."""
    app.add_exception_handler(ServiceError, _vidqueue_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


def document_errors(spec: dict[str, Any]) -> dict[str, Any]:
    """Drop FastAPI's 422 from the OpenAPI document: invalid input answers 400 with the usual error body."""
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    schemas = spec.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return spec
