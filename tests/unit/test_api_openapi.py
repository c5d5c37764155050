"""docs/openapi.json is the API the controller serves: this fails when a route changes and the
document in the repository was not made again (`make openapi`). tests/unit/test_api.py checks
that a running controller serves this same document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def _checks(dependant: Any) -> set[str]:
    """The names of the dependencies a route runs, its dependencies' included."""
    names = {getattr(dependant.call, "__name__", "")}
    for sub in dependant.dependencies:
        names |= _checks(sub)
    return names


def test_every_route_checks_the_caller_and_every_write_is_audited() -> None:
    from virtfleet.controller.app import build_app
    from virtfleet.controller.audited import READS, AuditedRoute
    from virtfleet.controller.gate import _routes
    from virtfleet.controller.service import Controller
    from virtfleet.inventory.store import Store

    with Store("sqlite://") as store:
        app = build_app(Controller(store))
        routes = [r for r in _routes(app.router) if r.path.startswith("/api/")]
        app.state.vf.jobs.close()
    assert len(routes) > 60
    for route in routes:
        checks = _checks(route.dependant)
        assert any(n.startswith("require_") or n == "signed_in" for n in checks), route.path
        if not route.methods <= READS:
            assert isinstance(route, AuditedRoute), f"{route.methods} {route.path}"
            # a write needs a permission, not only a good token
            assert any(n.startswith("require_") for n in checks), route.path
