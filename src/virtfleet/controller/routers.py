"""The routers other modules add to the controller's API, in one place (docs/api.md, "Adding
routes from another module"): one import and one line each. `virtfleet serve` and the OpenAPI
document (docs/openapi.json) both take them from here, through controller/app.py's build_app.
"""

from __future__ import annotations

from fastapi import APIRouter

from virtfleet.controller.service import Controller


def extra_routers(controller: Controller) -> list[APIRouter]:
    del controller  # each module's router(controller) takes it
    return []
