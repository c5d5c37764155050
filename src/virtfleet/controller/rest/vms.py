"""`/api/v1/vms`: the fleet's VMs from the controller's view, and what the CLI's `vm` and
`snapshot` commands do, through the same services (fleet/vms.py, fleet/snapshots.py,
fleet/migration.py).

A create body has no `host` and no disk `path`: the scheduler places a new VM in the pod or
site given, on new volumes in a storage pool; pinning a host or pointing at an existing image
stays with the CLI (an admin's tool on the store). Create and migrate are operations (202).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field, SecretStr, field_validator, model_validator

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
    healthy,
    host_record,
    moves,
    page,
    start_operation,
    submit,
    vf,
    vm,
    vm_holders,
)
from virtfleet.controller.view import VMFilter
from virtfleet.fleet.roles import Principal, Target
from virtfleet.fleet.scope import Scope
from virtfleet.inventory.records import HostRecord

router = APIRouter(prefix=PREFIX, tags=["vms"], route_class=AuditedRoute)

HostQuery = Annotated[str | None, Query(
    description="The VM's hypervisor, when its name is defined on several.")]
_SIZE = r"^[0-9]+(\.[0-9]+)?[A-Za-z]{0,3}$"
_MAC = r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$"
_IFNAME = r"^[A-Za-z0-9._-]{1,15}$"


# ------------------------------------------------------------------ bodies


class DiskBody(Body):
    """A new volume (virt-install's `--disk size=...`); a path to an existing image is not
    accepted here."""

    size: str = Field(pattern=_SIZE, description="80G, 512M; a bare number is GiB.")
    format: Literal["qcow2", "raw"] = "qcow2"
    pool: Name | None = None
    bus: Literal["virtio", "sata", "scsi", "ide"] | None = None

    def option(self) -> str:
        extra = [f"{k}={v}" for k, v in (("pool", self.pool), ("bus", self.bus)) if v]
        return ",".join([f"size={self.size}", f"format={self.format}", *extra])


class NicBody(Body):
    """A NIC on a libvirt network or a bridge (virt-install's `--network`)."""

    network: Name | None = None
    bridge: str | None = Field(default=None, pattern=_IFNAME)
    vlans: list[Annotated[int, Field(ge=1, le=4094)]] = Field(default_factory=list,
                                                               max_length=64)
    trunk: bool = False
    portgroup: str | None = Field(default=None, pattern=_IFNAME)
    virtualport: Literal["openvswitch"] | None = None
    model: Literal["virtio", "e1000", "e1000e", "rtl8139"] | None = None
    mac: str | None = Field(default=None, pattern=_MAC)

    @model_validator(mode="after")
    def _one_source(self) -> NicBody:
        if (self.network is None) == (self.bridge is None):
            raise ValueError("give exactly one of network or bridge")
        return self

    def option(self) -> str:
        parts = [f"network={self.network}" if self.network else f"bridge={self.bridge}"]
        if self.vlans:
            parts.append("vlan=" + ":".join(str(v) for v in self.vlans))
        if self.trunk:
            parts.append("trunk=yes")
        parts += [f"{k}={v}" for k, v in (("portgroup", self.portgroup),
                                          ("virtualport", self.virtualport),
                                          ("model", self.model), ("mac", self.mac)) if v]
        return ",".join(parts)


class GraphicsBody(Body):
    type: Literal["spice", "vnc", "none"] = "spice"
    listen: str = "127.0.0.1"

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str) -> str:
        ipaddress.ip_address(value)  # ValueError names the field
        return value

    def option(self) -> str:
        return f"{self.type},listen={self.listen}"


class CreateBody(Body):
    """A new VM, placed by the scheduler in `pod` or `site` (exactly one)."""

    name: Name
    memory: str = Field(pattern=_SIZE, description="32G, 512M; a bare number is MiB.")
    vcpus: int = Field(ge=1, le=4096)
    disks: list[DiskBody] = Field(default_factory=list, max_length=16)
    networks: list[NicBody] = Field(default_factory=list, max_length=16)
    pxe: bool = False
    os_variant: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    graphics: GraphicsBody | None = None
    graphics_password: SecretStr | None = None
    serial_console: bool = True
    autostart: bool = False
    start: bool = True
    virt_type: Literal["auto", "kvm", "qemu"] | None = None
    app: Name | None = Field(default=None, description="Application group: placement keeps "
                             "the VM on hypervisors of this host group.")
    owner: Name | None = None
    pod: Name | None = None
    site: Name | None = None

    @model_validator(mode="after")
    def _one_place(self) -> CreateBody:
        if (self.pod is None) == (self.site is None):
            raise ValueError("give exactly one of pod or site: the scheduler picks the host")
        return self


class ShutdownBody(Body):
    timeout: float = Field(default=120.0, ge=0, le=3600, description="Seconds to wait for "
                           "an ACPI shutdown.")
    force: bool = False


class AutostartBody(Body):
    enabled: bool


class MigrateBody(Body):
    to: Name | None = None
    pod: Name | None = None
    mode: Literal["auto", "live", "offline"] = "auto"
    copy_storage: bool = False
    max_downtime_ms: int | None = Field(default=None, ge=1, le=3_600_000)
    bandwidth_mib: int | None = Field(default=None, ge=1, le=10_000_000)


class SnapshotBody(Body):
    name: Name | None = None
    description: str | None = Field(default=None, max_length=1000)


# ------------------------------------------------------------------ reading


@router.get("/vms", name="vm.list")
def list_vms(request: Request, caller: Annotated[Principal, require("vm.read")],
             site: str | None = None, pod: str | None = None, host: str | None = None,
             group: str | None = None, state: str | None = None,
             name: Annotated[str | None, Query(description="A name, or a glob: web-*")] = None,
             limit: Limit = 500, offset: Offset = 0) -> Response:
    """The VMs of the controller's view that the caller may see, filtered, a page at a time,
    sorted by site, pod, host and name; `failed` names the hosts whose VMs may be missing or
    stale (their state is `unknown`)."""
    healthy(request)
    f = VMFilter(site=site, pod=pod, host=host, group=group, state=state, name=name)
    f.check()
    reach = caller.reach("vm.read")
    snap, rows = vf(request).view.vms(f, reach)
    failed = [x.as_json() for x in snap.failed
              if x.host in snap.hosts and reach.covers_host(snap.hosts[x.host])]
    return answer({**page(rows, limit, offset), "failed": failed})


@router.get("/vms/{name}", name="vm.get")
def get_vm(request: Request, name: str, caller: Annotated[Principal, require("vm.read", vm)],
           host: HostQuery = None) -> Response:
    """`virsh dominfo`, asked of its hypervisor now."""
    from virtfleet.fleet.vms import VMService

    api = vf(request)
    with VMService(api.controller.store, api.controller.pool) as vms:
        return answer(vms.info(name, host).as_json())


@router.get("/vms/{name}/stats", name="vm.stats")
def vm_stats(request: Request, name: str,
             caller: Annotated[Principal, require("vm.read", vm)],
             host: HostQuery = None) -> Response:
    """`virsh domstats`: every statistic the hypervisor reports for the VM."""
    from virtfleet.fleet.vms import VMService

    api = vf(request)
    with VMService(api.controller.store, api.controller.pool) as vms:
        return answer(vms.stats(name, host).as_json())


# ------------------------------------------------------------------ making and removing


def _create_target(request: Request, body: CreateBody) -> Target:
    """Where a new VM may land: its pod (or site), on hypervisors of its group if `app` names
    a host group (placement then keeps it there)."""
    snap = vf(request).view.snapshot()
    groups = frozenset({body.app}) if body.app and any(
        body.app in h.groups for h in snap.hosts.values()) else frozenset()
    site = body.site or next((h.site for h in snap.hosts.values() if h.pod == body.pod), None)
    return Target("vm", body.name, site, body.pod, None, groups)


@router.post("/vms", name="vm.create", status_code=202)
def create_vm(request: Request, body: CreateBody,
              caller: Annotated[Principal, require("vm.create")]) -> Response:
    """Create a VM (an operation): placed by the scheduler, volumes made, defined, started."""
    from virtfleet.fleet.vms import CreateRequest, VMService

    target = _create_target(request, body)
    authorize(request, caller, "vm.create", target)
    api = vf(request)
    req = CreateRequest(
        name=body.name, memory=body.memory, vcpus=body.vcpus,
        disks=tuple(d.option() for d in body.disks),
        networks=tuple(n.option() for n in body.networks), pxe=body.pxe,
        os_variant=body.os_variant,
        graphics=body.graphics.option() if body.graphics else None,
        graphics_password=(body.graphics_password.get_secret_value()
                           if body.graphics_password else None),
        serial_console=body.serial_console, autostart=body.autostart, start=body.start,
        virt_type=body.virt_type, app=body.app, owner=body.owner, pod=body.pod,
        site=body.site)
    req.check()  # a bad request is a 400 now, not a failed operation later

    def work(report: Report) -> object:
        with VMService(api.controller.store, api.controller.pool, policy=api.policy) as vms:
            return vms.create(req, progress=report)

    return submit(request, caller, "vm.create", target, work,
                  {"body": body.model_dump(mode="json")})


@router.delete("/vms/{name}", name="vm.undefine")
def undefine_vm(request: Request, name: str,
                caller: Annotated[Principal, require("vm.delete", vm)],
                host: HostQuery = None, remove_all_storage: bool = False,
                storage: Annotated[list[str] | None, Query(
                    description="Disks to delete with it: target devs (vda) or paths.")] = None,
                remove_snapshots: bool = False, remove_managed_save: bool = False,
                remove_nvram: bool = False) -> Response:
    """`virsh undefine` of a shut-off VM; its disks go only if named, and only if nothing
    else uses them."""
    from virtfleet.fleet.vms import UndefineRequest, VMService

    api = vf(request)
    with VMService(api.controller.store, api.controller.pool) as vms:
        return answer(vms.undefine(UndefineRequest(
            name, host, remove_managed_save=remove_managed_save,
            remove_snapshots=remove_snapshots, remove_nvram=remove_nvram,
            remove_all_storage=remove_all_storage, storage=tuple(storage or ()))).as_json())


# ------------------------------------------------------------------ lifecycle


def _act(request: Request, name: str, verb: str, host: str | None,
         timeout: float = 120.0, force: bool = False) -> Response:
    from virtfleet.fleet.vms import ActRequest, VMService

    api = vf(request)
    with VMService(api.controller.store, api.controller.pool) as vms:
        done = vms.act(ActRequest(verb, name, Scope(host=host), timeout=timeout, force=force))
    return answer(done.as_json())


def _verb(verb: str, doc: str) -> None:
    def act(request: Request, name: str,
            caller: Annotated[Principal, require("vm.lifecycle", vm)],
            host: HostQuery = None) -> Response:
        return _act(request, name, verb, host)

    act.__doc__ = doc
    act.__name__ = f"vm_{verb}"
    router.post(f"/vms/{{name}}/{verb}", name=f"vm.{verb}")(act)


_verb("start", "Start the VM (`virsh start`).")
_verb("destroy", "Power the VM off at once (`virsh destroy`).")
_verb("reboot", "Ask the VM to reboot through ACPI (`virsh reboot`).")
_verb("suspend", "Pause the VM in memory (`virsh suspend`).")
_verb("resume", "Resume a paused VM (`virsh resume`).")


@router.post("/vms/{name}/shutdown", name="vm.shutdown")
def shutdown_vm(request: Request, name: str,
                caller: Annotated[Principal, require("vm.lifecycle", vm)],
                body: ShutdownBody | None = None, host: HostQuery = None) -> Response:
    """ACPI shutdown, waiting up to `timeout` seconds; with `force`, destroyed after that."""
    b = body or ShutdownBody()
    return _act(request, name, "shutdown", host, b.timeout, b.force)


@router.put("/vms/{name}/autostart", name="vm.autostart")
def autostart_vm(request: Request, name: str, body: AutostartBody,
                 caller: Annotated[Principal, require("vm.lifecycle", vm)],
                 host: HostQuery = None) -> Response:
    """Start the VM when its hypervisor boots (`virsh autostart [--disable]`)."""
    from virtfleet.fleet.vms import VMService

    api = vf(request)
    with VMService(api.controller.store, api.controller.pool) as vms:
        vms.set_autostart(name, body.enabled, host)
    return answer({"name": name, "autostart": body.enabled})


# ------------------------------------------------------------------ migration


def _destination(request: Request, body: MigrateBody, source: HostRecord) -> Target:
    if body.to is not None:
        return Target.of_host(host_record(request, body.to))
    pod = body.pod or source.pod
    site = next((h.site for h in vf(request).view.snapshot().hosts.values() if h.pod == pod),
                None)
    return Target("pod", pod, site, pod, None, frozenset(source.groups))


@router.post("/vms/{name}/migrate", name="vm.migrate", status_code=202)
def migrate_vm(request: Request, name: str, body: MigrateBody,
               caller: Annotated[Principal, require("vm.migrate", vm)]) -> Response:
    """Move the VM (an operation): live if it runs, to `to` or where the scheduler puts it in
    `pod` (default its own). The caller needs vm.migrate where it goes too."""
    op = start_migration(request, caller, name, body)
    request.state.audit_detail = f"operation {op['id']} accepted"
    return answer(op, 202)


def start_migration(request: Request, caller: Principal, name: str, body: MigrateBody,
                    via: str = "api") -> dict[str, object]:
    """The migration operation of POST /vms/{name}/migrate, for a caller already allowed
    vm.migrate on the VM (the API's `require`, the console's own check): vm.migrate where
    it goes is checked here, the request checked, the operation queued."""
    from virtfleet.fleet.migration import MigrateRequest, MigrationService

    source = vm_holders(request, name, None)[0]
    authorize(request, caller, "vm.migrate", _destination(request, body, source))
    request.state.target = Target.of_vm(name, source)
    req = MigrateRequest(vm=name, to=body.to, pod=body.pod, mode=body.mode,
                         copy_storage=body.copy_storage, max_downtime_ms=body.max_downtime_ms,
                         bandwidth_mib=body.bandwidth_mib)
    req.check()
    api = vf(request)

    def work(report: Report) -> object:
        with MigrationService(api.controller.store, api.controller.pool,
                              policy=api.policy) as service:
            return service.migrate(req, progress=moves(report))

    return start_operation(request, caller, "vm.migrate", Target.of_vm(name, source), work,
                           {"body": body.model_dump(mode="json")}, via)


# ------------------------------------------------------------------ snapshots


@router.get("/vms/{name}/snapshots", name="snapshot.list")
def list_snapshots(request: Request, name: str,
                   caller: Annotated[Principal, require("vm.read", vm)],
                   host: HostQuery = None) -> Response:
    from virtfleet.fleet.snapshots import SnapshotService

    api = vf(request)
    with SnapshotService(api.controller.store, api.controller.pool) as snaps:
        return answer([s.as_json() for s in snaps.snapshots(name, host)])


@router.post("/vms/{name}/snapshots", name="snapshot.create", status_code=201)
def create_snapshot(request: Request, name: str, body: SnapshotBody,
                    caller: Annotated[Principal, require("vm.snapshot", vm)],
                    host: HostQuery = None) -> Response:
    """An internal snapshot in the VM's qcow2 images (raw disks are refused)."""
    return answer(take_snapshot(request, name, body, host), 201)


def take_snapshot(request: Request, name: str, body: SnapshotBody,
                  host: str | None) -> dict[str, str]:
    """What POST /vms/{name}/snapshots does once the caller may (vm.snapshot on the VM):
    the API's handler and the web console's both call it."""
    from virtfleet.fleet.snapshots import SnapshotRequest, SnapshotService

    api = vf(request)
    with SnapshotService(api.controller.store, api.controller.pool) as snaps:
        made = snaps.create(SnapshotRequest(name, body.name, body.description, host))
    return {"vm": name, "name": made}


@router.get("/vms/{name}/snapshots/{snapshot}", name="snapshot.info")
def snapshot_info(request: Request, name: str, snapshot: str,
                  caller: Annotated[Principal, require("vm.read", vm)],
                  host: HostQuery = None) -> Response:
    from virtfleet.fleet.snapshots import SnapshotService

    api = vf(request)
    with SnapshotService(api.controller.store, api.controller.pool) as snaps:
        return answer(snaps.info(name, snapshot, host).as_json())


@router.post("/vms/{name}/snapshots/{snapshot}/revert", name="snapshot.revert")
def revert_snapshot(request: Request, name: str, snapshot: str,
                    caller: Annotated[Principal, require("vm.snapshot", vm)],
                    host: HostQuery = None) -> Response:
    from virtfleet.fleet.snapshots import SnapshotService

    api = vf(request)
    with SnapshotService(api.controller.store, api.controller.pool) as snaps:
        return answer({"vm": name, "reverted_to": snaps.revert(name, snapshot, host)})


@router.delete("/vms/{name}/snapshots/{snapshot}", name="snapshot.delete")
def delete_snapshot(request: Request, name: str, snapshot: str,
                    caller: Annotated[Principal, require("vm.snapshot", vm)],
                    host: HostQuery = None, children: bool = False) -> Response:
    from virtfleet.fleet.snapshots import SnapshotService

    api = vf(request)
    with SnapshotService(api.controller.store, api.controller.pool) as snaps:
        return answer({"vm": name, "deleted": snaps.delete(name, snapshot, children, host)})
