"""Pydantic's validation errors as vidqueue states its rules: the field's name, then what it must be."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field, ValidationError

from vidqueue.api.errors import rule_of


class Query(BaseModel):
    status: Literal["queued", "processing", "success", "failed", "cancelled"] | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    ratio: Annotated[float, Field(gt=0, lt=1)] = 0.5
    name: Annotated[str, Field(min_length=1, max_length=8)] = "x"
    code: Annotated[str, Field(min_length=3)] = "abc"
    tags: Annotated[list[str], Field(max_length=2)] = []
    flag: bool = False
    when: Any = None


def rules(**fields: Any) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        Query.model_validate(fields)
    return [rule_of(err) for err in caught.value.errors()]


@pytest.mark.parametrize(
    ("fields", "rule"),
    [
        ({"status": "done"}, "must be one of queued, processing, success, failed, cancelled"),
        ({"limit": 0}, "must be at least 1"),
        ({"limit": 101}, "must be at most 100"),
        ({"limit": "ten"}, "must be an integer"),
        ({"limit": 1.5}, "must be an integer"),
        ({"ratio": 0}, "must be more than 0"),
        ({"ratio": 1.0}, "must be less than 1"),
        ({"ratio": "half"}, "must be a number"),
        ({"name": ""}, "must not be empty"),
        ({"name": "x" * 9}, "must be at most 8 characters"),
        ({"code": "ab"}, "must be at least 3 characters"),
        ({"name": 5}, "must be a string"),
        ({"tags": ["a", "b", "c"]}, "must have at most 2 items"),
        ({"tags": "a"}, "must be a list"),
        ({"flag": "perhaps"}, "must be true or false"),
    ],
)
def test_each_rule_reads_in_vidqueue_words(fields: dict[str, Any], rule: str) -> None:
    assert rules(**fields) == [rule]


def test_a_body_that_is_not_an_object_must_be_a_json_object() -> None:
    with pytest.raises(ValidationError) as caught:
        Query.model_validate([1, 2])
    assert [rule_of(err) for err in caught.value.errors()] == ["must be a JSON object"]


def test_an_error_type_without_a_rule_of_its_own_loses_pydantic_s_opening() -> None:
    assert rule_of({"type": "uuid_parsing", "msg": "Input should be a valid UUID, invalid length"}) == (
        "must be a valid UUID, invalid length"
    )
    assert rule_of({"type": "value_error", "msg": "Value error, is not a cursor"}) == "is not a cursor"
    assert rule_of({"type": "too_many_fields", "msg": "has 30 fields that are not allowed"}) == (
        "has 30 fields that are not allowed"
    )
