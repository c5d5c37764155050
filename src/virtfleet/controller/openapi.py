"""The API's OpenAPI document, as the controller serves it, for the copy kept in the repository
(docs/openapi.json; tests/unit/test_api_openapi.py fails when the two differ):

    python -m virtfleet.controller.openapi > docs/openapi.json      # or: make openapi

It is made by the same `build_app` as `virtfleet serve`, on a controller that never starts
(an empty in-memory store, no hypervisor asked), so the document is the served one exactly.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def document() -> dict[str, Any]:
    from virtfleet.controller.app import build_app
    from virtfleet.controller.service import Controller
    from virtfleet.inventory.store import Store

    with Store("sqlite://") as store:
        app = build_app(Controller(store))
        doc: dict[str, Any] = app.openapi()
        app.state.vf.jobs.close()
        return doc


def render(doc: dict[str, Any]) -> str:
    """The form kept in the repository: sorted keys, two-space indents, a final newline, so
    a change to one route is a readable diff."""
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render(document()))
