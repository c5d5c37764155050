"""pydantic's validation errors reach the user in virtfleet's words (`must be ...`), from every
place that turns them into InvalidInput: the CLI's own options, the placement models, the
fleet file and the API's 422 bodies (their shape unchanged)."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Annotated, Literal

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from virtfleet.controller.errors import validation_error
from virtfleet.errors import InvalidInput
from virtfleet.placement.models import VMShape, parse
from virtfleet.pydantic_errors import rule


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: Annotated[int, Field(gt=0)] = 1
    ratio: Annotated[float, Field(ge=0.5, le=8)] = 1.0
    port: Annotated[int, Field(lt=65536)] = 22
    name: Annotated[str, Field(min_length=2, max_length=4, pattern=r"^[a-z]+$")] = "ab"
    mode: Literal["nat", "route"] = "nat"
    tags: Annotated[list[str], Field(max_length=1)] = []
    on: bool = False
    addr: IPv4Address = IPv4Address("10.0.0.1")
    need: int


@pytest.mark.parametrize("data,words", [
    ({"count": 0}, "must be greater than 0"),
    ({"count": "ten"}, "must be a whole number"),
    ({"count": 1.5}, "must be a whole number"),
    ({"ratio": 0.1}, "must be at least 0.5"),
    ({"ratio": 9}, "must be at most 8"),
    ({"ratio": "x"}, "must be a number"),
    ({"port": 70000}, "must be less than 65536"),
    ({"name": "a"}, "must be at least 2 character(s) long"),
    ({"name": "abcde"}, "must be at most 4 characters long"),
    ({"name": "AB"}, "must match ^[a-z]+$"),
    ({"mode": "bridge"}, "must be 'nat' or 'route'"),
    ({"tags": ["a", "b"]}, "must have at most 1 item(s)"),
    ({"tags": "a"}, "must be a list"),
    ({"on": "maybe"}, "must be true or false"),
    ({"addr": "10.0.0.300"}, "must be an IPv4 address"),
    ({"bogus": 1}, "unknown key"),
    ({}, "missing: this field is required"),
])
def test_each_rule_is_worded_as_virtfleets(data: dict[str, object], words: str) -> None:
    with pytest.raises(ValidationError) as info:
        _Model.model_validate({"need": 1, **data} if data else data)
    assert rule(info.value.errors()[0]) == words


def test_the_placement_models_say_must() -> None:
    """Regression: `plan headroom --vcpus 0` said "Input should be greater than 0"."""
    with pytest.raises(InvalidInput) as info:
        parse(VMShape, {"vcpus": 0, "memory_mib": 1024})
    assert (info.value.field, info.value.rule) == ("vcpus", "must be greater than 0")


def test_the_apis_422_body_keeps_its_shape_in_virtfleets_words() -> None:
    with pytest.raises(ValidationError) as info:
        _Model.model_validate({"need": 1, "count": 0, "ratio": 99})
    exc = RequestValidationError([{**e, "loc": ("body", *e["loc"])}
                                  for e in info.value.errors()])
    err = validation_error(exc)
    assert err.as_json() == {"error": "invalid-input", "message": "must be greater than 0",
                             "field": "count"}
