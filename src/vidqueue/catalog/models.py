"""A model's definition: its static details and the payload rules that its parameters define."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from vidqueue.catalog.params import Param
from vidqueue.errors import FieldError, InvalidInput

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_Given = list[tuple[str, Any]]  # the values given for one parameter, each with its dotted path

Family = Literal[
    "wan2.1-t2v",
    "wan2.1-i2v",
    "wan2.2-ti2v",
    "wan2.2-t2v",
    "wan2.2-i2v",
    "ltx-video",
    "hunyuanvideo-1.5-t2v",
    "hunyuanvideo-1.5-i2v",
]
FAMILIES: tuple[Family, ...] = get_args(Family)
UPSTREAM_ENGINES = ("kling", "gmi")


# Unknown payload keys named one by one in a 400's details; the rest are counted in one more detail.
MAX_NAMED_UNKNOWN = 20


@dataclass(frozen=True)
class LocalModel:
    """An open-weight model this server can run itself: its family, weights and native settings."""

    family: Family
    weights: str  # a hub id or a local folder
    steps: int
    fps: int
    sizes: dict[str, tuple[int, int]] = field(hash=False)  # aspect ratio → (width, height)
    max_steps: int | None = None  # the largest num_inference_steps a request may ask for (None: the family's)
    guidance: float | None = None  # a fixed guidance scale (a distilled model): cfg_scale is then ignored


@dataclass(frozen=True)
class ModelSpec:
    """One model: what GET /models/{id} shows and what a payload for it must hold."""

    id: str  # exact and case-sensitive
    brief_description: str
    detailed_description: str  # markdown
    params: tuple[Param, ...]
    modalities: dict[str, list[str]] = field(hash=False)
    model_type: str
    tags: tuple[str, ...]
    external_provider: str | None
    price_info: dict[str, Any] | None = field(hash=False)  # {price, pricing_type, unit} or None
    created_at: int
    updated_at: int
    org_id: str = "gmi"
    local: LocalModel | None = None  # set for models the diffusers engine can run

    @property
    def engines(self) -> tuple[str, ...]:
        """The engine kinds that can serve this model: a local one runs on diffusers, a Kling one upstream."""
        if self.local is not None:
            return ("emulator", "diffusers")
        return ("emulator", *UPSTREAM_ENGINES) if self.external_provider == "kling" else ("emulator",)

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"model {self.id}: duplicate parameter names")
        clashes = set(self._aliases()) & set(names)
        if clashes:
            raise ValueError(f"model {self.id}: alias {sorted(clashes)} is also a parameter name")

    def validate(self, payload: Any) -> dict[str, Any]:
        """The accepted payload with defaults filled in; raises InvalidInput listing every broken rule."""
        if not isinstance(payload, dict):
            raise InvalidInput(details=[FieldError("payload", "must be a JSON object")])
        errors: list[FieldError] = []
        # Details come in parameter order, then nested-spelling problems, then unknown keys.
        late: list[FieldError] = []
        aliased, unnamed = self._read_aliases(payload, late)
        known = {p.name for p in self.params} | set(self._aliases())
        allowed = ", ".join(p.name for p in self.params)
        message = f"is not a parameter of model {self.id} (allowed: {allowed})"
        more = f"more keys that are not parameters of model {self.id}"
        unnamed += _name_unknown([key for key in payload if key not in known], "payload", message, more, late)

        accepted: dict[str, Any] = {}
        for param in self.params:
            given = [(f"payload.{param.name}", payload[param.name])] if param.name in payload else []
            given += aliased.get(param.name, [])
            if not given:
                if param.required:
                    errors.append(FieldError(f"payload.{param.name}", "is required"))
                elif param.default is not None:
                    accepted[param.name] = param.default
                continue
            values = []
            for path, raw in given:
                value, broken = param.check(raw, path)
                errors += broken
                if not broken:
                    values.append((path, value))
            if len(values) < len(given):
                continue
            if any(value != values[0][1] for _, value in values[1:]):
                errors.append(FieldError(values[-1][0], f"must equal {values[0][0]} when both are given"))
                continue
            accepted[param.name] = values[0][1]

        errors += late
        if errors:
            first = errors[0]
            others = len(errors) - 1 + unnamed  # each summary detail stands for its unnamed keys, less itself
            summary = f"{first.field} {first.message}" + (f" (and {others} more)" if others else "")
            raise InvalidInput(summary, details=errors)
        return accepted

    def parameters(self) -> list[dict[str, Any]]:
        """The GMI-style `parameters` list of the model details."""
        return [param.describe() for param in self.params]

    def payload_schema(self) -> dict[str, Any]:
        """The JSON Schema (draft 2020-12) of a payload that validate() accepts."""
        properties = {param.name: param.schema() for param in self.params}
        for parent, members in self._aliases().items():
            targets = ", ".join(f"{parent}.{sub} for {param.name}" for sub, param in members.items())
            properties[parent] = {
                "title": parent,
                "description": f"Nested spelling accepted as an alias ({targets}); "
                "when both spellings are given they must be equal.",
                "type": "object",
                "properties": {sub: param.schema(annotated=False) for sub, param in members.items()},
                "minProperties": 1,
                "additionalProperties": False,
            }
        return {
            "$schema": JSON_SCHEMA_DIALECT,
            "title": f"{self.id} payload",
            "type": "object",
            "properties": properties,
            "required": [param.name for param in self.params if param.required],
            "additionalProperties": False,
        }

    def image_param(self) -> str | None:
        """The name of the parameter that holds an input image, if the model takes one."""
        return next((param.name for param in self.params if param.is_image), None)

    def details(self) -> dict[str, Any]:
        """The static fields of GET /models/{id}; the API adds engine, host_type and qworkers."""
        return {
            "model": self.id,
            "org_id": self.org_id,
            "brief_description": self.brief_description,
            "detailed_description": self.detailed_description,
            "modalities": copy.deepcopy(self.modalities),
            "parameters": self.parameters(),
            "model_type": self.model_type,
            "external_provider": self.external_provider,
            "tags": list(self.tags),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "price_info": copy.deepcopy(self.price_info),
            "payload_schema": self.payload_schema(),
        }

    def _aliases(self) -> dict[str, dict[str, Param]]:
        """Nested spellings by their outer key: {"cfg": {"scale": <cfg_scale>}}."""
        out: dict[str, dict[str, Param]] = {}
        for param in self.params:
            if param.alias is not None:
                parent, sub = param.alias
                out.setdefault(parent, {})[sub] = param
        return out

    def _read_aliases(self, payload: dict[str, Any], errors: list[FieldError]) -> tuple[dict[str, _Given], int]:
        """The values given through nested spellings, by parameter name, each with its path; and how many
        unknown nested keys a summary detail stands for, beyond the summaries themselves."""
        found: dict[str, _Given] = {}
        unnamed = 0
        for parent, members in self._aliases().items():
            if parent not in payload:
                continue
            nested = payload[parent]
            subs = ", ".join(members)
            if not isinstance(nested, dict):
                errors.append(FieldError(f"payload.{parent}", f"must be an object holding only: {subs}"))
                continue
            if not nested:
                errors.append(FieldError(f"payload.{parent}", f"must hold at least one of: {subs}"))
            for key, param in members.items():
                if key in nested:
                    found.setdefault(param.name, []).append((f"payload.{parent}.{key}", nested[key]))
            unknown = [key for key in nested if key not in members]
            message = f"is not allowed in {parent} (allowed: {subs})"
            more = f"more keys that are not allowed in {parent}"
            unnamed += _name_unknown(unknown, f"payload.{parent}", message, more, errors)
        return found, unnamed


def _name_unknown(unknown: list[str], where: str, message: str, more: str, errors: list[FieldError]) -> int:
    """Add a detail per unknown key of ``where`` up to MAX_NAMED_UNKNOWN, then one that counts the rest.

    A body of a million unknown keys must not cost a million details. Returns how many keys the summary detail
    stands for beyond itself (0 without one).
    """
    errors += [FieldError(f"{where}.{key}", message) for key in unknown[:MAX_NAMED_UNKNOWN]]
    rest = len(unknown) - MAX_NAMED_UNKNOWN
    if rest <= 0:
        return 0
    errors.append(FieldError(where, f"has {rest} {more}"))
    return rest - 1
