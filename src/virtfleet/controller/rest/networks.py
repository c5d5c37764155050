"""`/api/v1/networks`: libvirt virtual networks on a hypervisor, a pod, a site, a group or the
whole fleet (fleet/networks.py, virsh's net-* verbs), with a result per host. A verb that
changes hosts says where in its query (`?pod=or-pod1`, `?all=true`), as the CLI's options do;
a define takes the fleet file's network fields (`spec`), not raw XML.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from pydantic import Field

from virtfleet.controller.audited import AuditedRoute
from virtfleet.controller.auth import authorize, require
from virtfleet.controller.rest.common import (
    PREFIX,
    Body,
    Name,
    answer,
    answers_json,
    scope_from,
    scoped,
    vf,
)
from virtfleet.fleet.networks import NetworkOutcome, NetworkService
from virtfleet.fleet.roles import Principal, Target
from virtfleet.fleet.scope import Answers, Scope

router = APIRouter(prefix=PREFIX, tags=["networks"], route_class=AuditedRoute)
network = scoped("network")


class ScopeBody(Body):
    """One hypervisor, a pod, a site, a host group, or `all` (the filters given all apply)."""

    host: Name | None = None
    pod: Name | None = None
    site: Name | None = None
    group: Name | None = None
    all: bool = False

    def scope(self) -> Scope:
        return scope_from(self.site, self.pod, self.host, self.group, self.all)


class NetworkBody(Body):
    """A network to define on every host of `scope`, from the fields of a fleet file's
    `libvirt_networks` entry (mode, subnet, dhcp, bridge, ...)."""

    scope: ScopeBody
    name: Name
    spec: dict[str, Any] = Field(default_factory=dict)
    start: bool = False
    autostart: bool = False


class AutostartBody(Body):
    enabled: bool


def _service(request: Request) -> NetworkService:
    api = vf(request)
    return NetworkService(api.controller.store, api.controller.pool)


def _visible(caller: Principal, permission: str, answers: Answers[Any]) -> dict[str, object]:
    reach = caller.reach(permission)
    out = answers_json(answers)
    items = out["items"]
    assert isinstance(items, list)
    hosts = {h.name: h for h, _v in answers.values}
    out["items"] = [i for i in items if reach.covers_host(hosts[str(i["host"])])]
    return out


def _outcomes(found: list[NetworkOutcome]) -> Response:
    return answer({"ok": all(o.ok for o in found), "items": [o.as_json() for o in found]})


@router.get("/networks", name="network.list")
def list_networks(request: Request, caller: Annotated[Principal, require("network.read")],
                  site: str | None = None, pod: str | None = None, host: str | None = None,
                  group: str | None = None) -> Response:
    """`virsh net-list --all` on every host in scope the caller may see."""
    with _service(request) as service:
        found = service.list_networks(scope_from(site, pod, host, group))
    return answer(_visible(caller, "network.read", found))


@router.get("/networks/{name}", name="network.info")
def network_info(request: Request, name: str,
                 caller: Annotated[Principal, require("network.read")],
                 site: str | None = None, pod: str | None = None, host: str | None = None,
                 group: str | None = None) -> Response:
    """`virsh net-info` on every host in scope that has the network."""
    with _service(request) as service:
        found = service.info(name, scope_from(site, pod, host, group))
    return answer(_visible(caller, "network.read", found))


@router.get("/networks/{name}/leases", name="network.leases")
def network_leases(request: Request, name: str,
                   caller: Annotated[Principal, require("network.read")],
                   site: str | None = None, pod: str | None = None, host: str | None = None,
                   group: str | None = None) -> Response:
    """`virsh net-dhcp-leases` on every host in scope that has the network."""
    with _service(request) as service:
        found = service.dhcp_leases(name, scope_from(site, pod, host, group))
    return answer(_visible(caller, "network.read", found))


@router.post("/networks", name="network.define", status_code=201)
def define_network(request: Request, body: NetworkBody,
                   caller: Annotated[Principal, require("network.manage")]) -> Response:
    """Define (and start, mark autostart) the network on every host of its scope, or, if any
    host refuses or fails, on none."""
    from virtfleet.fleet.networks import DefineNetwork

    scope = body.scope.scope()
    authorize(request, caller, "network.manage", Target.of_scope(
        "network", body.name, scope, vf(request).view.snapshot().hosts.values()))
    with _service(request) as service:
        found = service.define(DefineNetwork(scope, name=body.name, spec=body.spec,
                                             start=body.start, autostart=body.autostart))
    return _outcomes(found)


def _scope_of(site: str | None, pod: str | None, host: str | None, group: str | None,
              all_: bool) -> Scope:
    return scope_from(site, pod, host, group, all_)


@router.post("/networks/{name}/start", name="network.start")
def start_network(request: Request, name: str,
                  caller: Annotated[Principal, require("network.manage", network)],
                  site: str | None = None, pod: str | None = None, host: str | None = None,
                  group: str | None = None, all: bool = False) -> Response:
    """`virsh net-start` on every host in scope."""
    with _service(request) as service:
        return _outcomes(service.start(name, _scope_of(site, pod, host, group, all)))


@router.post("/networks/{name}/destroy", name="network.destroy")
def destroy_network(request: Request, name: str,
                    caller: Annotated[Principal, require("network.manage", network)],
                    site: str | None = None, pod: str | None = None, host: str | None = None,
                    group: str | None = None, all: bool = False) -> Response:
    """`virsh net-destroy` on every host in scope."""
    with _service(request) as service:
        return _outcomes(service.destroy(name, _scope_of(site, pod, host, group, all)))


@router.delete("/networks/{name}", name="network.undefine")
def undefine_network(request: Request, name: str,
                     caller: Annotated[Principal, require("network.manage", network)],
                     site: str | None = None, pod: str | None = None, host: str | None = None,
                     group: str | None = None, all: bool = False,
                     destroy: bool = False) -> Response:
    """`virsh net-undefine` on every host in scope (an active one only with `destroy`)."""
    with _service(request) as service:
        return _outcomes(service.undefine(name, _scope_of(site, pod, host, group, all),
                                          destroy=destroy))


@router.put("/networks/{name}/autostart", name="network.autostart")
def autostart_network(request: Request, name: str, body: AutostartBody,
                      caller: Annotated[Principal, require("network.manage", network)],
                      site: str | None = None, pod: str | None = None,
                      host: str | None = None, group: str | None = None,
                      all: bool = False) -> Response:
    """`virsh net-autostart [--disable]` on every host in scope."""
    with _service(request) as service:
        return _outcomes(service.autostart(name, _scope_of(site, pod, host, group, all),
                                           on=body.enabled))
