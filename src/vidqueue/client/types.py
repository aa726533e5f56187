"""What the API answers, as pydantic models that accept unknown fields and both outcome shapes.

Every field but the id is optional, so the same types read vidqueue's answers (with its extension fields) and
GMI Cloud's public ones (``model_ids`` only, ``outcome.video_url`` instead of ``media_urls``).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

TERMINAL = frozenset({"success", "failed", "cancelled"})


def _seconds(value: Any) -> Any:
    """Whole Unix seconds from an int, a float, a numeric string or an ISO 8601 time; None stays None."""
    if value is None or isinstance(value, bool):
        return value  # unchanged: None stays None, and a bool is not a time to convert
    if isinstance(value, int | float):
        # Some upstreams answer milliseconds; no request was made before 2001 or after 2286 in seconds.
        return int(value / 1000) if value > 1e11 else int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return _seconds(float(text))
        except ValueError:
            pass
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return value  # let pydantic name the field and the problem
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return int(parsed.timestamp())
    return value


Timestamp = Annotated[int | None, BeforeValidator(_seconds)]


class _Open(BaseModel):
    """A model that keeps fields it does not know (readable as attributes and in ``model_extra``)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, protected_namespaces=())


class Parameter(_Open):
    """One entry of a model's ``parameters`` list."""

    name: str
    display_name: str | None = None
    description: str | None = None
    type: str | None = None
    required: bool = False
    default: Any = None
    options: list[Any] | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    max_length: int | None = None


class PriceInfo(_Open):
    """A model's price: ``price`` in the smallest unit of ``unit``."""

    price: float | None = None
    pricing_type: str | None = None
    unit: str | None = None


class Model(_Open):
    """A model's details; ``model`` is its id (the only field GMI's bare ``model_ids`` list gives)."""

    model: str
    org_id: str | None = None
    brief_description: str | None = None
    detailed_description: str | None = None
    modalities: Any = None
    parameters: list[Parameter] = Field(default_factory=list)
    model_type: str | None = None
    host_type: str | None = None
    external_provider: str | None = None
    tags: list[Any] = Field(default_factory=list)
    created_at: Timestamp = None
    updated_at: Timestamp = None
    qworkers: Any = None
    price_info: PriceInfo | None = None
    payload_schema: dict[str, Any] | None = None
    engine: str | None = None

    def parameter(self, name: str) -> Parameter | None:
        """The parameter called ``name``, if the model has one."""
        return next((p for p in self.parameters if p.name == name), None)


class MediaUrl(_Open):
    """One result file: its id within the request and a URL that works without a key (and expires)."""

    id: str | None = None
    url: str


class VideoInfo(_Open):
    """What vidqueue measured of a result video (an extension; absent in GMI answers)."""

    duration: float | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    frames: int | None = None
    codec: str | None = None
    bytes: int | None = None


class OutcomeError(_Open):
    """Why a request failed or was cancelled."""

    code: str | None = None
    message: str | None = None


def _error_object(value: Any) -> Any:
    # Some answers put a bare string where the error object goes.
    return {"message": value} if isinstance(value, str) else value


class Outcome(_Open):
    """A finished request's result: ``media_urls`` (current shape) or ``video_url`` (older), or an error."""

    media_urls: list[MediaUrl] = Field(default_factory=list)
    video_url: str | None = None
    thumbnail_image_url: str | None = None
    video: VideoInfo | None = None
    engine: str | None = None
    error: Annotated[OutcomeError | None, BeforeValidator(_error_object)] = None

    @property
    def urls(self) -> list[str]:
        """Every result URL, whichever shape the answer used."""
        urls = [m.url for m in self.media_urls if m.url]
        if not urls and self.video_url:
            urls = [self.video_url]
        return urls


def _error_text(value: Any) -> Any:
    # Some answers put an error object where vidqueue puts its one-line message.
    if isinstance(value, dict):
        return value.get("message") or value.get("code") or None
    return value


def _outcome_object(value: Any) -> Any:
    # An empty object or an empty string means "no outcome yet".
    return None if value in ({}, "") else value


class Request(_Open):
    """A generation request, as every request endpoint answers it."""

    request_id: str
    org_id: str | None = None
    model: str | None = None
    status: str = "queued"
    is_public: bool | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    outcome: Annotated[Outcome | None, BeforeValidator(_outcome_object)] = None
    created_at: Timestamp = None
    updated_at: Timestamp = None
    queued_at: Timestamp = None
    processing_at: Timestamp = None
    finished_at: Timestamp = None
    progress: float | None = None
    queue_position: int | None = None
    qworker_id: str | None = None
    attempts: int | None = None
    error: Annotated[str | None, BeforeValidator(_error_text)] = None

    @property
    def done(self) -> bool:
        """True once the request is ``success``, ``failed`` or ``cancelled`` (it never changes again)."""
        return self.status in TERMINAL

    @property
    def video_url(self) -> str | None:
        """The first result URL, or None before success."""
        urls = self.outcome.urls if self.outcome else []
        return urls[0] if urls else None


class Delivery(_Open):
    """One webhook delivery: a status change of a request, POSTed to its callback_url (a vidqueue extension)."""

    delivery_id: str
    event: str  # the status the request changed to
    url: str
    state: str  # pending, delivered or failed
    attempts: int = 0
    created_at: Timestamp = None
    next_attempt_at: Timestamp = None
    last_attempt_at: Timestamp = None
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_at: Timestamp = None
