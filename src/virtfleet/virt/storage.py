"""Storage pools and volumes on one hypervisor: find a pool, make and remove volumes, and keep
paths inside their pools."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import libvirt

from virtfleet.errors import Conflict, InvalidInput, NotFound
from virtfleet.virt.errors import libvirt_errors
from virtfleet.virt.host import Host
from virtfleet.xml.storage import Pool, Volume


@dataclass(frozen=True)
class PoolInfo:
    name: str
    type: str
    path: str | None  # where its volumes appear as files, if it has a target path
    active: bool
    capacity_bytes: int
    available_bytes: int


def pools(host: Host) -> list[PoolInfo]:
    out = []
    with libvirt_errors(host.label):
        for p in host.conn.listAllStoragePools(0):
            doc = Pool.parse(p.XMLDesc(0))
            active = bool(p.isActive())
            _state, capacity, _alloc, available = p.info() if active else (0, 0, 0, 0)
            out.append(PoolInfo(str(p.name()), doc.type or "", doc.target_path, active,
                                int(capacity), int(available)))
    return out


def pool(host: Host, name: str) -> PoolInfo:
    for p in pools(host):
        if p.name == name:
            if not p.active:
                raise Conflict(f"{host.label}: storage pool {name!r} is not active")
            return p
    raise NotFound(f"{host.label}: has no storage pool {name!r}")


def confine(host: Host, field: str, path: str) -> PoolInfo:
    """The pool whose directory holds `path`; InvalidInput if the path is outside every pool.

    Paths from users never name arbitrary files on a hypervisor: an image must live in one of
    its storage pools, where the operator decided VM files belong.
    """
    norm = posixpath.normpath(path)
    for p in pools(host):
        if p.path and p.active and norm.startswith(posixpath.normpath(p.path) + "/"):
            return p
    raise InvalidInput(field, f"{path!r} is not inside any active storage pool of "
                       f"{host.label}")


def create_volume(host: Host, pool_name: str, name: str, capacity_bytes: int, fmt: str) -> str:
    """A new empty volume; returns its path. Conflict if the name is taken; refuses a size
    beyond the pool's free space."""
    info = pool(host, pool_name)
    if capacity_bytes > info.available_bytes and fmt == "raw":
        raise InvalidInput("--disk size", f"{capacity_bytes // 2**20} MiB is more than the "
                           f"{info.available_bytes // 2**20} MiB free in pool {pool_name!r}")
    vol = Volume()
    vol.name = name
    vol.capacity_bytes = capacity_bytes
    vol.capacity_unit = "bytes"
    vol.format = fmt
    with libvirt_errors(host.label):
        p = host.conn.storagePoolLookupByName(pool_name)
        try:
            p.storageVolLookupByName(name)
            raise Conflict(f"{host.label}: volume {name!r} already exists in pool {pool_name!r}")
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise
        made = p.createXML(vol.to_xml(), 0)
        return str(made.path())


def delete_volume(host: Host, path: str) -> None:
    with libvirt_errors(host.label):
        host.conn.storageVolLookupByPath(path).delete(0)
