"""The /v1/videos translation: a create call into a ``Submission``, a request into a video object, and the shapes
the OpenAPI document shows.

``seconds`` stands for the model's ``duration``, ``size`` ("WxH") for its ``aspect_ratio`` (the frame size the
model makes at that ratio), ``input_reference`` for its input image (an uploaded file, an image URL or data URL, or
``{"image_url": ...}``). Any other of the model's parameters rides along under its own name, and so do GMI's
``priority`` and ``callback_url``. A status is shown the videos API's way: processing is ``in_progress``, success
``completed``, and a cancelled request is ``failed`` with the error code ``cancelled``.
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vidqueue.api.schemas import check_text
from vidqueue.api.videos.errors import renamed
from vidqueue.catalog import ModelSpec, Param
from vidqueue.errors import FieldError, InvalidInput
from vidqueue.store import RequestRecord, Status

STATUS: dict[Status, str] = {
    Status.QUEUED: "queued",
    Status.PROCESSING: "in_progress",
    Status.SUCCESS: "completed",
    Status.FAILED: "failed",
    Status.CANCELLED: "failed",  # with error.code "cancelled"
}

# The frame size of each aspect ratio for a model whose catalog entry names none (the Kling models): the 720p frame,
# which the emulator renders too. A local model's own sizes come from its definition.
NOMINAL_SIZES: dict[str, tuple[int, int]] = {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (720, 720)}

# The dialect's own fields, and the model parameter each stands for ("" for the model's image parameter).
STANDS_FOR = {"seconds": "duration", "size": "aspect_ratio", "input_reference": ""}
EXTENSIONS = ("priority", "callback_url")  # GMI's submit extensions, taken here too
MAX_NAMED_UNKNOWN = 20
PRIORITY_RANGE = (-100, 100)
CALLBACK_MAX = 2048

_INT = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def _wxh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _param(spec: ModelSpec, name: str) -> Param | None:
    return next((p for p in spec.params if p.name == name), None)


def sizes(spec: ModelSpec) -> dict[str, str | None]:
    """The frame sizes a model makes ("WxH"), each with the aspect_ratio that asks for it (None: it takes none)."""
    frames = spec.local.sizes if spec.local is not None else NOMINAL_SIZES
    ratio = _param(spec, "aspect_ratio")
    if ratio is None or not ratio.options:
        # One shape only (from text; an input image gives the video its own shape).
        return {_wxh(frames.get("16:9") or next(iter(frames.values()))): None}
    return {_wxh(frames[r]): str(r) for r in ratio.options if r in frames}


def durations(spec: ModelSpec) -> list[str]:
    """The lengths a model makes, in seconds, as the ``seconds`` field spells them."""
    duration = _param(spec, "duration")
    if duration is None or not duration.options:
        return []
    return [str(o) for o in duration.options]


def _quoted(values: list[str]) -> str:
    return ", ".join(json.dumps(v) for v in values)


@dataclass(frozen=True)
class CreateBody:
    """A create call's fields as sent: JSON values, or form strings (``a[b]`` keys made nested objects)."""

    fields: dict[str, Any]
    form: bool = False  # the values are form strings, to be read as the parameters' types
    upload: bytes | None = None  # input_reference, sent as a file
    size: int = 0  # bytes of the body


@dataclass(frozen=True)
class Translated:
    """A create call in the queue's terms, and how to name its fields back in errors."""

    model: str
    payload: dict[str, Any]
    priority: int = 0
    callback_url: str | None = None
    names: dict[str, str] = field(default_factory=dict)  # "payload.duration" → "seconds", …


def check_fields(fields: dict[str, Any]) -> None:
    """Raise InvalidInput when a key or string of the fields holds a lone surrogate (JSON can spell one; no answer
    could echo it)."""
    try:
        check_text(fields)
    except InvalidInput as exc:
        raise renamed(exc, {}) from None


def model_of(fields: dict[str, Any]) -> str:
    """The ``model`` field, checked: InvalidInput unless it is a non-empty string."""
    model = fields.get("model")
    if model is None:
        raise InvalidInput(details=[FieldError("model", "is required (GET /v1/models lists the models)")])
    if not isinstance(model, str) or not 1 <= len(model) <= 128:
        raise InvalidInput(details=[FieldError("model", "must be a model id: a string of 1 to 128 characters")])
    return model


def translate(spec: ModelSpec, body: CreateBody) -> Translated:
    """A create call (its text checked by ``check_fields``) as a submit of ``spec``'s payload; InvalidInput, in the
    dialect's names, for what cannot be."""
    fields = body.fields
    image_param = spec.image_param()
    stands_for = {k: (v or image_param or "") for k, v in STANDS_FOR.items()}
    params = {p.name: p for p in spec.params}
    aliases = {p.alias[0]: p for p in spec.params if p.alias is not None}
    errors: list[FieldError] = []

    known = {"model", *STANDS_FOR, *EXTENSIONS, *params, *aliases}
    unknown = [key for key in fields if key not in known]
    if unknown:
        allowed = ", ".join(["model", "prompt", "seconds", "size"] + (["input_reference"] if image_param else []))
        others = ", ".join(p for p in params if p not in ("prompt", *stands_for.values()))
        rule = f"is not a field of /v1/videos for model {spec.id} (allowed: {allowed}; and its parameters: {others})"
        errors += [FieldError(str(key), rule) for key in islice(unknown, MAX_NAMED_UNKNOWN)]
        if len(unknown) > MAX_NAMED_UNKNOWN:
            errors.append(FieldError("body", f"has {len(unknown) - MAX_NAMED_UNKNOWN} more fields that are not known"))
    for ours, theirs in stands_for.items():
        if theirs and ours in fields and theirs in fields:
            errors.append(FieldError(theirs, f"names what {ours} does; give one of them"))

    payload: dict[str, Any] = {}
    names: dict[str, str] = {}
    for key, value in fields.items():
        if key in params:
            payload[key] = _typed(params[key], value) if body.form else value
        elif key in aliases and isinstance(value, dict):
            param = aliases[key]
            assert param.alias is not None
            payload[key] = {
                sub: (_typed(param, v) if body.form and sub == param.alias[1] else v) for sub, v in value.items()
            }
        elif key in aliases:
            payload[key] = value
    if "seconds" in fields:
        names["payload.duration"] = "seconds"
        payload["duration"] = _duration(spec, fields["seconds"], errors)
    if "size" in fields:
        names["payload.aspect_ratio"] = "size"
        ratio = _ratio(spec, fields["size"], errors)
        if ratio is not None:
            payload["aspect_ratio"] = ratio
    if "input_reference" in fields or body.upload is not None:
        if image_param is None:
            errors.append(FieldError("input_reference", f"cannot be used: model {spec.id} takes no input image"))
        else:
            names[f"payload.{image_param}"] = "input_reference"
            payload[image_param] = _image(body.upload, fields.get("input_reference"), errors)
    priority = _priority(fields.get("priority", 0), body.form, errors)
    callback_url = _callback_url(fields.get("callback_url"), errors)
    if errors:
        raise InvalidInput(details=errors)
    return Translated(spec.id, payload, priority, callback_url, names)


def _typed(param: Param, value: Any) -> Any:
    """A form string read as the parameter's type; one that does not read stays a string, and the model's rules name
    it."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if param.type == "integer" and _INT.fullmatch(text):
        return int(text)
    if param.type == "number" and _DECIMAL.fullmatch(text):
        number = int(text) if _INT.fullmatch(text) else float(text)
        return number if math.isfinite(number) else value
    if param.type == "boolean" and text.lower() in ("true", "false"):
        return text.lower() == "true"
    return value


def _duration(spec: ModelSpec, value: Any, errors: list[FieldError]) -> Any:
    options = durations(spec)
    if not options:
        errors.append(FieldError("seconds", f"cannot be set: model {spec.id} makes videos of one length"))
        return value
    text = value
    if isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer():
        text = str(int(value))
    if isinstance(text, str) and text.strip() in options:
        return text.strip()
    errors.append(FieldError("seconds", f"must be one of: {_quoted(options)} (the lengths model {spec.id} makes)"))
    return value


def _ratio(spec: ModelSpec, value: Any, errors: list[FieldError]) -> str | None:
    table = sizes(spec)
    text = value.strip().lower() if isinstance(value, str) else None
    if text is not None and text in table:
        return table[text]
    errors.append(FieldError("size", f"must be one of: {_quoted(list(table))} (the sizes model {spec.id} makes)"))
    return None


def _image(upload: bytes | None, value: Any, errors: list[FieldError]) -> str:
    if upload is not None:
        if not upload:
            errors.append(FieldError("input_reference", "is an empty file"))
        # Handed to image intake as raw base64, as a GMI payload would carry it: the same checks, the same storage.
        return base64.b64encode(upload).decode("ascii")
    if isinstance(value, dict):
        if "file_id" in value:
            errors.append(
                FieldError(
                    "input_reference.file_id",
                    "is not supported: this server keeps no files; upload the image or give image_url",
                )
            )
            return ""
        value = value.get("image_url")
        if not isinstance(value, str):
            errors.append(FieldError("input_reference.image_url", "must be an image URL or a data URL"))
            return ""
    if not isinstance(value, str):
        rule = 'must be a JPEG or PNG file, an image URL or data URL, or {"image_url": ...}'
        errors.append(FieldError("input_reference", rule))
        return ""
    return value


def _priority(value: Any, form: bool, errors: list[FieldError]) -> int:
    if form and isinstance(value, str) and _INT.fullmatch(value.strip()):
        value = int(value.strip())
    low, high = PRIORITY_RANGE
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return value
    errors.append(FieldError("priority", f"must be an integer between {low} and {high}"))
    return 0


def _callback_url(value: Any, errors: list[FieldError]) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and 1 <= len(value) <= CALLBACK_MAX:
        return value
    errors.append(FieldError("callback_url", f"must be a URL of 1 to {CALLBACK_MAX} characters"))
    return None


# -- answers ---------------------------------------------------------------------------------------------------


def _size_of(record: RequestRecord, spec: ModelSpec | None) -> str:
    video = (record.outcome or {}).get("video") or {}
    if isinstance(video.get("width"), int) and isinstance(video.get("height"), int):
        return f"{video['width']}x{video['height']}"  # what was made
    ratio = record.payload.get("aspect_ratio")
    if spec is None:
        return _wxh(NOMINAL_SIZES.get(str(ratio), NOMINAL_SIZES["16:9"]))
    table = sizes(spec)
    return next((size for size, r in table.items() if r == ratio), next(iter(table)))


def _seconds_of(record: RequestRecord, spec: ModelSpec | None) -> str:
    if "duration" in record.payload:
        return str(record.payload["duration"])
    video = (record.outcome or {}).get("video") or {}
    if isinstance(video.get("duration"), int | float):
        return str(round(video["duration"]))
    options = durations(spec) if spec is not None else []
    return options[0] if options else ""


def _error_of(record: RequestRecord) -> dict[str, str] | None:
    if record.status not in (Status.FAILED, Status.CANCELLED):
        return None
    error = (record.outcome or {}).get("error") or {}
    code = error.get("code") or record.error_code or ("cancelled" if record.status is Status.CANCELLED else "failed")
    return {"code": str(code), "message": str(error.get("message") or record.error or "")}


def present_video(record: RequestRecord, spec: ModelSpec | None, retention_s: float) -> dict[str, Any]:
    """A request as a video object."""
    finished = record.finished_at if record.status.is_terminal() else None
    prompt = record.payload.get("prompt")
    return {
        "id": record.request_id,
        "object": "video",
        "model": record.model,
        "status": STATUS[record.status],
        "progress": record.progress,
        "created_at": int(record.created_at),
        "completed_at": None if finished is None else int(finished),
        # Retention deletes a finished request and its media this long after it ended.
        "expires_at": None if finished is None else int(finished + retention_s),
        "prompt": prompt if isinstance(prompt, str) else None,
        "seconds": _seconds_of(record, spec),
        "size": _size_of(record, spec),
        "error": _error_of(record),
        "remixed_from_video_id": None,
        "queue_position": record.queue_position,
    }


def present_model(spec: ModelSpec) -> dict[str, Any]:
    """A model as /v1/models lists it."""
    return {"id": spec.id, "object": "model", "created": spec.created_at, "owned_by": spec.org_id}


# -- the OpenAPI document's shapes ---------------------------------------------------------------------------


class VideoError(BaseModel):
    """Why a video failed (code ``cancelled`` when it was cancelled)."""

    code: str
    message: str


class VideoOut(BaseModel):
    """A video: one request of the queue, the videos API's way."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(description="The request id, the same on the GMI paths.")
    object: Literal["video"]
    model: str
    status: Literal["queued", "in_progress", "completed", "failed"]
    progress: int = Field(ge=0, le=100)
    created_at: int
    completed_at: int | None = Field(description="When it finished (completed or failed).")
    expires_at: int | None = Field(description="When retention deletes it and its media.")
    prompt: str | None
    seconds: str
    size: str = Field(description="WxH: the frame size made, or asked for until it is made.")
    error: VideoError | None
    remixed_from_video_id: str | None = None
    queue_position: int | None = Field(None, description="Extension: the place in the queue while queued.")


class VideoList(BaseModel):
    """GET /v1/videos: a page."""

    object: Literal["list"]
    data: list[VideoOut]
    has_more: bool
    first_id: str | None
    last_id: str | None


class VideoDeleted(BaseModel):
    """DELETE /v1/videos/{video_id}."""

    id: str
    object: Literal["video.deleted"]
    deleted: bool


class ModelOut(BaseModel):
    """One model."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelListOut(BaseModel):
    """GET /v1/models."""

    object: Literal["list"]
    data: list[ModelOut]


class OpenAIErrorDetail(BaseModel):
    """What went wrong."""

    model_config = ConfigDict(extra="allow")

    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorOut(BaseModel):
    """The body of every non-2xx answer on the /v1 paths."""

    error: OpenAIErrorDetail


_CREATE_PROPERTIES: dict[str, Any] = {
    "model": {"type": "string", "description": "A model id from GET /v1/models."},
    "prompt": {"type": "string", "description": "What the video shows."},
    "seconds": {"type": "string", "description": "The length: one the model makes (its `duration` options)."},
    "size": {"type": "string", "description": "WxH: one of the frame sizes the model makes (by aspect ratio)."},
    "priority": {"type": "integer", "description": "Extension: higher runs first within an organisation."},
    "callback_url": {"type": "string", "description": "Extension: every status change is POSTed here (webhooks)."},
}
_REFERENCE = "An input image (JPEG or PNG), for models that take one"

CREATE_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["model", "prompt"],
                "properties": {
                    **_CREATE_PROPERTIES,
                    "input_reference": {"type": "string", "format": "binary", "description": _REFERENCE + "."},
                },
                "additionalProperties": {"type": "string"},
                "description": "The model's other parameters (negative_prompt, cfg_scale, seed, …) may ride along.",
            }
        },
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["model", "prompt"],
                "properties": {
                    **_CREATE_PROPERTIES,
                    "input_reference": {
                        "description": _REFERENCE + ": an image URL or data URL, or {image_url}.",
                        "anyOf": [
                            {"type": "string"},
                            {"type": "object", "properties": {"image_url": {"type": "string"}}},
                        ],
                    },
                },
                "additionalProperties": True,
                "description": "The model's other parameters (negative_prompt, cfg_scale, seed, …) may ride along.",
            }
        },
    },
}
