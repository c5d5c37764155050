"""The volume service: volumes in one storage pool of one hypervisor (virsh's vol-* verbs), and
where a VM's disks live and whether its pod shares them.

    with VolumeService(store) as service:
        made = service.create(CreateVolume("hv1", "images", "data.qcow2", 10 * 2**30))
        service.delete(DeleteVolume("hv1", "images", "data.qcow2"))
        where = service.disks("web01")

A volume is named, or given by its path, which must lie directly in the pool's directory:
nothing outside a pool is ever read, written or removed. Nothing a VM or another volume still
uses is deleted without being told to.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path

from virtfleet.errors import Conflict, InvalidInput
from virtfleet.fleet.images import info as image_info
from virtfleet.fleet.podstorage import Sharing, judge_sharing, same_pool, shareable
from virtfleet.fleet.scope import Answers, FleetService
from virtfleet.inventory.fleetfile import PodStorage
from virtfleet.inventory.records import HostRecord
from virtfleet.units import human_bytes
from virtfleet.validate import check_name
from virtfleet.virt import pools, storage
from virtfleet.virt.guest import Guest
from virtfleet.virt.host import Host
from virtfleet.virt.pools import VolumeDetail as VolumeDetail  # what the service answers with
from virtfleet.virt.pools import check_volume_name, check_volume_ref

FORMATS = ("raw", "qcow2")


# ------------------------------------------------------------------ requests


@dataclass(frozen=True)
class VolumeRef:
    """A volume of pool `pool` on hypervisor `host`: its name, or its path in the pool."""

    host: str
    pool: str
    volume: str


@dataclass(frozen=True)
class CreateVolume(VolumeRef):
    """An empty volume; `volume` is the new one's name."""

    size_bytes: int
    format: str = "qcow2"


@dataclass(frozen=True)
class CloneVolume(VolumeRef):
    """A full, independent copy of `volume` named `new`, in `to_pool` (default: the same)."""

    new: str
    to_pool: str | None = None


@dataclass(frozen=True)
class DeleteVolume(VolumeRef):
    """`force`: even if a VM has it as a disk (the VM loses that disk). A volume another one
    reads through (a linked clone's template) is never deleted."""

    force: bool = False


@dataclass(frozen=True)
class ResizeVolume(VolumeRef):
    """To `size_bytes`, or with `grow` by that much; smaller only with `shrink`."""

    size_bytes: int
    grow: bool = False
    shrink: bool = False


@dataclass(frozen=True)
class UploadVolume(VolumeRef):
    """A new volume named `volume` holding local file `file` (holes kept)."""

    file: str


@dataclass(frozen=True)
class DownloadVolume(VolumeRef):
    """The volume's content to `file`, a new local file (holes kept)."""

    file: str


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class VolumeReport:
    """A volume, and whether its pool is the same storage on every hypervisor of its pod."""

    volume: VolumeDetail
    sharing: Sharing

    def as_json(self) -> dict[str, object]:
        return {**self.volume.as_json(), "shared_in_pod": self.sharing.shared,
                "sharing": self.sharing.basis}


@dataclass(frozen=True)
class DiskPlace:
    """One disk of a VM: the pool holding it (None: in no pool) and whether its pod shares
    that pool (the condition for live migration and restart elsewhere in the pod)."""

    disk: str
    pool: str | None
    shared_in_pod: bool
    sharing: str

    def as_json(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class VMDisks:
    vm: str
    host: str
    disks: tuple[DiskPlace, ...]

    @property
    def all_shared_in_pod(self) -> bool:
        return bool(self.disks) and all(d.shared_in_pod for d in self.disks)

    def as_json(self) -> dict[str, object]:
        return {"vm": self.vm, "host": self.host, "disks": [d.as_json() for d in self.disks],
                "all_shared_in_pod": self.all_shared_in_pod}


@dataclass(frozen=True)
class Layer:
    """One image of a disk's backing chain: its path, format and pool (None: in no pool)."""

    path: str
    format: str | None
    pool: str | None

    def as_json(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class DiskChain:
    """A VM's disk and the images below it, nearest first (a linked clone's: its template's
    image). `source` says where the chain was read: libvirt's <backingStore> of the running
    domain, or the storage pools' volumes (each one's backing file, followed)."""

    target: str | None
    path: str
    format: str | None
    chain: tuple[Layer, ...]
    source: str  # "domain" or "volumes"

    def as_json(self) -> dict[str, object]:
        return {"target": self.target, "path": self.path, "format": self.format,
                "chain": [x.as_json() for x in self.chain], "source": self.source}


# ------------------------------------------------------------------ the service


class VolumeService(FleetService):
    """Each call works on one hypervisor, over one connection (and asks the other hosts of
    its pod where sharing is the question). Without a `pool`, the service opens its own
    connections and close() ends them."""

    def _host(self, name: str) -> tuple[HostRecord, Host]:
        check_name("host", name)
        [record] = self.store.hypervisors(host=name)  # NotFound if it is not in the inventory
        return record, self.pool.get(record)

    def _name_in(self, h: Host, pool_name: str, ref: str) -> str:
        """A volume named, or given by a path that must lie directly in the pool's target."""
        if "/" not in ref:
            return check_volume_ref("volume", ref)
        target = pools.pool_info(h, pool_name).target
        norm = posixpath.normpath(ref)
        if not target or posixpath.dirname(norm) != posixpath.normpath(target) or ".." in ref:
            raise InvalidInput("volume", f"{ref!r} is not inside pool {pool_name!r} "
                               f"({target or 'no target path'})")
        return posixpath.basename(norm)

    def _declared(self, pod: str) -> PodStorage | None:
        """The pod's shared storage as the fleet file declares it."""
        return next((p.storage for s in self.store.fleet().sites for p in s.pods
                     if p.name == pod), None)

    def _peers(self, me: HostRecord) -> Answers[list[pools.PoolDetail]]:
        """Every other hypervisor of `me`'s pod, and its pools."""
        others = [r for r in self.store.hypervisors(pod=me.pod) if r.name != me.name]
        return self.ask(others, "pool-list", pools.list_pools)

    def _sharing(self, me: HostRecord, h: Host, pool_name: str) -> Sharing:
        """Whether `pool_name` on `h` is the same storage on every other host of its pod."""
        seen = {r.host.name: r.value for r in self._peers(me).results}
        return judge_sharing(pools.pool_info(h, pool_name), self._declared(me.pod), seen)

    # -- reading ---------------------------------------------------------------------------

    def list_volumes(self, host: str, pool: str) -> list[VolumeDetail]:
        """`virsh vol-list --details`, after a refresh (files other tools made show up)."""
        _me, h = self._host(host)
        return pools.list_volumes(h, pool)

    def info(self, ref: VolumeRef) -> VolumeReport:
        """`virsh vol-info` plus format, backing file, and whether the pod shares the pool."""
        me, h = self._host(ref.host)
        volume = pools.volume_info(h, ref.pool, self._name_in(h, ref.pool, ref.volume))
        return VolumeReport(volume, self._sharing(me, h, ref.pool))

    def disks(self, vm: str, host: str | None = None) -> VMDisks:
        """Where each disk of VM `vm` lives (found anywhere in the fleet, or on `host`)."""
        from virtfleet.fleet.locate import locate_vm

        check_name("vm", vm)
        record = locate_vm(vm, self.store, self.pool, host=host)
        h = self.pool.get(record)
        places = []
        for path in Guest.lookup(h, vm).disk_sources():
            found = storage.volume_at(h, path)
            if found is None:
                places.append(DiskPlace(path, None, False, "not in any storage pool"))
                continue
            s = self._sharing(record, h, found.pool)
            places.append(DiskPlace(path, found.pool, s.shared, s.basis))
        return VMDisks(vm, record.name, tuple(places))

    def chains(self, vm: str, host: str | None = None) -> list[DiskChain]:
        """Each disk of VM `vm` with its backing chain: libvirt's own (a running domain's
        <backingStore>), else each volume's backing file followed through the host's pools,
        as far as MAX_CHAIN images and no further than a file no pool holds."""
        from virtfleet.fleet.locate import locate_vm
        from virtfleet.xml.domain import MAX_CHAIN

        check_name("vm", vm)
        record = locate_vm(vm, self.store, self.pool, host=host)
        h = self.pool.get(record)
        out = []
        for d in Guest.lookup(h, vm).domain().devices.disks:
            if d.source is None or d.device not in (None, "disk"):
                continue
            listed = d.backing_store
            if listed:
                layers = tuple(Layer(p, f, None) for p, f in listed)
                out.append(DiskChain(d.target_dev, d.source, d.format, layers, "domain"))
                continue
            found: list[Layer] = []
            vol = storage.volume_at(h, d.source) if d.type in (None, "file") else None
            while vol is not None and vol.backing_path and len(found) < MAX_CHAIN:
                below = storage.volume_at(h, vol.backing_path)
                found.append(Layer(vol.backing_path, below.format if below else None,
                                   below.pool if below else None))
                vol = below
            out.append(DiskChain(d.target_dev, d.source, d.format, tuple(found), "volumes"))
        return out

    # -- changing --------------------------------------------------------------------------

    def create(self, req: CreateVolume) -> VolumeDetail:
        """`virsh vol-create-as`: refused if it could outgrow the pool's free space (a thin
        qcow2 that fills its pool pauses its VM)."""
        check_volume_name("volume", req.volume)
        if req.format not in FORMATS:
            raise InvalidInput("format", f"{req.format!r} is not one of {', '.join(FORMATS)}")
        if req.size_bytes <= 0:
            raise InvalidInput("size_bytes", "must be greater than zero")
        _me, h = self._host(req.host)
        storage.check_fits(req.pool, pools.pool_info(h, req.pool).available_bytes,
                           req.size_bytes, "size_bytes")
        storage.create_volume(h, req.pool, req.volume, req.size_bytes, req.format,
                              field="size_bytes")
        return pools.volume_info(h, req.pool, req.volume)

    def clone(self, req: CloneVolume) -> VolumeDetail:
        """`virsh vol-clone`: a full, independent copy (reflink where the filesystem can)."""
        check_volume_name("new", req.new)
        _me, h = self._host(req.host)
        src = pools.volume_in_pool(h, req.pool, self._name_in(h, req.pool, req.volume))
        dest = req.to_pool or req.pool
        free = pools.pool_info(h, dest).available_bytes
        if src.capacity_bytes > free and (src.format or "raw") == "raw":
            raise InvalidInput("new", f"a copy of {human_bytes(src.capacity_bytes)} is more "
                               f"than the {human_bytes(free)} free in pool {dest!r}")
        storage.clone_volume(h, dest, src, req.new)
        return pools.volume_info(h, dest, req.new)

    def delete(self, req: DeleteVolume) -> VolumeDetail:
        """`virsh vol-delete`; refused while another volume uses it as its backing file, and,
        unless `force`, while a VM has it as a disk: on this host, or, on storage its pod
        shares, on any host of the pod (one that cannot be asked refuses it too)."""
        me, h = self._host(req.host)
        name = self._name_in(h, req.pool, req.volume)
        volume = pools.volume_info(h, req.pool, name)
        if not req.force:
            self._refuse_if_used(me, h, volume)
        pools.delete_volume_named(h, req.pool, name)
        return volume

    def _refuse_if_used(self, me: HostRecord, h: Host, volume: VolumeDetail) -> None:
        users = [(me.name, vm) for vm in storage.disk_users(h, volume.path, volume.pool,
                                                            volume.name)]
        mine = pools.pool_info(h, volume.pool)
        silent: list[str] = []
        if shareable(mine, self._declared(me.pod)) is not None:
            def on_peer(peer: Host) -> list[str]:  # the same file, if it has the same pool
                same = same_pool(mine, pools.list_pools(peer))
                return [] if same is None else storage.disk_users(
                    peer, volume.path, same.name, volume.name)

            others = [r for r in self.store.hypervisors(pod=me.pod) if r.name != me.name]
            asked = self.ask(others, "disk users", on_peer)
            users += [(r.name, vm) for r, vms in asked.values for vm in vms]
            silent = [f.host for f in asked.failures]
        if users:
            named = ", ".join(f"{vm} on {host}" for host, vm in users[:3])
            more = f" and {len(users) - 3} more" if len(users) > 3 else ""
            raise Conflict(f"volume {volume.name!r} is a disk of "
                           f"{'VMs' if len(users) > 1 else 'VM'} {named}{more}; undefine the "
                           "VM first, or give `force` to delete it anyway", host=me.name)
        if silent:
            raise Conflict(f"volume {volume.name!r} is on storage its pod shares, and "
                           f"{', '.join(silent)} did not answer whether a VM there has it as "
                           "a disk; give `force` to delete it anyway", host=me.name)

    def resize(self, req: ResizeVolume) -> VolumeDetail:
        """`virsh vol-resize`: to `size_bytes`, or with `grow` by that much."""
        if req.size_bytes <= 0:
            raise InvalidInput("size_bytes", "must be greater than zero")
        _me, h = self._host(req.host)
        name = self._name_in(h, req.pool, req.volume)
        target = req.size_bytes + (
            pools.volume_info(h, req.pool, name).capacity_bytes if req.grow else 0)
        return pools.resize_volume(h, req.pool, name, target, req.shrink)

    def upload(self, req: UploadVolume) -> VolumeDetail:
        """`virsh vol-upload` into a new volume, in the format the file is (holes kept)."""
        check_volume_name("volume", req.volume)
        local = Path(req.file)
        if not local.is_file():
            raise InvalidInput("file", f"{req.file!r} is not a file")
        fmt = image_info(req.file, field="file").format
        _me, h = self._host(req.host)
        free = pools.pool_info(h, req.pool).available_bytes
        if local.stat().st_size > free:
            raise InvalidInput("file", f"{human_bytes(local.stat().st_size)} is more than the "
                               f"{human_bytes(free)} free in pool {req.pool!r}")
        storage.upload(h, req.pool, req.volume, req.file, fmt)
        return pools.volume_info(h, req.pool, req.volume)

    def download(self, req: DownloadVolume) -> VolumeDetail:
        """`virsh vol-download` to a new local file, never over an existing one; nothing is
        left of the file if the copy fails."""
        local = Path(req.file)
        if local.exists():
            raise InvalidInput("file", f"{req.file!r} exists; give a new file name")
        if not local.absolute().parent.is_dir():
            raise InvalidInput("file", f"directory {str(local.absolute().parent)!r} does not "
                               "exist")
        _me, h = self._host(req.host)
        volume = pools.volume_info(h, req.pool, self._name_in(h, req.pool, req.volume))
        try:
            storage.download(h, volume.path, req.file)
        except BaseException:
            local.unlink(missing_ok=True)
            raise
        return volume

