"""One exception tree for the vidqueue service (the SDK has its own, in ``vidqueue.client.errors``).

    ServiceError                  root; the docstring of each class is its default message
    ├── InvalidInput              a body or payload breaks a rule (carries field details)
    │   └── InvalidImage          an input image could not be fetched or failed a check
    ├── Unsupported               the body is not JSON
    ├── TooLarge                  the body is over the size cap
    ├── Unauthenticated           no key, or a key that is unknown or revoked
    ├── Forbidden                 the organisation header does not match the key
    ├── NotFound                  unknown model or request (or another organisation's)
    ├── Conflict                  an illegal state transition or a reused key
    ├── RateLimited               an organisation is over its submits per minute or its active requests
    ├── Unavailable               the queue is full or no engine serves the model
    │   ├── StoreUnavailable      the store cannot be reached
    │   │   └── StoreDamaged      its SQLite file is not a sound database (names the file for the operator)
    │   ├── StorageUnavailable    media storage cannot be written (a read-only folder, a full disk, S3 down)
    │   ├── QueueFull             the queue holds its most queued requests
    │   └── ShuttingDown          the server is draining before it stops
    ├── LeaseLost                 a fenced worker write matched no row
    ├── ConfigError               the configuration is invalid
    └── JobFailed                 an engine gave up on a request (carries the outcome code)
        └── JobCancelled          an engine stopped because the request was cancelled

HTTP status codes are mapped from this tree in one table, in ``vidqueue.api.errors``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One broken rule, named by the field's dotted path (``payload.cfg_scale``)."""

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """The wire shape of one detail."""
        return {"field": self.field, "message": self.message}


class ServiceError(Exception):
    """Something went wrong."""

    code = "internal_error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or "").strip()
        super().__init__(self.message)


class InvalidInput(ServiceError):
    """The request is invalid."""

    code = "invalid_request"

    def __init__(self, message: str | None = None, details: list[FieldError] | None = None) -> None:
        self.details = list(details or [])
        if message is None and self.details:
            first = self.details[0]
            message = f"{first.field} {first.message}"
            if len(self.details) > 1:
                message += f" (and {len(self.details) - 1} more)"
        super().__init__(message)


class InvalidImage(InvalidInput):
    """The input image is not usable."""

    code = "invalid_image"


class Unsupported(ServiceError):
    """The request body must be JSON (Content-Type: application/json)."""

    code = "unsupported_media_type"


class TooLarge(ServiceError):
    """The request body is too large."""

    code = "payload_too_large"


class Unauthenticated(ServiceError):
    """A valid API key is required: send 'Authorization: Bearer <key>'."""

    code = "unauthenticated"


class Forbidden(ServiceError):
    """The X-Organization-ID header does not match the API key's organisation."""

    code = "forbidden"


class NotFound(ServiceError):
    """Not found."""

    code = "not_found"

    def __init__(self, message: str | None = None, details: list[FieldError] | None = None) -> None:
        self.details = list(details or [])  # the field that named what is missing (``model``), when one did
        super().__init__(message)


class Conflict(ServiceError):
    """The request conflicts with the current state."""

    code = "conflict"


class Unavailable(ServiceError):
    """The service cannot take this request now; retry later."""

    code = "unavailable"

    def __init__(self, message: str | None = None, retry_after: int = 5) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class RateLimited(ServiceError):
    """Too many requests; retry after Retry-After seconds."""

    code = "rate_limited"

    def __init__(self, message: str | None = None, retry_after: int = 5, code: str | None = None) -> None:
        self.retry_after = retry_after
        if code is not None:
            self.code = code
        super().__init__(message)


class QueueFull(Unavailable):
    """The queue is full; retry later."""

    code = "queue_full"


class ShuttingDown(Unavailable):
    """The server is shutting down and takes no new requests; retry (another instance may take it)."""

    code = "shutting_down"


class StoreUnavailable(Unavailable):
    """The request store cannot be reached; retry later."""

    code = "store_unavailable"


class StoreDamaged(StoreUnavailable):
    """The request store's database is damaged; retry later."""

    def __init__(self, message: str | None = None, operator_message: str | None = None) -> None:
        # For the log and the command line (it names the file); answers carry only ``message``.
        self.operator_message = operator_message or message or ""
        super().__init__(message)


class StorageUnavailable(Unavailable):
    """The media storage cannot be written; retry later."""

    code = "storage_unavailable"

    def __init__(self, message: str | None = None, retry_after: int = 5, *, full: bool = False) -> None:
        self.full = full  # out of space (ENOSPC, EDQUOT): transient, it comes back when space is freed
        super().__init__(message, retry_after)


class LeaseLost(ServiceError):
    """The worker's lease on the request was lost; its result is dropped."""

    code = "lease_lost"


class ConfigError(ServiceError):
    """The configuration is invalid."""

    code = "config_error"


class JobFailed(ServiceError):
    """The engine could not generate the video."""

    code = "engine_error"

    def __init__(self, message: str | None = None, code: str | None = None) -> None:
        if code is not None:
            self.code = code
        super().__init__(message)


class JobCancelled(JobFailed):
    """The request was cancelled by its owner."""

    code = "cancelled"
