"""The routers other modules add to the controller's API, in one place (docs/api.md, "Adding
routes from another module"): one import and one line each. `virtfleet serve` and the OpenAPI
document (docs/openapi.json) both take them from here, through controller/app.py's build_app.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from virtfleet.controller.events import Event, Visible
from virtfleet.controller.service import Controller
from virtfleet.fleet.roles import Principal


def extra_routers(controller: Controller) -> list[APIRouter]:
    from virtfleet.controller.auth import require
    from virtfleet.controller.ui import pages

    return [
        # /api/v1/events and /metrics (controller/observe.py), each behind its permission
        *controller.observe.routers(require("events.read"),
                                    metrics_auth=require("metrics.read"),
                                    visible=events_visible),
        # /ui: the web console (controller/ui/), signed in with a user's token, not in OpenAPI
        pages.router(controller),
    ]


def events_visible(principal: Any) -> Visible | None:
    """What of the events stream a caller may see: everything with `events.read` on the whole
    estate; else the events of the sites, pods and host groups it holds it on (and the stream's
    own notices, which concern no place)."""
    if not isinstance(principal, Principal):
        return None
    reach = principal.reach("events.read")
    if reach.everywhere:
        return None

    def visible(e: Event) -> bool:
        if e.site is None and e.pod is None and e.host is None and not e.groups:
            return True
        return (e.site in reach.sites or e.pod in reach.pods
                or not reach.groups.isdisjoint(e.groups))

    return visible
