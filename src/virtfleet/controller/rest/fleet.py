"""`/api/v1`'s own: who am I, the controller's health, a full resync, and the API's
description (OpenAPI), each behind a token like everything else.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Response

from virtfleet.controller.audited import AuditedRoute
from virtfleet.controller.auth import ESTATE, SignedIn, require
from virtfleet.controller.rest.common import PREFIX, answer, vf
from virtfleet.fleet.roles import ROLES, Principal

router = APIRouter(prefix=PREFIX, tags=["fleet"], route_class=AuditedRoute)


@router.get("/whoami", name="whoami")
def whoami(caller: SignedIn) -> Response:
    """The caller, its grants, and the permissions each gives."""
    return answer({"user": caller.name, "credential": caller.via,
                   "grants": [{"role": g.role, "scope": g.scope,
                               "permissions": sorted(ROLES.get(g.role, ()))}
                              for g in caller.grants]})


@router.get("/health", name="health")
def health(request: Request, caller: SignedIn) -> Response:
    """Whether the controller keeps its fleet view current, and each worker's state."""
    c = vf(request).controller
    problems = c.problems()
    return answer({"started_at": c.started_at.isoformat(), "hosts": len(c.state.hosts()),
                   "healthy": not problems, "problems": problems,
                   "workers": {n: w.as_json() for n, w in c.workers.items()}})


@router.get("/openapi.json", name="openapi", include_in_schema=False)
def openapi(request: Request, caller: SignedIn) -> Response:
    """This API's OpenAPI description (kept in the repository as docs/openapi.json)."""
    return answer(request.app.openapi())


@router.post("/sync", name="fleet.sync")
def sync(request: Request, caller: Annotated[Principal, require("fleet.sync", ESTATE)]
         ) -> Response:
    """Ask every hypervisor for its VMs now, and refresh the view and the store."""
    from virtfleet.fleet.queries import failures

    c = vf(request).controller
    c.reload_inventory()
    results = c.sync()
    return answer({"hosts": len(results),
                   "vms": sum(len(r.value) for r in results if r.value is not None),
                   "failed": [f.as_json() for f in failures(results)]})
