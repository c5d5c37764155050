"""`/api/v1/hosts`: the inventory's hypervisors with their facts (nodeinfo, sysinfo, version)
and preflight checks, asked of them now (fleet/hosts.py), and taking one out of service and
back (fleet/migration.py: maintenance empties it, as an operation).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Response
from pydantic import Field

from virtfleet.controller.audited import AuditedRoute
from virtfleet.controller.auth import authorize, require
from virtfleet.controller.jobs import Report
from virtfleet.controller.rest.common import (
    PREFIX,
    Body,
    Limit,
    Name,
    Offset,
    answer,
    answers_json,
    host,
    host_record,
    moves,
    page,
    submit,
    vf,
)
from virtfleet.fleet.roles import Principal, Target

router = APIRouter(prefix=PREFIX, tags=["hosts"], route_class=AuditedRoute)


class MaintenanceBody(Body):
    """Take the host out of service and move its VMs away (running ones live)."""

    pod: Name | None = Field(default=None, description="Where its VMs may go (default: its "
                             "own pod).")
    copy_storage: bool = False
    max_outgoing: int | None = Field(default=None, ge=1, le=64)
    max_incoming: int | None = Field(default=None, ge=1, le=64)
    max_downtime_ms: int | None = Field(default=None, ge=1, le=3_600_000)
    bandwidth_mib: int | None = Field(default=None, ge=1, le=10_000_000)
    reason: str = Field(default="", max_length=500)


@router.get("/hosts", name="host.list")
def list_hosts(request: Request, caller: Annotated[Principal, require("host.read")],
               site: str | None = None, pod: str | None = None, group: str | None = None,
               limit: Limit = 500, offset: Offset = 0) -> Response:
    """The inventory's hypervisors the caller may see, with the last reachability recorded
    (no host is asked)."""
    from virtfleet.fleet.hosts import HostQuery, HostService

    reach = caller.reach("host.read")
    with HostService(vf(request).controller.store) as hosts:
        rows = [r.as_json() for r in hosts.hosts(HostQuery(site=site, pod=pod, group=group))
                if reach.covers_host(r.host)]
    return answer(page(rows, limit, offset))


@router.get("/hosts/{name}", name="host.get")
def get_host(request: Request, name: str,
             caller: Annotated[Principal, require("host.read", host)]) -> Response:
    """The hypervisor as the inventory has it, and its `virsh nodeinfo` now."""
    from virtfleet.fleet.hosts import HostQuery, HostService

    api = vf(request)
    with HostService(api.controller.store, api.controller.pool) as hosts:
        query = HostQuery(names=(name,))
        [row] = hosts.hosts(query)
        facts = hosts.info(query)
    return answer({**row.as_json(), "facts": answers_json(facts)})


@router.get("/hosts/{name}/sysinfo", name="host.sysinfo")
def host_sysinfo(request: Request, name: str,
                 caller: Annotated[Principal, require("host.read", host)]) -> Response:
    """`virsh sysinfo`, parsed: BIOS, system, processors, memory DIMMs."""
    from virtfleet.fleet.hosts import HostQuery, HostService

    api = vf(request)
    with HostService(api.controller.store, api.controller.pool) as hosts:
        return answer(answers_json(hosts.sysinfo(HostQuery(names=(name,)))))


@router.get("/hosts/{name}/version", name="host.version")
def host_version(request: Request, name: str,
                 caller: Annotated[Principal, require("host.read", host)]) -> Response:
    """`virsh version`: libvirt's and the hypervisor's."""
    from virtfleet.fleet.hosts import HostQuery, HostService

    api = vf(request)
    with HostService(api.controller.store, api.controller.pool) as hosts:
        answers = hosts.version(HostQuery(names=(name,)))
    return answer({"items": [{"host": h.name, **v} for h, v in answers.values],
                   "failed": [f.as_json() for f in answers.failures]})


@router.get("/hosts/{name}/check", name="host.check")
def host_check(request: Request, name: str,
               caller: Annotated[Principal, require("host.read", host)]) -> Response:
    """The preflight (`host check`): virt types, VT-x/AMD-V, IOMMU, KVM, networks, the pod's
    storage pool; `ok` false with the reason for a host that did not answer."""
    from virtfleet.fleet.hosts import HostQuery, HostService

    api = vf(request)
    with HostService(api.controller.store, api.controller.pool) as hosts:
        checks = hosts.check(HostQuery(names=(name,)))
    return answer({"items": [c.as_json() for c in checks.hosts],
                   "failed": [f.as_json() for f in checks.failed]})


@router.post("/hosts/{name}/maintenance", name="host.maintenance", status_code=202)
def host_maintenance(request: Request, name: str, body: MaintenanceBody,
                     caller: Annotated[Principal, require("host.maintenance", host)]
                     ) -> Response:
    """Take the host out of service and empty it (an operation): each VM's move is in its
    progress and its result. The caller needs vm.migrate where the VMs go."""
    from virtfleet.fleet.migration import DrainRequest, MigrationService

    record = host_record(request, name)
    if body.pod is not None and body.pod != record.pod:
        site = next((h.site for h in vf(request).view.snapshot().hosts.values()
                     if h.pod == body.pod), None)
        authorize(request, caller, "vm.migrate",
                  Target("pod", body.pod, site, body.pod, None, frozenset(record.groups)))
    authorize(request, caller, "vm.migrate", Target.of_host(record))
    req = DrainRequest(host=name, pod=body.pod, copy_storage=body.copy_storage,
                       max_outgoing=body.max_outgoing, max_incoming=body.max_incoming,
                       max_downtime_ms=body.max_downtime_ms, bandwidth_mib=body.bandwidth_mib,
                       reason=body.reason or f"by {caller.name} through the API")
    req.check()
    api = vf(request)

    def work(report: Report) -> object:
        with MigrationService(api.controller.store, api.controller.pool,
                              policy=api.policy) as service:
            return service.drain(req, progress=moves(report))

    return submit(request, caller, "host.maintenance", Target.of_host(record), work,
                  {"body": body.model_dump(mode="json")})


@router.post("/hosts/{name}/activate", name="host.activate")
def host_activate(request: Request, name: str,
                  caller: Annotated[Principal, require("host.maintenance", host)]) -> Response:
    """Put the host back in service (placement may use it again)."""
    from virtfleet.fleet.migration import MigrationService

    api = vf(request)
    with MigrationService(api.controller.store, api.controller.pool) as service:
        return answer(service.activate(name).as_json())
