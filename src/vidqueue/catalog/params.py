"""One model parameter: its type and limits, which yield its check, its listing and its JSON Schema."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from vidqueue.errors import FieldError

ParamType = Literal["string", "number", "integer", "boolean"]

# The image rule is one regular expression so that validation and the JSON Schema `pattern` are the same text.
# It checks only the shape: an http(s) URL, a data:image URI, or raw base64 that starts with 16 base64
# characters (a real JPEG or PNG is far longer) and holds nothing but base64, line breaks and up to two `=`.
# The syntax is the subset ECMA-262 and Python's `re` share, and it stays linear on a multi-megabyte string.
_WS = r"[\t\n\r ]"
_BASE64 = rf"{_WS}*[A-Za-z0-9+/]{{16}}[A-Za-z0-9+/\t\n\r ]*(?:={_WS}*){{0,2}}"
IMAGE_PATTERN = (
    rf"^(?:https?://[^\s/?#]+\S*"
    rf"|data:image/[A-Za-z0-9.+-]+(?:;[A-Za-z0-9.+-]+=[^;,]*)*;base64,{_BASE64}"
    rf"|{_BASE64})$"
)
IMAGE_MESSAGE = "must be an http(s) URL, a data:image/...;base64, URI, or raw base64 image data"
# Base64 (raw or in a data: URI of any type) that the shape refuses is data, just not an image: say that instead.
NOT_AN_IMAGE_MESSAGE = "is not a JPEG or PNG image"
_BASE64_LIKE = re.compile(r"(?:data:[^,]*;base64,)?[A-Za-z0-9+/_\-\t\n\r ]+={0,2}[\t\n\r ]*", re.ASCII)

_TYPE_WORDS = {"string": "a string", "number": "a number", "integer": "an integer", "boolean": "a boolean"}
_CANONICAL_INT = re.compile(r"-?[1-9][0-9]*|0")


@dataclass(frozen=True)
class Param:
    """One parameter of a model's payload."""

    name: str
    display_name: str
    description: str
    type: ParamType
    required: bool = False
    default: Any = None  # None means no default: an absent optional parameter stays absent
    options: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None  # a grid from `min` to `max`; needs both
    min_length: int | None = None
    max_length: int | None = None
    is_image: bool = False  # a string holding an image (URL or base64); implies the image shape pattern
    pattern: str | None = None  # searched, as JSON Schema's `pattern` is
    pattern_message: str | None = None
    accept_numbers_for_options: bool = False  # string options like "5" also accept the JSON number 5
    alias: tuple[str, str] | None = None  # also read from payload[alias[0]][alias[1]] (e.g. cfg.scale)

    def __post_init__(self) -> None:
        if self.step is not None and (self.min is None or self.max is None or self.step <= 0):
            raise ValueError(f"parameter {self.name}: a step needs min, max and a positive step")
        if self.alias is not None and self.required:
            raise ValueError(f"parameter {self.name}: a required parameter cannot have an alias")
        if self.default is not None:
            _, errors = self.check(self.default, self.name)
            if errors:
                raise ValueError(f"parameter {self.name}: default {self.default!r} {errors[0].message}")

    def check(self, value: Any, field: str) -> tuple[Any, list[FieldError]]:
        """The normalised value and every rule it breaks, each reported on `field`."""
        if self.type == "string":
            return self._check_string(value, field)
        if self.type == "boolean":
            if isinstance(value, bool):
                return value, []
            return None, [FieldError(field, "must be a boolean")]
        return self._check_number(value, field)

    def describe(self) -> dict[str, Any]:
        """The GMI-style `parameters` entry: the fixed keys, then only the limits that apply."""
        entry: dict[str, Any] = {
            "name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "type": self.type,
            "required": self.required,
        }
        if self.default is not None:
            entry["default"] = self.default
        if self.options is not None:
            entry["options"] = list(self.options)
        for key in ("min", "max", "step", "max_length"):
            if getattr(self, key) is not None:
                entry[key] = getattr(self, key)
        return entry

    def schema(self, annotated: bool = True) -> dict[str, Any]:
        """The JSON Schema (draft 2020-12) of the value; `annotated` adds title, description and default."""
        out: dict[str, Any] = {}
        if annotated:
            out["title"] = self.display_name
            out["description"] = self.description
            if self.default is not None:
                out["default"] = self.default
        if self.type == "string" and self.options is not None and self._numeric_options():
            out["anyOf"] = [
                {"type": "string", "enum": list(self.options)},
                {"type": "number", "enum": list(self._numeric_options())},
            ]
            return out
        out["type"] = self.type
        if self.options is not None:
            out["enum"] = list(self.options)
            return out
        if self.min_length is not None:
            out["minLength"] = self.min_length
        if self.max_length is not None:
            out["maxLength"] = self.max_length
        pattern, _ = self._pattern()
        if pattern is not None:
            out["pattern"] = pattern
        if self.min is not None:
            out["minimum"] = self.min
        if self.max is not None:
            out["maximum"] = self.max
        if self.step is not None:
            # `multipleOf: 0.1` fails 0.3 in binary floating point, so the grid is spelled out as ranges.
            out["anyOf"] = [{"minimum": low, "maximum": high} for _, low, high in self._grid()]
        return out

    def _check_string(self, value: Any, field: str) -> tuple[Any, list[FieldError]]:
        if self.options is not None:
            if isinstance(value, str) and value in self.options:
                return value, []
            if _is_number(value):
                for number in self._numeric_options():
                    if value == number:
                        return str(number), []
            return None, [FieldError(field, _one_of(self.options))]
        if not isinstance(value, str):
            return None, [FieldError(field, "must be a string")]
        if self.min_length is not None and len(value) < self.min_length:
            unit = "character" if self.min_length == 1 else "characters"
            # Too short says it all; an empty prompt need not also be told it is blank.
            return None, [FieldError(field, f"must be at least {self.min_length} {unit}")]
        errors = []
        if self.max_length is not None and len(value) > self.max_length:
            errors.append(FieldError(field, f"must be at most {self.max_length} characters"))
        pattern, message = self._pattern()
        if pattern is not None and re.search(pattern, value) is None:
            if self.is_image and self.pattern is None and _BASE64_LIKE.fullmatch(value.strip()):
                message = NOT_AN_IMAGE_MESSAGE
            errors.append(FieldError(field, message or f"must match {pattern}"))
        return (None if errors else value), errors

    def _check_number(self, value: Any, field: str) -> tuple[Any, list[FieldError]]:
        if not _is_number(value) or (isinstance(value, float) and not math.isfinite(value)):
            return None, [FieldError(field, f"must be {_TYPE_WORDS[self.type]}")]
        if self.type == "integer":
            if isinstance(value, float) and not value.is_integer():
                return None, [FieldError(field, "must be an integer")]
            value = int(value)
        if self.options is not None:
            if value in self.options:
                return value, []
            return None, [FieldError(field, _one_of(self.options))]
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            return None, [FieldError(field, self._range_message())]
        if self.step is None:
            return value, []
        for point, low, high in self._grid():
            if low <= value <= high:
                return (int(point) if self.type == "integer" else point), []
        base = "" if not self.min else f"{_fmt(self.min)} plus "
        return None, [FieldError(field, f"must be {base}a multiple of {_fmt(self.step)}")]

    def _pattern(self) -> tuple[str | None, str | None]:
        if self.pattern is None and self.is_image:
            return IMAGE_PATTERN, IMAGE_MESSAGE
        return self.pattern, self.pattern_message

    def _numeric_options(self) -> tuple[int, ...]:
        """The string options that are plain integers, as numbers, when numbers are accepted for them."""
        if not self.accept_numbers_for_options or self.options is None:
            return ()
        return tuple(int(o) for o in self.options if isinstance(o, str) and _CANONICAL_INT.fullmatch(o))

    def _grid(self) -> list[tuple[float, float, float]]:
        """Each allowed point of the step grid with the float tolerance around it: (point, low, high)."""
        assert self.min is not None and self.max is not None and self.step is not None
        places = max(0, -int(Decimal(str(self.step)).as_tuple().exponent))
        # A millionth of a step absorbs float error (0.1 * 3 == 0.30000000000000004) yet rejects 0.35.
        fine = places + 6
        tolerance = 10.0**-fine
        count = math.floor((self.max - self.min) / self.step + 1e-9)
        points = [round(self.min + k * self.step, places) for k in range(count + 1)]
        return [(p, round(p - tolerance, fine), round(p + tolerance, fine)) for p in points]

    def _range_message(self) -> str:
        if self.min is not None and self.max is not None:
            return f"must be between {_fmt(self.min)} and {_fmt(self.max)}"
        if self.min is not None:
            return f"must be at least {_fmt(self.min)}"
        return f"must be at most {_fmt(self.max)}"


def _is_number(value: Any) -> bool:
    # bool is an int in Python but never a number in JSON.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _one_of(options: tuple[Any, ...]) -> str:
    return "must be one of: " + ", ".join(json.dumps(o) for o in options)


def _fmt(number: float | None) -> str:
    if number is None:
        return ""
    return str(int(number)) if float(number).is_integer() else repr(float(number))
