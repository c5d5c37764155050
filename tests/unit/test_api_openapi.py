"""docs/openapi.json is the API the controller serves: this fails when a route changes and the
document in the repository was not made again (`make openapi`). tests/unit/test_api.py checks
that a running controller serves this same document."""

from __future__ import annotations

import json
from pathlib import Path

from virtfleet.controller.openapi import document, render

KEPT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_the_document_in_the_repository_is_the_api() -> None:
    assert json.loads(KEPT.read_text()) == document(), (
        "docs/openapi.json differs from the API: run `make openapi` and commit it")


def test_the_kept_document_is_in_its_canonical_form() -> None:
    assert KEPT.read_text() == render(json.loads(KEPT.read_text()))


def test_every_route_says_who_may_call_it() -> None:
    doc = document()
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            assert op.get("security") == [{"HTTPBearer": []}], f"{method} {path}"
            assert op.get("operationId"), f"{method} {path}"
