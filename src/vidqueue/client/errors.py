"""The SDK's exceptions: one root, one class per thing a caller would handle differently.

VidqueueError                root of everything the SDK raises
├── APIError                  the server answered with an error status (``status_code``, ``code``, ``body``)
│   ├── ValidationError       400/413/415/422: the body or payload broke a rule (``details`` names the fields)
│   ├── AuthenticationError   401/403: no key, a bad key, or the wrong organisation
│   │   └── MissingAPIKey     no key was given at all: raised before any request is sent
│   ├── NotFoundError         404: unknown model or request
│   ├── ConflictError         409: an Idempotency-Key reused with a different body
│   ├── RateLimitError        429: over a rate or quota limit (``retry_after``)
│   └── ServerError           5xx, including 503 "try again later" (``retry_after``)
├── NetworkError              no answer: the connection failed or broke
├── TimeoutError              no answer in time, or ``wait`` gave up (also a builtin ``TimeoutError``)
├── RequestFailed             ``wait`` saw the request end ``failed`` (``code``, ``message``, ``request``)
├── RequestCancelled          ``wait`` saw the request end ``cancelled``
└── RequestNotFinished        ``download`` of a request that has no video yet
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vidqueue.client.types import Request


@dataclass(frozen=True)
class FieldDetail:
    """One broken rule from a 400 answer: the field's dotted path and what is wrong with it."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class VidqueueError(Exception):
    """Root of every exception the SDK raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class APIError(VidqueueError):
    """The server answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str | None = None,
        details: list[FieldDetail] | None = None,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.details = details or []
        self.body = body
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status_code})"


class ValidationError(APIError):
    """The body or payload broke a rule; ``details`` names each field and its rule."""

    def __str__(self) -> str:
        if not self.details:
            return super().__str__()
        return "; ".join(str(d) for d in self.details) + f" (HTTP {self.status_code})"


class AuthenticationError(APIError):
    """The key is missing, unknown or revoked (401), or does not belong to the organisation (403)."""


class MissingAPIKey(AuthenticationError):
    """No API key was given (no ``api_key``, no ``VIDQUEUE_API_KEY``, no ``GMI_API_KEY``); nothing was sent.

    An ``AuthenticationError`` because the server would answer 401 (``status_code``); it was not asked.
    """

    def __init__(self) -> None:
        message = "No API key: set VIDQUEUE_API_KEY (or GMI_API_KEY), or pass api_key to the client"
        super().__init__(message, status_code=401, code="missing_api_key")

    def __str__(self) -> str:
        return self.message


class NotFoundError(APIError):
    """No such model or request (another organisation's requests look the same)."""


class ConflictError(APIError):
    """The Idempotency-Key was used before with a different body."""


class RateLimitError(APIError):
    """Over a rate or quota limit; ``retry_after`` says how many seconds to wait."""


class ServerError(APIError):
    """The server failed (5xx) or is overloaded (503, with ``retry_after``)."""


class NetworkError(VidqueueError):
    """No answer came back: the connection could not be made or broke."""


class TimeoutError(VidqueueError, builtins.TimeoutError):  # shadows the builtin on purpose, and is one
    """A call got no answer in time, or ``wait`` reached its ceiling (``request`` is the last state seen)."""

    def __init__(self, message: str, *, request: Request | None = None) -> None:
        super().__init__(message)
        self.request = request


class RequestFailed(VidqueueError):
    """The request ended ``failed``: ``code`` is the machine code, ``message`` what went wrong."""

    def __init__(self, request: Request) -> None:
        error = request.outcome.error if request.outcome else None
        self.code = (error.code if error else None) or "failed"
        detail = (error.message if error else None) or request.error or "the request failed"
        super().__init__(f"request {request.request_id} failed ({self.code}): {detail}")
        self.message = detail  # the server's own words; str(exc) is the whole sentence
        self.request = request


class RequestCancelled(VidqueueError):
    """The request ended ``cancelled``."""

    def __init__(self, request: Request) -> None:
        super().__init__(f"request {request.request_id} was cancelled")
        self.request = request


class RequestNotFinished(VidqueueError):
    """The request has no video to download (yet, or ever): ``request.status`` says which."""

    def __init__(self, request: Request) -> None:
        super().__init__(f"request {request.request_id} has no video to download: it is {request.status}")
        self.request = request
