"""`/api/v1/pools`, `/api/v1/hosts/{host}/pools/{pool}/volumes`, `/api/v1/vms/{name}/disks`:
storage pools across the fleet (virsh pool-*, fleet/pools.py), the volumes of one pool on one
hypervisor (virsh vol-*, fleet/volumes.py), and where a VM's disks live. A volume is named as
its pool has it; nothing outside a pool is ever read, written or removed. Uploading and
downloading volume contents stay with the CLI (`vol upload|download`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

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
    host_record,
    scope_from,
    scoped,
    vf,
    vm,
)
from virtfleet.controller.rest.networks import ScopeBody
from virtfleet.design.sizes import parse_bytes
from virtfleet.fleet.pools import PoolOutcome, PoolService
from virtfleet.fleet.roles import Principal, Target
from virtfleet.fleet.scope import Answers, Scope
from virtfleet.fleet.volumes import VolumeService

router = APIRouter(prefix=PREFIX, tags=["storage"], route_class=AuditedRoute)
pool_scope = scoped("pool")
_SIZE = r"^[0-9]+(\.[0-9]+)?[A-Za-z]{0,3}$"


class PoolBody(Body):
    """A persistent pool to define (not start) on every host of `scope`, in `virsh
    pool-define-as`'s fields."""

    scope: ScopeBody
    name: Name
    type: Literal["dir", "fs", "netfs", "logical", "iscsi", "mpath", "disk"]
    target: str | None = Field(default=None, max_length=1024)
    source_host: str | None = Field(default=None, max_length=253)
    source_path: str | None = Field(default=None, max_length=1024)
    source_devs: list[str] = Field(default_factory=list, max_length=64)
    vg: Name | None = None
    iqn: str | None = Field(default=None, max_length=223)
    format: str | None = Field(default=None, max_length=32)


class AutostartBody(Body):
    enabled: bool


class VolumeBody(Body):
    name: str = Field(max_length=255)
    size: str = Field(pattern=_SIZE, description="10G, 512M; a bare number is MiB.")
    format: Literal["qcow2", "raw"] = "qcow2"


class VolumeCloneBody(Body):
    new: str = Field(max_length=255)
    to_pool: Name | None = None


class ResizeBody(Body):
    size: str = Field(pattern=_SIZE)
    grow: bool = False
    shrink: bool = False


def _pools(request: Request) -> PoolService:
    api = vf(request)
    return PoolService(api.controller.store, api.controller.pool)


def _volumes(request: Request) -> VolumeService:
    api = vf(request)
    return VolumeService(api.controller.store, api.controller.pool)


def _visible(caller: Principal, permission: str, answers: Answers[Any]) -> dict[str, object]:
    reach = caller.reach(permission)
    hosts = {h.name: h for h, _v in answers.values}
    out = answers_json(answers)
    items = out["items"]
    assert isinstance(items, list)
    out["items"] = [i for i in items if reach.covers_host(hosts[str(i["host"])])]
    return out


def _outcomes(found: Sequence[PoolOutcome]) -> Response:
    return answer({"ok": all(o.ok for o in found), "items": [o.as_json() for o in found]})


def _scope(site: str | None, pod: str | None, host: str | None, group: str | None,
           all_: bool = False) -> Scope:
    return scope_from(site, pod, host, group, all_)


# ------------------------------------------------------------------ pools


@router.get("/pools", name="pool.list")
def list_pools(request: Request, caller: Annotated[Principal, require("storage.read")],
               site: str | None = None, pod: str | None = None, host: str | None = None,
               group: str | None = None) -> Response:
    """`virsh pool-list --all --details` on every host in scope the caller may see."""
    with _pools(request) as service:
        found = service.list_pools(_scope(site, pod, host, group))
    return answer(_visible(caller, "storage.read", found))


@router.get("/pools/{name}", name="pool.info")
def pool_info(request: Request, name: str,
              caller: Annotated[Principal, require("storage.read")],
              site: str | None = None, pod: str | None = None, host: str | None = None,
              group: str | None = None) -> Response:
    """`virsh pool-info` on every host in scope."""
    with _pools(request) as service:
        found = service.info(name, _scope(site, pod, host, group))
    return answer(_visible(caller, "storage.read", found))


@router.get("/storage/check", name="storage.check")
def storage_check(request: Request, caller: Annotated[Principal, require("storage.read")],
                  site: str | None = None, pod: str | None = None, host: str | None = None,
                  group: str | None = None) -> Response:
    """The storage preflight: each pod's pool active and taking writes, autostart pools
    running."""
    with _pools(request) as service:
        found = service.check(_scope(site, pod, host, group))
    return answer(_visible(caller, "storage.read", found))


@router.post("/pools", name="pool.define", status_code=201)
def define_pool(request: Request, body: PoolBody,
                caller: Annotated[Principal, require("storage.manage")]) -> Response:
    """Define the pool on every host of its scope; a host where the name is taken fails on
    its own."""
    from virtfleet.fleet.pools import DefinePool

    scope = body.scope.scope()
    authorize(request, caller, "storage.manage", Target.of_scope(
        "pool", body.name, scope, vf(request).view.snapshot().hosts.values()))
    with _pools(request) as service:
        found = service.define(DefinePool(
            scope, name=body.name, type=body.type, target=body.target,
            source_host=body.source_host, source_path=body.source_path,
            source_devs=tuple(body.source_devs), vg=body.vg, iqn=body.iqn,
            format=body.format))
    return answer({"ok": found.ok, **answers_json(found)}, 201)


@router.post("/pools/apply-pod", name="pool.apply_pod")
def apply_pod(request: Request,
              caller: Annotated[Principal, require("storage.manage", pool_scope)],
              site: str | None = None, pod: str | None = None, host: str | None = None,
              group: str | None = None, all: bool = False) -> Response:
    """Each pod's declared shared storage as a defined, active, autostarted pool on every
    hypervisor in scope."""
    with _pools(request) as service:
        found = service.apply_pod(_scope(site, pod, host, group, all))
    return _outcomes(found)


def _pool_verb(verb: str, doc: str) -> None:
    def act(request: Request, name: str,
            caller: Annotated[Principal, require("storage.manage", pool_scope)],
            site: str | None = None, pod: str | None = None, host: str | None = None,
            group: str | None = None, all: bool = False) -> Response:
        with _pools(request) as service:
            run = getattr(service, verb)
            return _outcomes(run(name, _scope(site, pod, host, group, all)))

    act.__doc__ = doc
    act.__name__ = f"pool_{verb}"
    router.post(f"/pools/{{name}}/{verb}", name=f"pool.{verb}")(act)


_pool_verb("start", "`virsh pool-start` on every host in scope: mount, log in, scan.")
_pool_verb("refresh", "`virsh pool-refresh` on every host in scope.")
_pool_verb("destroy", "`virsh pool-destroy` on every host in scope: stop; the data stays.")


@router.post("/pools/{name}/build", name="pool.build")
def build_pool(request: Request, name: str,
               caller: Annotated[Principal, require("storage.manage", pool_scope)],
               site: str | None = None, pod: str | None = None, host: str | None = None,
               group: str | None = None, all: bool = False,
               overwrite: bool = False) -> Response:
    """`virsh pool-build`: make the directory or format the device (something already there
    only with `overwrite`)."""
    with _pools(request) as service:
        return _outcomes(service.build(name, _scope(site, pod, host, group, all),
                                       overwrite=overwrite))


@router.delete("/pools/{name}", name="pool.undefine")
def undefine_pool(request: Request, name: str,
                  caller: Annotated[Principal, require("storage.manage", pool_scope)],
                  site: str | None = None, pod: str | None = None, host: str | None = None,
                  group: str | None = None, all: bool = False) -> Response:
    """`virsh pool-undefine` of a stopped pool: the definition goes, never the data."""
    with _pools(request) as service:
        return _outcomes(service.undefine(name, _scope(site, pod, host, group, all)))


@router.put("/pools/{name}/autostart", name="pool.autostart")
def autostart_pool(request: Request, name: str, body: AutostartBody,
                   caller: Annotated[Principal, require("storage.manage", pool_scope)],
                   site: str | None = None, pod: str | None = None, host: str | None = None,
                   group: str | None = None, all: bool = False) -> Response:
    with _pools(request) as service:
        return _outcomes(service.autostart(name, _scope(site, pod, host, group, all),
                                           on=body.enabled))


# ------------------------------------------------------------------ volumes


def pool_on_host(request: Request) -> Target:
    """scope_of for /hosts/{host}/pools/{pool}/...: the pool on that hypervisor."""
    p = request.path_params
    return Target.on_host("pool", f"{p['host']}/{p['pool']}", host_record(request, p["host"]))


VOLUMES = "/hosts/{host}/pools/{pool}/volumes"


@router.get(VOLUMES, name="volume.list")
def list_volumes(request: Request, host: str, pool: str,
                 caller: Annotated[Principal, require("storage.read", pool_on_host)]
                 ) -> Response:
    """`virsh vol-list --details`, after a refresh."""
    with _volumes(request) as service:
        return answer({"items": [v.as_json() for v in service.list_volumes(host, pool)]})


@router.get(VOLUMES + "/{volume}", name="volume.info")
def volume_info(request: Request, host: str, pool: str, volume: str,
                caller: Annotated[Principal, require("storage.read", pool_on_host)]
                ) -> Response:
    """`virsh vol-info`, with its format, backing file, and whether its pod shares it."""
    from virtfleet.fleet.volumes import VolumeRef

    with _volumes(request) as service:
        return answer(service.info(VolumeRef(host, pool, volume)).as_json())


@router.post(VOLUMES, name="volume.create", status_code=201)
def create_volume(request: Request, host: str, pool: str, body: VolumeBody,
                  caller: Annotated[Principal, require("storage.manage", pool_on_host)]
                  ) -> Response:
    """`virsh vol-create-as`; refused if it could outgrow the pool's free space."""
    from virtfleet.fleet.volumes import CreateVolume

    size = parse_bytes("size", body.size)
    with _volumes(request) as service:
        made = service.create(CreateVolume(host, pool, body.name, size, body.format))
    return answer(made.as_json(), 201)


@router.post(VOLUMES + "/{volume}/clone", name="volume.clone", status_code=201)
def clone_volume(request: Request, host: str, pool: str, volume: str, body: VolumeCloneBody,
                 caller: Annotated[Principal, require("storage.manage", pool_on_host)]
                 ) -> Response:
    """`virsh vol-clone`: a full, independent copy."""
    from virtfleet.fleet.volumes import CloneVolume

    with _volumes(request) as service:
        made = service.clone(CloneVolume(host, pool, volume, body.new, body.to_pool))
    return answer(made.as_json(), 201)


@router.post(VOLUMES + "/{volume}/resize", name="volume.resize")
def resize_volume(request: Request, host: str, pool: str, volume: str, body: ResizeBody,
                  caller: Annotated[Principal, require("storage.manage", pool_on_host)]
                  ) -> Response:
    """`virsh vol-resize`: to `size`, or with `grow` by that much; smaller only with
    `shrink`."""
    from virtfleet.fleet.volumes import ResizeVolume

    size = parse_bytes("size", body.size)
    with _volumes(request) as service:
        done = service.resize(ResizeVolume(host, pool, volume, size, body.grow, body.shrink))
    return answer(done.as_json())


@router.delete(VOLUMES + "/{volume}", name="volume.delete")
def delete_volume(request: Request, host: str, pool: str, volume: str,
                  caller: Annotated[Principal, require("storage.manage", pool_on_host)],
                  force: bool = False) -> Response:
    """`virsh vol-delete`; refused while a VM has it as a disk (unless `force`) or another
    volume reads through it."""
    from virtfleet.fleet.volumes import DeleteVolume

    with _volumes(request) as service:
        return answer(service.delete(DeleteVolume(host, pool, volume, force)).as_json())


@router.get("/vms/{name}/disks", name="vm.disks")
def vm_disks(request: Request, name: str,
             caller: Annotated[Principal, require("storage.read", vm)],
             host: str | None = None) -> Response:
    """Where each disk of the VM lives, and whether its pod shares that pool."""
    with _volumes(request) as service:
        return answer(service.disks(name, host).as_json())
