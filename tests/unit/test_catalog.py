"""The catalog: payload validation, the parameters list, the JSON Schema, and lookup by model id."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from typing import Any

import pytest

import vidqueue.catalog
from tests.cases import (
    IMAGE_SHAPES_BAD,
    IMAGE_SHAPES_OK,
    MASTER,
    MODEL_IDS,
    OPEN_MODEL_IDS,
    PROMPT,
    TURBO,
    VALID,
    VIOLATIONS,
)
from vidqueue.catalog import SEED_MODELS, Catalog, ModelSpec, Param
from vidqueue.errors import InvalidInput, NotFound

CATALOG = Catalog()

Agrees = Callable[[str, Any], bool]


def _case_id(case: tuple[Any, ...]) -> str:
    return f"{case[0]}:{json.dumps(case[1])[:60]}"


def _rejections(model_id: str, payload: Any) -> list[tuple[str, str]]:
    with pytest.raises(InvalidInput) as caught:
        CATALOG.get(model_id).validate(payload)
    return [(d.field, d.message) for d in caught.value.details]


# --- validation ---


@pytest.mark.parametrize("case", VIOLATIONS, ids=[_case_id(c) for c in VIOLATIONS])
def test_violation_is_rejected_on_its_field(case: tuple[str, Any, str]) -> None:
    model_id, payload, field = case
    assert field in [f for f, _ in _rejections(model_id, payload)]


@pytest.mark.parametrize("case", VALID, ids=[_case_id(c) for c in VALID])
def test_valid_payload_is_echoed_normalised_with_defaults(
    case: tuple[str, dict[str, Any], dict[str, Any]],
) -> None:
    model_id, payload, expected = case
    assert CATALOG.get(model_id).validate(payload) == expected


def test_violations_cover_both_models() -> None:
    for model_id in MODEL_IDS:
        fields = {field for m, _, field in VIOLATIONS if m == model_id}
        assert {
            "payload",
            "payload.prompt",
            "payload.duration",
            "payload.cfg_scale",
            "payload.cfg.scale",
        } <= fields


def test_validation_does_not_change_the_given_payload() -> None:
    payload = {"prompt": PROMPT, "cfg": {"scale": 0.2}, "duration": 5}
    CATALOG.get(TURBO).validate(payload)
    assert payload == {"prompt": PROMPT, "cfg": {"scale": 0.2}, "duration": 5}


def test_duration_number_5_is_echoed_as_string_5() -> None:
    accepted = CATALOG.get(TURBO).validate({"prompt": PROMPT, "duration": 5})
    assert accepted["duration"] == "5"
    assert isinstance(accepted["duration"], str)


def test_echoed_payload_follows_the_parameter_order() -> None:
    accepted = CATALOG.get(TURBO).validate({"cfg_scale": 0.2, "prompt": PROMPT})
    assert list(accepted) == ["prompt", "duration", "negative_prompt", "mode", "cfg_scale"]


def test_nested_cfg_scale_is_echoed_as_cfg_scale_only() -> None:
    accepted = CATALOG.get(MASTER).validate({"prompt": PROMPT, "cfg": {"scale": 0.8}})
    assert accepted["cfg_scale"] == 0.8
    assert "cfg" not in accepted


def test_cfg_scale_near_the_grid_is_snapped_to_it() -> None:
    accepted = CATALOG.get(TURBO).validate({"prompt": PROMPT, "cfg_scale": 0.1 * 3})
    assert accepted["cfg_scale"] == 0.3
    assert repr(accepted["cfg_scale"]) == "0.3"


def test_absent_image_stays_absent() -> None:
    assert "image" not in CATALOG.get(TURBO).validate({"prompt": PROMPT})


@pytest.mark.parametrize("image", IMAGE_SHAPES_OK)
def test_image_of_the_right_shape_is_accepted_unchanged(image: str) -> None:
    assert CATALOG.get(TURBO).validate({"prompt": PROMPT, "image": image})["image"] == image


@pytest.mark.parametrize("image", IMAGE_SHAPES_BAD, ids=[repr(i)[:40] for i in IMAGE_SHAPES_BAD])
def test_image_of_the_wrong_shape_is_rejected(image: Any) -> None:
    assert [f for f, _ in _rejections(TURBO, {"prompt": PROMPT, "image": image})] == ["payload.image"]


def test_multi_megabyte_base64_image_passes_the_shape_check() -> None:
    image = base64.encodebytes(b"\xff\xd8\xff" + bytes(range(256)) * 40_000).decode()
    assert CATALOG.get(TURBO).validate({"prompt": PROMPT, "image": image})["image"] == image


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_cfg_scale_is_rejected(value: float) -> None:
    rejected = _rejections(TURBO, {"prompt": PROMPT, "cfg_scale": value})
    assert rejected == [("payload.cfg_scale", "must be a number")]


def test_huge_integer_is_rejected_as_out_of_range() -> None:
    rejected = _rejections(TURBO, {"prompt": PROMPT, "cfg_scale": 10**400})
    assert rejected == [("payload.cfg_scale", "must be between 0 and 1")]


def test_every_broken_rule_is_reported_at_once() -> None:
    payload = {
        "prompt": " ",
        "duration": True,
        "negative_prompt": "n" * 2501,
        "mode": "std",
        "cfg_scale": 0.35,
        "image": "nope",
        "cfg": {"scale": 0.5, "extra": 1},
        "seed": 1,
    }
    fields = [f for f, _ in _rejections(TURBO, payload)]
    assert fields == [
        "payload.prompt",
        "payload.image",
        "payload.duration",
        "payload.negative_prompt",
        "payload.mode",
        "payload.cfg_scale",
        "payload.cfg.extra",
        "payload.seed",
    ]


def test_first_detail_becomes_the_error_message() -> None:
    with pytest.raises(InvalidInput) as caught:
        CATALOG.get(TURBO).validate({"prompt": "", "cfg_scale": 3})
    assert caught.value.message == "payload.prompt must be at least 1 character (and 1 more)"


@pytest.mark.parametrize(
    ("model_id", "payload", "detail"),
    [
        (TURBO, {"prompt": PROMPT, "cfg_scale": 1.5}, ("payload.cfg_scale", "must be between 0 and 1")),
        (TURBO, {"prompt": PROMPT, "cfg_scale": 0.35}, ("payload.cfg_scale", "must be a multiple of 0.1")),
        (TURBO, {"prompt": PROMPT, "cfg_scale": "0.5"}, ("payload.cfg_scale", "must be a number")),
        (TURBO, {"prompt": PROMPT, "cfg_scale": False}, ("payload.cfg_scale", "must be a number")),
        (TURBO, {"prompt": PROMPT, "duration": 7}, ("payload.duration", 'must be one of: "5", "10"')),
        (TURBO, {"prompt": PROMPT, "mode": "std"}, ("payload.mode", 'must be one of: "pro"')),
        (
            MASTER,
            {"prompt": PROMPT, "aspect_ratio": "4:3"},
            ("payload.aspect_ratio", 'must be one of: "16:9", "9:16", "1:1"'),
        ),
        (TURBO, {"prompt": "x" * 2501}, ("payload.prompt", "must be at most 2500 characters")),
        (TURBO, {"prompt": ""}, ("payload.prompt", "must be at least 1 character")),
        (TURBO, {"prompt": "\t \n"}, ("payload.prompt", "must not be only whitespace")),
        (TURBO, {"prompt": 1}, ("payload.prompt", "must be a string")),
        (TURBO, {}, ("payload.prompt", "is required")),
        (TURBO, [], ("payload", "must be a JSON object")),
        (TURBO, {"prompt": PROMPT, "cfg": 1}, ("payload.cfg", "must be an object holding only: scale")),
        (
            TURBO,
            {"prompt": PROMPT, "cfg": {"x": 1}},
            ("payload.cfg.x", "is not allowed in cfg (allowed: scale)"),
        ),
        (
            TURBO,
            {"prompt": PROMPT, "cfg_scale": 0.5, "cfg": {"scale": 0.6}},
            ("payload.cfg.scale", "must equal payload.cfg_scale when both are given"),
        ),
        (
            TURBO,
            {"prompt": PROMPT, "seed": 1},
            (
                "payload.seed",
                "is not a parameter of model kling-v2-5-turbo "
                "(allowed: prompt, image, duration, negative_prompt, mode, cfg_scale)",
            ),
        ),
        (
            MASTER,
            {"prompt": PROMPT, "image": "https://example.com/a.png"},
            (
                "payload.image",
                "is not a parameter of model Kling-Text2Video-V2-Master "
                "(allowed: prompt, negative_prompt, duration, aspect_ratio, cfg_scale)",
            ),
        ),
    ],
)
def test_detail_message_names_the_broken_rule(model_id: str, payload: Any, detail: tuple[str, str]) -> None:
    assert _rejections(model_id, payload) == [detail]


# --- the parameters list ---

_LISTING_KEYS = {"name", "display_name", "description", "type", "required"}
_OPTIONAL_LISTING_KEYS = {"default", "options", "min", "max", "step", "max_length"}


def _limits(model_id: str) -> list[dict[str, Any]]:
    """The parameters list without the prose, which is free to change."""
    return [
        {k: v for k, v in entry.items() if k not in ("display_name", "description")}
        for entry in CATALOG.get(model_id).parameters()
    ]


def test_turbo_parameters_list_matches_the_contract() -> None:
    assert _limits(TURBO) == [
        {"name": "prompt", "type": "string", "required": True, "max_length": 2500},
        {"name": "image", "type": "string", "required": False},
        {"name": "duration", "type": "string", "required": False, "default": "5", "options": ["5", "10"]},
        {"name": "negative_prompt", "type": "string", "required": False, "default": "", "max_length": 2500},
        {"name": "mode", "type": "string", "required": False, "default": "pro", "options": ["pro"]},
        {
            "name": "cfg_scale",
            "type": "number",
            "required": False,
            "default": 0.5,
            "min": 0,
            "max": 1,
            "step": 0.1,
        },
    ]


def test_master_parameters_list_matches_the_contract() -> None:
    assert _limits(MASTER) == [
        {"name": "prompt", "type": "string", "required": True, "max_length": 2500},
        {"name": "negative_prompt", "type": "string", "required": False, "default": "", "max_length": 2500},
        {"name": "duration", "type": "string", "required": False, "default": "5", "options": ["5", "10"]},
        {
            "name": "aspect_ratio",
            "type": "string",
            "required": False,
            "default": "16:9",
            "options": ["16:9", "9:16", "1:1"],
        },
        {
            "name": "cfg_scale",
            "type": "number",
            "required": False,
            "default": 0.5,
            "min": 0,
            "max": 1,
            "step": 0.1,
        },
    ]


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_parameters_entries_hold_only_the_public_keys(model_id: str) -> None:
    for entry in CATALOG.get(model_id).parameters():
        assert _LISTING_KEYS <= set(entry) <= _LISTING_KEYS | _OPTIONAL_LISTING_KEYS
        assert entry["display_name"]
        assert entry["description"]


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_parameters_list_is_json(model_id: str) -> None:
    listing = CATALOG.get(model_id).parameters()
    assert json.loads(json.dumps(listing)) == listing


# --- the JSON Schema ---


@pytest.fixture
def schema_agrees() -> Agrees:
    """A check that the model's payload_schema accepts exactly what its validate() accepts."""
    jsonschema = pytest.importorskip("jsonschema")

    def agrees(model_id: str, payload: Any) -> bool:
        model = CATALOG.get(model_id)
        schema_ok = jsonschema.Draft202012Validator(model.payload_schema()).is_valid(payload)
        try:
            model.validate(payload)
        except InvalidInput:
            return not schema_ok
        return bool(schema_ok)

    return agrees


def _schema_examples() -> list[tuple[str, Any]]:
    examples: list[tuple[str, Any]] = [(m, p) for m, p, _ in VIOLATIONS] + [(m, p) for m, p, _ in VALID]
    for model_id in MODEL_IDS:
        numbers = [k / 100 for k in range(-20, 121)] + [k * 0.1 for k in range(-2, 13)] + [0, 1, -1, 2]
        numbers += [0.30000000000000004, 0.7000000000000001, 0.29999999, 0.3000002, 1e-12, -1e-12, 1 + 1e-12]
        for number in numbers:
            examples.append((model_id, {"prompt": PROMPT, "cfg_scale": number}))
            examples.append((model_id, {"prompt": PROMPT, "cfg": {"scale": number}}))
        for duration in [
            "5",
            "10",
            "05",
            "5.0",
            " 5",
            5,
            10,
            5.0,
            10.0,
            0,
            15,
            -5,
            5.000001,
            True,
            False,
            None,
            [5],
        ]:
            examples.append((model_id, {"prompt": PROMPT, "duration": duration}))
        for prompt in [
            "a",
            " a ",
            "",
            " ",
            "\u3000",
            "\u00a0x",
            "x" * 2500,
            "x" * 2501,
            "🦊" * 2500,
            "🦊" * 2501,
        ]:
            examples.append((model_id, {"prompt": prompt}))
        examples.append((model_id, {"prompt": PROMPT, "cfg": {"scale": 0.5}, "extra": {}}))
        examples.append((model_id, {"prompt": PROMPT, "cfg": None}))
    examples += [(TURBO, {"prompt": PROMPT, "image": image}) for image in IMAGE_SHAPES_OK + IMAGE_SHAPES_BAD]
    ratios = ["16:9", "9:16", "1:1", "4:3", 1, None]
    examples += [(MASTER, {"prompt": PROMPT, "aspect_ratio": ratio}) for ratio in ratios]
    examples += [(TURBO, {"prompt": PROMPT, "mode": m}) for m in ["pro", "std", "", None]]
    return examples


# JSON Schema cannot compare two values, so it cannot tell cfg.scale apart from a cfg_scale it contradicts.
_BEYOND_SCHEMA = [
    (model_id, {"prompt": PROMPT, "cfg_scale": scale, "cfg": {"scale": nested}})
    for model_id in MODEL_IDS
    for scale, nested in [(0.7, 0.3), (0.5, 0.6)]
]


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_payload_schema_is_a_valid_draft_2020_12_schema(model_id: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = CATALOG.get(model_id).payload_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_payload_schema_agrees_with_validation(schema_agrees: Agrees) -> None:
    examples = [e for e in _schema_examples() if e not in _BEYOND_SCHEMA]
    assert len(examples) > 600
    disagreements = [(m, p) for m, p in examples if not schema_agrees(m, p)]
    assert disagreements == []


def test_payload_schema_accepts_a_contradicting_cfg_pair_that_validation_rejects(
    schema_agrees: Agrees,
) -> None:
    for model_id, payload in _BEYOND_SCHEMA:
        assert not schema_agrees(model_id, payload)


def test_payload_schema_spells_out_the_cfg_alias() -> None:
    schema = CATALOG.get(MASTER).payload_schema()
    cfg = schema["properties"]["cfg"]
    assert cfg["type"] == "object"
    assert cfg["additionalProperties"] is False
    assert set(cfg["properties"]) == {"scale"}
    assert schema["required"] == ["prompt"]
    assert schema["additionalProperties"] is False


def test_payload_schema_carries_the_defaults() -> None:
    properties = CATALOG.get(TURBO).payload_schema()["properties"]
    defaults = {name: p["default"] for name, p in properties.items() if "default" in p}
    assert defaults == {"duration": "5", "negative_prompt": "", "mode": "pro", "cfg_scale": 0.5}


# --- model details ---


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_details_hold_the_static_public_fields(model_id: str) -> None:
    details = CATALOG.get(model_id).details()
    assert list(details) == [
        "model",
        "org_id",
        "brief_description",
        "detailed_description",
        "modalities",
        "parameters",
        "model_type",
        "external_provider",
        "tags",
        "created_at",
        "updated_at",
        "price_info",
        "payload_schema",
    ]
    assert details["model"] == model_id
    assert details["external_provider"] == "kling"
    assert details["model_type"] == "video-generation"
    assert isinstance(details["created_at"], int)
    assert json.loads(json.dumps(details)) == details


def test_modalities_say_which_model_takes_an_image() -> None:
    assert CATALOG.get(TURBO).details()["modalities"] == {"input": ["text", "image"], "output": ["video"]}
    assert CATALOG.get(MASTER).details()["modalities"] == {"input": ["text"], "output": ["video"]}


def test_details_are_a_copy_the_caller_may_change() -> None:
    model = CATALOG.get(TURBO)
    model.details()["modalities"]["input"].append("audio")
    assert model.modalities["input"] == ["text", "image"]


def test_image_param_names_the_image_parameter() -> None:
    assert CATALOG.get(TURBO).image_param() == "image"
    assert CATALOG.get(MASTER).image_param() is None


# --- the catalog ---


BUILT_IN_IDS = list(OPEN_MODEL_IDS)


def test_catalog_holds_the_two_seed_models_then_the_built_in_open_models() -> None:
    assert CATALOG.ids() == [TURBO, MASTER, *BUILT_IN_IDS]
    assert [m.id for m in CATALOG] == CATALOG.ids()
    assert len(CATALOG) == 11
    assert TURBO in CATALOG
    assert [m.id for m in SEED_MODELS] == [TURBO, MASTER]


def test_unknown_model_is_not_found_and_the_message_lists_the_models() -> None:
    with pytest.raises(NotFound) as caught:
        CATALOG.get("kling-v9")
    assert caught.value.message == (
        "Model 'kling-v9' does not exist; available models: kling-v2-5-turbo, Kling-Text2Video-V2-Master, "
        + ", ".join(BUILT_IN_IDS)
    )


@pytest.mark.parametrize("model_id", ["KLING-V2-5-TURBO", "Kling-v2-5-turbo", "kling-text2video-v2-master"])
def test_model_ids_are_case_sensitive(model_id: str) -> None:
    assert model_id not in CATALOG
    with pytest.raises(NotFound, match="case-sensitive; did you mean"):
        CATALOG.get(model_id)


def test_catalog_can_hold_other_models() -> None:
    spec = ModelSpec(
        id="tiny",
        brief_description="A test model.",
        detailed_description="# tiny",
        params=(
            Param(
                name="steps",
                display_name="Steps",
                description="Steps.",
                type="integer",
                default=4,
                min=1,
                max=8,
            ),
            Param(name="loop", display_name="Loop", description="Loop.", type="boolean", default=False),
        ),
        modalities={"input": ["text"], "output": ["video"]},
        model_type="video-generation",
        tags=(),
        external_provider=None,
        price_info={"price": 10, "pricing_type": "per_request", "unit": "usd_cent"},
        created_at=0,
        updated_at=0,
    )
    catalog = Catalog([spec])
    assert catalog.ids() == ["tiny"]
    assert catalog.get("tiny").validate({"steps": 6.0}) == {"steps": 6, "loop": False}
    with pytest.raises(InvalidInput) as caught:
        spec.validate({"steps": 2.5, "loop": 1})
    assert [d.field for d in caught.value.details] == ["payload.steps", "payload.loop"]


def test_a_model_defined_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="defined twice"):
        Catalog([SEED_MODELS[0], SEED_MODELS[0]])


def test_a_default_that_breaks_its_own_rules_is_refused() -> None:
    with pytest.raises(ValueError, match="default"):
        Param(name="d", display_name="D", description="D.", type="string", default="7", options=("5", "10"))


def test_package_exports_exactly_the_public_names() -> None:
    assert sorted(vidqueue.catalog.__all__) == [
        "BUILT_IN_MODELS",
        "Catalog",
        "DEFAULT_MODELS",
        "FAMILIES",
        "LocalModel",
        "ModelSpec",
        "Param",
        "SEED_MODELS",
        "local_model",
        "local_spec",
    ]


def test_many_unknown_keys_are_named_up_to_a_point_and_counted_after() -> None:
    payload = {"prompt": PROMPT, **{f"k{i}": i for i in range(1000)}}
    with pytest.raises(InvalidInput) as caught:
        Catalog().get(TURBO).validate(payload)
    details = caught.value.details
    assert [d.field for d in details[:20]] == [f"payload.k{i}" for i in range(20)]
    assert len(details) == 21
    assert (details[-1].field, details[-1].message) == (
        "payload",
        "has 980 more keys that are not parameters of model kling-v2-5-turbo",
    )
    # The message counts every broken rule, not only the details it names.
    assert caught.value.message.endswith("(and 999 more)")
