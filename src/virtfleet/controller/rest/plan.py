"""`/api/v1/plan`: headroom and placement on the live fleet (fleet/planning.py), as `plan
headroom` and `plan place` answer them. A placement is only a plan unless `claim` holds the
room in the store for whoever defines the VMs (which needs plan.claim).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field

from virtfleet.controller.audited import AuditedRoute
from virtfleet.controller.auth import authorize, require
from virtfleet.controller.rest.common import PREFIX, Body, Name, answer, scope_from, vf
from virtfleet.design.sizes import parse_mib
from virtfleet.fleet.roles import Principal, Target

router = APIRouter(prefix=PREFIX, tags=["plan"], route_class=AuditedRoute)
_SIZE = r"^[0-9]+(\.[0-9]+)?[A-Za-z]{0,3}$"


class PlaceBody(Body):
    """`count` VMs of one shape for one application group, where the scheduler would put
    them (with `claim`, the room is held)."""

    name: Name
    vcpus: int = Field(ge=1, le=4096)
    memory: str = Field(pattern=_SIZE, description="32G, 512M; a bare number is MiB.")
    disk_gib: int = Field(default=0, ge=0)
    count: int = Field(default=1, ge=1, le=100_000)
    group: Name | None = None
    site: Name | None = None
    pod: Name | None = None
    anti_affinity: Literal["host", "pod"] | None = None
    affinity: Literal["host", "pod"] | None = None
    explain: bool = False
    claim: bool = False


def _where(request: Request, kind: str, name: str, site: str | None, pod: str | None,
           group: str | None) -> Target:
    scope = scope_from(site, pod, None, group)
    return Target.of_scope(kind, name, scope, vf(request).view.snapshot().hosts.values())


@router.get("/plan/headroom", name="plan.headroom")
def headroom(request: Request, caller: Annotated[Principal, require("plan.read")],
             vcpus: Annotated[int, Query(ge=1, le=4096)],
             memory: Annotated[str, Query(pattern=_SIZE)],
             disk_gib: Annotated[int, Query(ge=0)] = 0, site: str | None = None,
             pod: str | None = None, group: str | None = None) -> Response:
    """How many more VMs of this shape fit in the site or pod (on hosts of its group), and
    what fails first if a hypervisor or a pod is lost."""
    from virtfleet.fleet.planning import HeadroomRequest, PlanningService
    from virtfleet.fleet.scope import Scope
    from virtfleet.placement.models import VMShape

    authorize(request, caller, "plan.read", _where(request, "plan", "", site, pod, group))
    shape = VMShape(vcpus=vcpus, memory_mib=parse_mib("memory", memory), disk_gib=disk_gib)
    api = vf(request)
    with PlanningService(api.controller.store, api.controller.pool,
                         policy=api.policy) as plan:
        room = plan.headroom(HeadroomRequest(shape, Scope(site=site, pod=pod, group=group)))
    return answer({**room.as_json(), "failed": [f.as_json() for f in room.failed]})


@router.post("/plan/place", name="plan.place")
def place(request: Request, body: PlaceBody,
          caller: Annotated[Principal, require("plan.read")]) -> Response:
    """Where the scheduler puts the VMs (nothing is defined); `explain` says which hosts
    each filter removed; `claim` holds the room."""
    from virtfleet.fleet.planning import PlaceRequest, PlanningService
    from virtfleet.placement.models import PlacementRequest, VMShape, parse

    where = _where(request, "plan", body.name, body.site, body.pod, body.group)
    authorize(request, caller, "plan.claim" if body.claim else "plan.read", where)
    shape = VMShape(vcpus=body.vcpus, memory_mib=parse_mib("memory", body.memory),
                    disk_gib=body.disk_gib)
    wanted = parse(PlacementRequest, {
        "name": body.name, "shape": shape.model_dump(), "count": body.count,
        "group": body.group, "site": body.site, "pod": body.pod,
        "anti_affinity": body.anti_affinity, "affinity": body.affinity})
    api = vf(request)
    with PlanningService(api.controller.store, api.controller.pool,
                         policy=api.policy) as plan:
        placed = plan.place(PlaceRequest(wanted, explain=body.explain, claim=body.claim))
    return answer({**placed.as_json(), "failed": [f.as_json() for f in placed.failed]})
