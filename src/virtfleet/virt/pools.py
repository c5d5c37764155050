"""Storage pool lifecycle and volume upkeep on one hypervisor: `virsh pool-*` and `vol-*`.

storage.py makes, clones, copies and removes volumes; this module defines, builds,
starts, refreshes, stops and removes the pools that hold them, and resizes and describes volumes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import libvirt

from virtfleet.errors import Conflict, InvalidInput, NotFound
from virtfleet.validate import check_name
from virtfleet.virt import storage
from virtfleet.virt.errors import libvirt_errors, or_none
from virtfleet.virt.host import Host
from virtfleet.xml.storage import Pool, Volume

# virsh's words for pool states (virsh-pool.c).
POOL_STATES = {
    libvirt.VIR_STORAGE_POOL_INACTIVE: "inactive",
    libvirt.VIR_STORAGE_POOL_BUILDING: "building",
    libvirt.VIR_STORAGE_POOL_RUNNING: "running",
    libvirt.VIR_STORAGE_POOL_DEGRADED: "degraded",
    libvirt.VIR_STORAGE_POOL_INACCESSIBLE: "inaccessible",
}
# Types whose build writes to a device (mkfs, a partition table, pvcreate): never over data.
_BUILD_WRITES = ("fs", "disk", "logical")


@dataclass(frozen=True)
class PoolDetail:
    """`virsh pool-info` plus where the pool's storage comes from."""

    name: str
    uuid: str
    type: str
    state: str
    persistent: bool
    autostart: bool
    capacity_bytes: int
    allocation_bytes: int
    available_bytes: int
    target: str | None
    source: str | None  # filer:/export, iqn, device, vg: see Pool.source_text
    source_format: str | None

    @property
    def active(self) -> bool:
        return self.state == "running"

    def as_json(self) -> dict[str, object]:
        return {**self.__dict__, "active": self.active}


@dataclass(frozen=True)
class VolumeDetail:
    """`virsh vol-info` plus format and backing file."""

    name: str
    pool: str
    path: str
    type: str | None
    format: str | None
    capacity_bytes: int
    allocation_bytes: int
    backing_path: str | None

    def as_json(self) -> dict[str, object]:
        return dict(self.__dict__)


def _detail(p: Any) -> PoolDetail:
    doc = Pool.parse(p.XMLDesc(0))
    state, capacity, allocation, available = p.info()
    return PoolDetail(
        name=str(p.name()), uuid=str(p.UUIDString()), type=doc.type or "",
        state=POOL_STATES.get(state, "unknown"), persistent=bool(p.isPersistent()),
        autostart=bool(p.autostart()) if p.isPersistent() else False,
        capacity_bytes=int(capacity), allocation_bytes=int(allocation),
        available_bytes=int(available), target=doc.target_path, source=doc.source_text(),
        source_format=doc.source_format)


def _lookup(host: Host, name: str) -> Any:
    check_name("pool", name)
    with libvirt_errors(host.label):
        p = or_none(lambda: host.conn.storagePoolLookupByName(name),
                    libvirt.VIR_ERR_NO_STORAGE_POOL)
    if p is None:
        raise NotFound(f"has no storage pool {name!r}", host=host.label)
    return p


def list_pools(host: Host) -> list[PoolDetail]:
    with libvirt_errors(host.label):
        return sorted((_detail(p) for p in host.conn.listAllStoragePools(0)),
                      key=lambda d: d.name)


def pool_info(host: Host, name: str) -> PoolDetail:
    p = _lookup(host, name)
    with libvirt_errors(host.label):
        return _detail(p)


def define_pool(host: Host, doc: Pool) -> PoolDetail:
    """Define a persistent pool (not started). Conflict if the name is taken on this host."""
    name = check_name("name", doc.name or "")
    with libvirt_errors(host.label):
        if or_none(lambda: host.conn.storagePoolLookupByName(name),
                   libvirt.VIR_ERR_NO_STORAGE_POOL) is not None:
            raise Conflict(f"storage pool {name!r} already exists", host=host.label)
        return _detail(host.conn.storagePoolDefineXML(doc.to_xml(), 0))


def build_pool(host: Host, name: str, overwrite: bool = False) -> PoolDetail:
    """`virsh pool-build`: make the directory, or format the device. A device that already
    holds a filesystem, label or volume group is left alone unless `overwrite`."""
    p = _lookup(host, name)
    with libvirt_errors(host.label):
        kind = Pool.parse(p.XMLDesc(0)).type or ""
        flags = 0
        if kind in _BUILD_WRITES:
            flags = (libvirt.VIR_STORAGE_POOL_BUILD_OVERWRITE if overwrite
                     else libvirt.VIR_STORAGE_POOL_BUILD_NO_OVERWRITE)
        try:
            p.build(flags)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_STORAGE_POOL_BUILT:
                raise
            raise Conflict(f"storage pool {name!r}: {exc.get_error_message()}; left as it is "
                           "(overwrite to format it anyway)", host=host.label) from None
        return _detail(p)


def start_pool(host: Host, name: str) -> PoolDetail:
    """`virsh pool-start`: mount, log in, activate the VG, scan volumes."""
    p = _lookup(host, name)
    with libvirt_errors(host.label):
        if p.isActive():
            raise Conflict(f"storage pool {name!r} is already active", host=host.label)
        p.create(0)
        return _detail(p)


def refresh_pool(host: Host, name: str) -> PoolDetail:
    p = _lookup(host, name)
    with libvirt_errors(host.label):
        p.refresh(0)
        return _detail(p)


def destroy_pool(host: Host, name: str) -> PoolDetail:
    """`virsh pool-destroy`: stop (unmount, log out); the data stays."""
    p = _lookup(host, name)
    with libvirt_errors(host.label):
        if not p.isActive():
            raise Conflict(f"storage pool {name!r} is not active", host=host.label)
        p.destroy()
        return _detail(p)


def undefine_pool(host: Host, name: str) -> None:
    """`virsh pool-undefine` of a stopped pool: only the definition goes, never the data."""
    p = _lookup(host, name)
    with libvirt_errors(host.label):
        if p.isActive():
            raise Conflict(f"storage pool {name!r} is active; destroy it first", host=host.label)
        p.undefine()


def set_autostart(host: Host, name: str, on: bool) -> PoolDetail:
    p = _lookup(host, name)
    with libvirt_errors(host.label):
        p.setAutostart(1 if on else 0)
        return _detail(p)


# -- volumes -----------------------------------------------------------------------------------

def check_volume_name(field: str, name: str) -> str:
    """A new volume's name: a file name in its pool, never a path, by the common name rule."""
    if "/" in name:
        raise InvalidInput(field, f"{name!r} must be a plain name without '/'")
    return check_name(field, name)


def check_volume_ref(field: str, name: str) -> str:
    """An existing volume's name: other tools make names virtfleet would not (spaces, '+'),
    so a lookup only refuses what could be read as a path."""
    if not name or "/" in name or "\x00" in name or len(name) > 255:
        raise InvalidInput(field, f"{name!r} must be a plain name without '/' (at most 255 "
                           "characters)")
    return name


def _vol(host: Host, pool_name: str, name: str) -> Any:
    """The volume; a pool that does not list it is refreshed once first, since another
    hypervisor of the pod (or another tool) may have made it on storage they share."""
    p = _lookup(host, pool_name)
    check_volume_ref("volume", name)
    with libvirt_errors(host.label):
        found = _vol_named(p, name)
        if found is None and p.isActive():
            p.refresh(0)
            found = _vol_named(p, name)
    if found is None:
        raise NotFound(f"pool {pool_name!r} has no volume {name!r}", host=host.label)
    return found


def _vol_named(p: Any, name: str) -> Any | None:
    return or_none(lambda: p.storageVolLookupByName(name), libvirt.VIR_ERR_NO_STORAGE_VOL)


def _vol_detail(pool_name: str, v: Any) -> VolumeDetail:
    doc = Volume.parse(v.XMLDesc(0))
    return VolumeDetail(name=str(v.name()), pool=pool_name, path=str(v.path()), type=doc.type,
                        format=doc.format, capacity_bytes=int(doc.capacity_bytes or 0),
                        allocation_bytes=int(doc.allocation_bytes or 0),
                        backing_path=doc.backing_path)


def volume_info(host: Host, pool_name: str, name: str) -> VolumeDetail:
    v = _vol(host, pool_name, name)
    with libvirt_errors(host.label):
        return _vol_detail(pool_name, v)


def list_volumes(host: Host, pool_name: str) -> list[VolumeDetail]:
    p = _lookup(host, pool_name)
    with libvirt_errors(host.label):
        if not p.isActive():
            raise Conflict(f"storage pool {pool_name!r} is not active", host=host.label)
        p.refresh(0)  # files made by other tools show up
        return sorted((_vol_detail(pool_name, v) for v in p.listAllVolumes(0)),
                      key=lambda d: d.name)


def resize_volume(host: Host, pool_name: str, name: str, capacity_bytes: int,
                  shrink: bool = False) -> VolumeDetail:
    """`virsh vol-resize` to an absolute size. Shrinking loses data, so it needs `shrink`;
    growth beyond the pool's free space is refused before libvirt is asked."""
    v = _vol(host, pool_name, name)
    info = pool_info(host, pool_name)
    with libvirt_errors(host.label):
        current = _vol_detail(pool_name, v)
        if capacity_bytes < current.capacity_bytes and not shrink:
            raise InvalidInput("size_bytes", f"{capacity_bytes} bytes is smaller than the "
                               f"volume's {current.capacity_bytes}; shrinking loses data: add "
                               "`shrink`")
        grow = capacity_bytes - current.capacity_bytes
        if grow > info.available_bytes:
            raise InvalidInput("size_bytes", f"growing by {grow // 2**20} MiB is more than the "
                               f"{info.available_bytes // 2**20} MiB free in pool "
                               f"{pool_name!r}")
        v.resize(capacity_bytes, libvirt.VIR_STORAGE_VOL_RESIZE_SHRINK if shrink else 0)
        return _vol_detail(pool_name, v)


def delete_volume_named(host: Host, pool_name: str, name: str) -> None:
    """Remove a volume, unless another volume reads through it (a linked clone's template)."""
    v = _vol(host, pool_name, name)
    with libvirt_errors(host.label):
        path = str(v.path())
    users = storage.backed_by(host, path)
    if users:
        raise Conflict(f"volume {name!r} backs {len(users)} other volume(s) "
                       f"({', '.join(u.name for u in users[:3])}); delete those first",
                       host=host.label)
    with libvirt_errors(host.label):
        v.delete(0)


def volume_in_pool(host: Host, pool_name: str, name: str) -> storage.VolumeInfo:
    """storage.py's VolumeInfo for a volume named in a pool (for clone and download)."""
    path = volume_info(host, pool_name, name).path
    found = storage.volume_at(host, path)
    if found is None:
        raise NotFound(f"pool {pool_name!r} has no volume {name!r}", host=host.label)
    return found


def probe_writable(host: Host, pool_name: str) -> None:
    """Create and delete a 1 MiB volume: proves the pool (an NFS mount, say) takes writes."""
    name = f"virtfleet-probe-{uuid.uuid4().hex[:12]}"
    path = storage.create_volume(host, pool_name, name, 2**20, "raw")
    storage.delete_volume(host, path)
