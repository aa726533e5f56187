"""The wire shapes, as pydantic models: they drive validation of bodies and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SkipValidation, field_validator, model_validator
from pydantic_core import PydanticCustomError

from vidqueue.errors import FieldError, InvalidInput

# Unknown top-level fields of a submit reported one by one; past this many, one error counts them all.
MAX_UNKNOWN_FIELDS = 20

StatusName = Literal["queued", "processing", "success", "failed", "cancelled"]


class SubmitBody(BaseModel):
    """POST /requests: the model and its parameters."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=128, description="A model id from GET /models (case-sensitive).")
    # Not copied key by key as dict[str, Any] would be (a quarter second for a million keys, on the event loop):
    # _payload_is_object checks it is an object, and the model's rules check the rest (catalog, off the loop).
    payload: SkipValidation[dict[str, Any]] = Field(description="The model's parameters; see the model's `parameters`.")
    priority: int = Field(0, ge=-100, le=100, description="Extension: higher runs first within an organisation.")
    callback_url: str | None = Field(
        None,
        min_length=1,
        max_length=2048,
        description="Extension: every status change is POSTed here, signed the Standard Webhooks way "
        "(webhook-id, webhook-timestamp, webhook-signature) with the organisation's secret.",
    )

    @model_validator(mode="before")
    @classmethod
    def _few_unknown_fields(cls, data: Any) -> Any:
        # extra="forbid" builds one error per unknown field, on the event loop: a 16 MiB body of a million of
        # them would hold every other call for seconds. More than a few is refused at once, in one error.
        if isinstance(data, dict) and len(data) > len(cls.model_fields) + MAX_UNKNOWN_FIELDS:
            # Counted and named without a pass over every key: this runs on the event loop.
            count = len(data) - sum(1 for name in cls.model_fields if name in data)
            first = islice((str(k) for k in data if k not in cls.model_fields), 5)
            raise PydanticCustomError(
                "too_many_fields",
                "has {count} fields that are not allowed (allowed: {allowed}); the first: {first}",
                {"count": count, "allowed": ", ".join(cls.model_fields), "first": ", ".join(first)},
            )
        return data

    @field_validator("payload")
    @classmethod
    def _payload_is_object(cls, payload: Any) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise PydanticCustomError("dict_type", "must be a JSON object")
        return payload


def check_text(payload: dict[str, Any]) -> None:
    """Raise InvalidInput when a key or string of the payload holds a lone surrogate.

    JSON may spell one ("\\ud800"); no UTF-8 can hold it, so the store could not save it and an answer could not echo
    it. Pydantic checks the typed fields of a submit; this walks the free-form payload, so the route runs it (in a
    thread when the body is large) rather than the model (on the event loop).
    """
    path = _lone_surrogate_path(payload)
    if path is not None:
        raise InvalidInput(details=[FieldError(path, "is not valid Unicode text (it holds a lone surrogate)")])


def _not_utf8(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key.encode('utf-8', 'backslashreplace').decode('utf-8')}"


def _lone_surrogate_path(payload: dict[str, Any]) -> str | None:
    """Where in ``payload`` a key or a string holds a lone surrogate (e.g. ``payload.prompt``), or None."""
    # Iterative with one iterator per level: memory follows the depth, never the size of a big list.
    stack: list[tuple[str, Iterator[tuple[Any, Any]]]] = [("payload", iter(payload.items()))]
    while stack:
        path, items = stack[-1]
        for key, value in items:
            if isinstance(key, str) and _not_utf8(key):
                return _join(path, key)
            if isinstance(value, str):
                if _not_utf8(value):
                    return _join(path, key)
            elif isinstance(value, dict):
                stack.append((_join(path, key), iter(value.items())))
                break
            elif isinstance(value, list):
                stack.append((_join(path, key), enumerate(value)))
                break
        else:
            stack.pop()
    return None


class MediaUrl(BaseModel):
    """One result file."""

    id: str
    url: str


class ErrorInfo(BaseModel):
    """Why a request failed or was cancelled."""

    code: str
    message: str


class SuccessOutcome(BaseModel):
    """The result of a successful request."""

    model_config = ConfigDict(extra="allow")

    media_urls: list[MediaUrl]
    video_url: str | None = None
    thumbnail_image_url: str | None = None
    video: dict[str, Any] | None = None
    engine: str | None = None


class FailureOutcome(BaseModel):
    """Why a request failed or was cancelled."""

    error: ErrorInfo


class RequestOut(BaseModel):
    """A request, as every request endpoint answers it."""

    request_id: str
    org_id: str
    model: str
    status: StatusName
    is_public: bool = False
    payload: dict[str, Any]
    outcome: SuccessOutcome | FailureOutcome | None
    created_at: int
    updated_at: int
    queued_at: int
    processing_at: int | None
    finished_at: int | None
    progress: int = Field(ge=0, le=100)
    queue_position: int | None
    qworker_id: str | None
    attempts: int
    error: str | None


class RequestList(BaseModel):
    """GET /requests: a page, newest first."""

    requests: list[RequestOut]
    total: int
    next_cursor: str | None


class Parameter(BaseModel):
    """One entry of a model's `parameters`."""

    model_config = ConfigDict(extra="allow")

    name: str
    display_name: str
    description: str
    type: Literal["string", "number", "integer", "boolean"]
    required: bool


class PriceInfo(BaseModel):
    """A model's price, in the smallest unit of `unit`."""

    model_config = ConfigDict(extra="allow")

    price: int | None
    pricing_type: str | None = None
    unit: str | None = None


class ModelDetails(BaseModel):
    """GET /models/{model_id}."""

    model_config = ConfigDict(extra="allow")

    model: str
    org_id: str
    brief_description: str
    detailed_description: str
    modalities: dict[str, list[str]]
    parameters: list[Parameter]
    model_type: str
    host_type: Literal["internal", "external"]
    external_provider: str | None
    tags: list[str]
    created_at: int
    updated_at: int
    qworkers: int
    price_info: PriceInfo | None
    payload_schema: dict[str, Any]
    engine: str


class ModelList(BaseModel):
    """GET /models."""

    model_ids: list[str]
    models: list[ModelDetails]


class ErrorOut(BaseModel):
    """The body of every non-2xx answer."""

    error: str
    code: str
    details: list[dict[str, str]] = []


class DeliveryOut(BaseModel):
    """One webhook delivery: a status change of the request, sent or still to be sent to its callback_url."""

    delivery_id: str = Field(description="The webhook-id header; the same on every retry of this delivery.")
    event: StatusName = Field(description="The status the request changed to.")
    url: str
    state: Literal["pending", "delivered", "failed"] = Field(
        description="pending (to be sent or retried), delivered (a 2xx answer), failed (given up)."
    )
    attempts: int
    created_at: int
    next_attempt_at: int | None
    last_attempt_at: int | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: int | None


class DeliveryList(BaseModel):
    """GET /requests/{request_id}/deliveries."""

    request_id: str
    deliveries: list[DeliveryOut]
