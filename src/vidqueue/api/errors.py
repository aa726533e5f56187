"""HTTP answers for vidqueue's exceptions: one table, never a traceback.

Each handler says what the answer is (an ``ErrorAnswer``: status, message, code, field details, headers); the
dialect whose path was called shapes the body. GMI's paths (and everything else) answer ``error_body``; a dialect
installed under a path prefix (``/v1``) answers its own shape from the same facts.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

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


@dataclass(frozen=True)
class ErrorAnswer:
    """What an error answer says, whatever shape its dialect gives the body."""

    status: int
    message: str
    code: str
    details: list[FieldError] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    param: str | None = None  # the field to blame when the error names one (else the first detail's)


ErrorShape = Callable[[ErrorAnswer], Response]


def gmi_error(answer: ErrorAnswer) -> Response:
    """The answer in the shape of GMI's paths: ``error_body``."""
    body = error_body(answer.message, answer.code, answer.details)
    return JSONResponse(body, status_code=answer.status, headers=answer.headers)


def shape_for(path: str, shapes: Mapping[str, ErrorShape]) -> ErrorShape:
    """The error shape of the dialect under whose prefix ``path`` is (GMI's shape for any other path)."""
    for prefix, shape in shapes.items():
        if path == prefix or path.startswith(prefix + "/"):
            return shape
    return gmi_error


def status_for(exc: ServiceError) -> int:
    """The HTTP status of an exception, from the table."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


# When the damaged-store line was last logged: once a minute tells the operator without flooding the log.
_damage_logged = [-float("inf")]


def _vidqueue_error(_request: Request, exc: Exception) -> ErrorAnswer:
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
        return ErrorAnswer(500, "Internal server error; it was logged.", "internal_error")
    details = exc.details if isinstance(exc, InvalidInput | NotFound) else []
    param = getattr(exc, "param", None)
    return ErrorAnswer(status, exc.message, exc.code, details, headers, param if isinstance(param, str) else None)


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


# Pydantic's error types, in vidqueue's words (a rule that follows the field's name: "limit must be at least 1").
_RULES: dict[str, str] = {
    "missing": "is required",
    "extra_forbidden": "is not a known field",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "string_unicode": "must be UTF-8 text",
    "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "list_type": "must be a list",
    "none_required": "must be null",
}
# Rules with a limit, from the error's ctx.
_LIMIT_RULES: dict[str, tuple[str, str]] = {
    "greater_than_equal": ("ge", "must be at least {}"),
    "greater_than": ("gt", "must be more than {}"),
    "less_than_equal": ("le", "must be at most {}"),
    "less_than": ("lt", "must be less than {}"),
    "string_too_short": ("min_length", "must be at least {} characters"),
    "string_too_long": ("max_length", "must be at most {} characters"),
    "too_short": ("min_length", "must have at least {} items"),
    "too_long": ("max_length", "must have at most {} items"),
}
# What pydantic's own sentences start with, and the words that replace it where no rule above applies.
_PYDANTIC_OPENINGS = (
    ("Input should be ", "must be "),
    ("Input should ", "must "),
    ("String should ", "must "),
    ("Value error, ", ""),
    ("Assertion failed, ", ""),
)
_QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'")


def rule_of(err: Mapping[str, Any]) -> str:
    """One pydantic error as vidqueue states a rule (``must be one of queued, …``); pydantic's wording never leaks."""
    kind = str(err.get("type", ""))
    ctx = err.get("ctx") or {}
    if kind in _RULES:
        return _RULES[kind]
    if kind in _LIMIT_RULES and _LIMIT_RULES[kind][0] in ctx:
        name, text = _LIMIT_RULES[kind]
        limit = ctx[name]
        if kind == "string_too_short" and limit == 1:
            return "must not be empty"
        return text.format(f"{limit:g}" if isinstance(limit, float) else limit)
    if kind in ("literal_error", "enum") and "expected" in ctx:
        # ctx["expected"] reads "'queued', 'processing' or 'failed'"; the values alone, in order.
        values = _QUOTED.findall(str(ctx["expected"])) or [str(ctx["expected"])]
        return "must be one of " + ", ".join(values)
    message = str(err.get("msg") or "is invalid")
    for opening, words in _PYDANTIC_OPENINGS:
        if message.startswith(opening):
            return words + message[len(opening) :]
    return message


def _validation_error(request: Request, exc: Exception) -> ErrorAnswer:
    assert isinstance(exc, RequestValidationError)
    content_type = request.headers.get("content-type", "")
    if request.method in ("POST", "PUT", "PATCH") and content_type.split(";")[0].strip().lower() != "application/json":
        # Checked here rather than in a dependency, so valid JSON calls pay nothing for it.
        message = f"The body must be JSON with 'Content-Type: application/json' (got '{content_type}')."
        return ErrorAnswer(415, message, Unsupported.code)
    details: list[FieldError] = []
    for err in exc.errors()[:MAX_DETAILS]:  # the first ones name the problem; a million would only cost
        if err.get("type") == "json_invalid":
            details.append(FieldError("body", "is not valid JSON"))
            continue
        message = rule_of(err)
        # A validator of a free-form field (the payload) names the exact spot in ctx["field"].
        field = str((err.get("ctx") or {}).get("field") or _field_path(tuple(err.get("loc", ()))))
        details.append(FieldError(field, message))
    first = details[0] if details else FieldError("body", "is invalid")
    message = f"{first.field} {first.message}"
    return ErrorAnswer(400, message, "invalid_request", details)


def _http_error(_request: Request, exc: Exception) -> ErrorAnswer:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "Request failed."
    if exc.status_code == 404 and message == "Not Found":
        message = "There is no such path; see /docs for the API."
    if exc.status_code == 400 and message == _FASTAPI_PARSE_ERROR:
        # The JSON reader failed on something other than syntax; answer like any invalid body, naming why.
        cause = exc.__cause__
        reason = _PARSE_FAILURES.get(type(cause), "is not valid JSON") if cause is not None else "is not valid JSON"
        return ErrorAnswer(400, f"body {reason}", "invalid_request", [FieldError("body", reason)])
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return ErrorAnswer(exc.status_code, message, code, headers=dict(exc.headers or {}))


def _unexpected(_request: Request, exc: Exception) -> ErrorAnswer:
    log.exception("unexpected error", exc_info=exc)
    return ErrorAnswer(500, "Internal server error; it was logged.", "internal_error")


def install_error_handlers(app: FastAPI, shapes: Mapping[str, ErrorShape] | None = None) -> None:
    """Register the handlers: vidqueue errors, validation errors, HTTP errors, and anything else.

    ``shapes`` maps a path prefix (``/v1``) to the error shape of the dialect served there.
    """
    table = dict(shapes or {})

    def shaped(answer: Callable[[Request, Exception], ErrorAnswer]) -> Callable[[Request, Exception], Response]:
        def handler(request: Request, exc: Exception) -> Response:
            return shape_for(request.scope.get("path", ""), table)(answer(request, exc))

        return handler

    app.add_exception_handler(ServiceError, shaped(_vidqueue_error))
    app.add_exception_handler(RequestValidationError, shaped(_validation_error))
    app.add_exception_handler(StarletteHTTPException, shaped(_http_error))
    app.add_exception_handler(Exception, shaped(_unexpected))


def document_errors(spec: dict[str, Any]) -> dict[str, Any]:
    """Drop FastAPI's 422 from the OpenAPI document: invalid input answers 400 with the usual error body."""
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    schemas = spec.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return spec
