"""The controller's HTTP application, made in one place for every listener and for the OpenAPI
document: the CLI's `/v1` (controller/api.py, Unix socket only), the REST API `/api/v1`
(controller/rest/), and what other modules add (controller/routers.py).

    app = build_app(controller)                        # the Unix socket: the CLI's token too
    tls = build_app(controller, local_token=False, shared=app)   # --listen: user tokens only

Every /api/ request passes the gate first (controller/gate.py: a token, a body under the
limit); every route then checks its permission (controller/auth.py's `require`); every write
is audited (controller/audited.py); every error is JSON from `as_json()` (controller/errors.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fastapi import APIRouter, FastAPI

from virtfleet.controller import api, errors
from virtfleet.controller.auth import ControllerToken
from virtfleet.controller.gate import DEFAULT_MAX_BODY, Gate
from virtfleet.controller.jobs import Jobs
from virtfleet.controller.routers import extra_routers
from virtfleet.controller.service import Controller
from virtfleet.controller.view import FleetView
from virtfleet.fleet.access import AccessService, Authenticator
from virtfleet.placement.policy import Policy

TITLE = "virtfleet controller"
VERSION = "1"


@dataclass
class ApiState:
    """What the routes share, on `app.state.vf`: the controller (its store, connections and
    fleet view), who may call, the long operations, and the placement policy."""

    controller: Controller
    authenticator: Authenticator
    jobs: Jobs
    view: FleetView
    policy: Policy


def rest_routers() -> list[APIRouter]:
    from virtfleet.controller.rest import (
        access,
        audit,
        fleet,
        hosts,
        installs,
        networks,
        operations,
        plan,
        storage,
        templates,
        vms,
    )

    return [r.router for r in (fleet, vms, hosts, templates, networks, storage, plan,
                               installs, operations, access, audit)]


def _publisher(controller: Controller) -> Callable[[str, str, dict[str, object]], None]:
    """The API's operations on the controller's events stream (controller/jobs.py)."""
    def publish(kind: str, operation: str, data: dict[str, object]) -> None:
        controller.events.publish(kind, operation=operation, data=data)
    return publish


def build_app(controller: Controller, *, routers: Sequence[APIRouter] | None = None,
              local_token: bool = True, shared: FastAPI | None = None,
              policy: Policy | None = None, max_body: int = DEFAULT_MAX_BODY) -> FastAPI:
    """The application. `routers`: other modules' (default: controller/routers.py's list).
    `local_token`: the controller's own token is accepted (the Unix socket); without it only
    user tokens work and the CLI's /v1 is not served. `shared`: another app of this controller
    whose operations and view this one serves too (the TLS listener beside the socket).
    `policy`: default the controller's own (serve --cpu-ratio, --policy), so the API places
    VMs as the controller's HA restarts and migrations do."""
    app = FastAPI(title=TITLE, version=VERSION, docs_url=None, redoc_url=None,
                  openapi_url=None)
    theirs = shared.state.vf if shared is not None else None
    more = (ControllerToken(controller.token),) if local_token else ()
    app.state.vf = ApiState(
        controller=controller,
        authenticator=AccessService(controller.store).authenticator(*more),
        jobs=theirs.jobs if theirs is not None else Jobs(publish=_publisher(controller)),
        view=theirs.view if theirs is not None else FleetView(controller.state),
        policy=policy or (theirs.policy if theirs is not None else controller.policy or Policy()))
    errors.install(app)
    app.add_middleware(Gate, max_body=max_body)
    if local_token:
        # The CLI's own protocol, not the public API: left out of the document, so the socket
        # and a --listen address describe the same API (docs/openapi.json).
        app.include_router(api.router(controller), include_in_schema=False)
    for r in rest_routers():
        app.include_router(r)
    for r in (extra_routers(controller) if routers is None else routers):
        app.include_router(r)
    return app
