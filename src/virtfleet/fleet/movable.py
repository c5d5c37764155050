"""What a VM needs from the hypervisor it moves to, and whether a given hypervisor has it.

Checked before anything moves, each answer a one-line reason: the VM itself can move (no
snapshots or managed-save image libvirt would strand, no passed-through device); the target
sees its disks at the same paths (pod-shared storage, or room to copy them into); it has the
libvirt networks and bridges its NICs use; its hypervisor can give the guest its CPU; it has
no domain of that name or UUID already; it is not in maintenance. Room (CPU, memory) is the
scheduler's and the claims' business (fleet/targets.py).

The same answers serve a restart elsewhere after a host failure: `needs_of` reads only the
domain's XML and the source's pools, both of which can come from a record of them.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lxml import etree

from virtfleet.errors import Conflict, InvalidInput, VirtfleetError
from virtfleet.fleet.podstorage import judge_sharing, pod_pool_name
from virtfleet.inventory.fleetfile import PodStorage
from virtfleet.inventory.records import HostRecord
from virtfleet.provision.migrate import CopyDisk
from virtfleet.virt import migration, networks, storage
from virtfleet.virt.guest import Guest
from virtfleet.virt.host import Host
from virtfleet.virt.pools import PoolDetail, list_pools
from virtfleet.xml.domain import Domain

# A copied disk keeps its file name; it must be a plain name the target pool can hold.
_SAFE_VOLUME = str.maketrans("", "", "/\\\0\n>,")


@dataclass(frozen=True)
class DiskNeed:
    dev: str  # target dev: vda
    path: str | None  # None: a network disk (RBD, iSCSI by URI): the same for every host
    device: str  # disk, cdrom, floppy, lun
    readonly: bool
    format: str | None  # qcow2, raw
    pool: PoolDetail | None  # the source's pool holding the file; None: in no pool
    capacity_bytes: int = 0  # what a copy must hold (asked only when copying is possible)
    backing: str | None = None  # the image a linked clone's file reads through to


@dataclass(frozen=True)
class NicNeed:
    kind: str  # network, bridge, direct
    source: str


@dataclass(frozen=True)
class VMNeeds:
    """One VM on its source, as much as deciding where it may go needs."""

    name: str
    uuid: str
    source: HostRecord
    flags: migration.DomainFlags
    vcpus: int
    memory_mib: int
    app: str | None  # its application group (virtfleet's metadata), if any
    disks: tuple[DiskNeed, ...]
    nvram: str | None
    nics: tuple[NicNeed, ...]
    passthrough: tuple[str, ...]  # hostdev descriptions: these pin a VM to its host
    cpu: str | None  # the <cpu> to compare, serialised; None: nothing to compare
    emulator: str | None
    arch: str | None
    machine: str | None
    virt_type: str | None


@dataclass(frozen=True)
class Fit:
    """One target's answer for one VM: `problem` is None if it can take the VM."""

    host: str
    problem: VirtfleetError | None
    copies: tuple[CopyDisk, ...] = ()
    shared_dirs: tuple[str, ...] = ()  # pod directories the disks share (libvirt can't tell)


@dataclass(frozen=True)
class Storages:
    """Each pod's declared shared storage (the fleet file), by pod name."""

    pods: Mapping[str, PodStorage | None] = field(default_factory=dict)


def needs_of(guest: Guest, record: HostRecord, seconds: float) -> VMNeeds:
    """Read the VM on its source: its definition, flags, disks and their pools."""
    flags = migration.domain_flags(guest, seconds)
    xml = (migration.live_xml(guest, seconds) if flags.active
           else migration.config_xml(guest, seconds))

    def capacity(dev: str) -> int:  # a file in no pool: ask QEMU
        return migration.disk_capacity(guest, dev, seconds)

    def host_cpu() -> str:  # the guest sees the source's own CPU: the target must offer it
        return etree.tostring(migration.host_cpu(guest.host, seconds), encoding="unicode")

    return _needs(Domain.parse(xml), guest.name, guest.uuid, record, flags, guest.host,
                  capacity if flags.active else None, host_cpu)


def needs_of_definition(xml: str, record: HostRecord, seen_from: Host) -> VMNeeds:
    """A shut-off VM from its recorded definition alone, its disks as `seen_from` sees them:
    what a restart elsewhere checks when the VM's own host is dead. A disk counts as shared
    only if it sits in a pool of `seen_from` that is its pod's shared storage."""
    dom = Domain.parse(xml)
    flags = migration.DomainFlags(active=False, persistent=True, autostart=False, snapshots=0,
                                  managed_save=False, paused_by_migration=False)
    # A cold boot takes whatever CPU the new host has: host-passthrough needs no compare.
    return _needs(dom, dom.name or "?", dom.uuid or "?", record, flags, seen_from, None, None)


def _needs(dom: Domain, name: str, uuid: str, record: HostRecord,
           flags: migration.DomainFlags, storage_host: Host,
           capacity: Callable[[str], int] | None,
           host_cpu: Callable[[], str] | None) -> VMNeeds:
    source_pools = list_pools(storage_host)
    disks = []
    for d in dom.devices.disks:
        dev, device = d.target_dev or "?", d.device or "disk"
        if d.type == "network":  # RBD, iSCSI by URI, NBD: every host reaches it the same way
            disks.append(DiskNeed(dev, None, device, d.readonly, d.format, None))
            continue
        if d.type == "volume":
            pool = next((p for p in source_pools if p.name == d.source_pool), None)
            disks.append(DiskNeed(dev, d.source_volume or "?", device, d.readonly, d.format,
                                  pool))
            continue
        path = d.source
        if path is None:
            continue  # an empty CD-ROM drive: nothing to see or copy
        vol = storage.volume_at(storage_host, path)
        pool = next((p for p in source_pools if vol is not None and p.name == vol.pool), None)
        size = vol.capacity_bytes if vol is not None else 0
        if vol is None and capacity is not None and not d.readonly:
            size = capacity(dev)
        disks.append(DiskNeed(dev, path, device, d.readonly, d.format, pool, size,
                              vol.backing_path if vol is not None else None))
    devices = dom.element.find("devices")
    passthrough = tuple(
        f"{el.tag} {el.get('type') or ''}".strip()
        for el in (devices if devices is not None else ())
        if el.tag == "hostdev" or (el.tag == "interface" and el.get("type") == "hostdev"))
    nics = tuple(NicNeed(i.type or "", (i.source_network if i.type == "network" else
                                       i.source_bridge if i.type == "bridge" else
                                       i.source_dev) or "")
                 for i in dom.devices.interfaces if i.type in ("network", "bridge", "direct"))
    cpu_el = dom.element.find("cpu")
    cpu: str | None = None
    if cpu_el is not None:
        mode = cpu_el.get("mode", "custom")
        if mode in ("host-passthrough", "maximum"):
            cpu = host_cpu() if host_cpu is not None else None
        elif mode == "custom" and cpu_el.find("model") is not None:
            cpu = etree.tostring(cpu_el, encoding="unicode")
        # host-model on a shut-off VM is worked out when it starts, on whichever host
    facts = dom.facts
    nvram = dom.element.find("os/nvram")
    os_type = dom.element.find("os/type")
    return VMNeeds(
        name=name, uuid=uuid, source=record, flags=flags,
        vcpus=max(1, dom.vcpus or 1), memory_mib=max(1, (dom.memory_kib or 1024) // 1024),
        app=facts.app if facts is not None else None, disks=tuple(disks),
        nvram=(nvram.text or "").strip() or None if nvram is not None else None,
        nics=nics, passthrough=passthrough, cpu=cpu, emulator=dom.devices.emulator,
        arch=os_type.get("arch") if os_type is not None else None,
        machine=os_type.get("machine") if os_type is not None else None,
        virt_type=dom.type)


def refusal(needs: VMNeeds, live: bool, copy_storage: bool) -> VirtfleetError | None:
    """Why this VM cannot move at all (whatever the target), or None."""
    who = f"{needs.name} on {needs.source.name}"
    f = needs.flags
    if not f.persistent:
        return Conflict(f"{who} is transient: virtfleet moves VMs defined on their host "
                        "(virsh define), so they stay defined where they land")
    if f.snapshots:
        return Conflict(f"{who} has {f.snapshots} snapshot(s): libvirt cannot migrate them; "
                        "delete them first (virtfleet snapshot delete)")
    if f.managed_save:
        return Conflict(f"{who} has a managed-save image on its host: start it, or remove "
                        "the image, before moving it")
    if needs.passthrough:
        return Conflict(f"{who} has a passed-through host device ({needs.passthrough[0]}), "
                        "which ties it to this host")
    if live and not f.active:
        return InvalidInput("mode", f"{who} is shut off: a live migration needs it running "
                            "(offline moves a shut-off VM)")
    if not live and f.active:
        return InvalidInput("mode", f"{who} is running: an offline migration moves a shut-off "
                            "VM (shut it down, or migrate it live)")
    return None


def _shared(disk: DiskNeed, needs: VMNeeds, target: HostRecord, target_pools: list[PoolDetail],
            pods: Storages) -> tuple[bool, str]:
    """Whether `target` sees the disk's file as the same storage, and why (not)."""
    if disk.pool is None:
        return False, "in no storage pool of its host"
    verdict = judge_sharing(disk.pool, pods.pods.get(needs.source.pod),
                            {target.name: target_pools})
    if verdict.shared and disk.pool.type == "dir" and target.pod != needs.source.pod:
        # A directory is believed shared only within the pod that declares it.
        theirs = pods.pods.get(target.pod)
        mine = pods.pods.get(needs.source.pod)
        if theirs is None or mine is None or (theirs.type, theirs.target) != (
                mine.type, mine.target):
            return False, (f"the shared directory of pod {needs.source.pod}, which pod "
                           f"{target.pod} does not share")
    if verdict.shared:
        return True, verdict.basis
    return False, f"in pool {disk.pool.name!r} ({verdict.basis})"


def _copy_into(disk: DiskNeed, needs: VMNeeds, target: HostRecord,
               target_pools: list[PoolDetail], pods: Storages) -> PoolDetail | None:
    """The target pool a copied disk goes into: its pod's shared pool, else a pool at the same
    directory as the source's (a local 'default' on both)."""
    declared = pods.pods.get(target.pod)
    by_name = {p.name: p for p in target_pools if p.active}
    if declared is not None:
        pod_pool = by_name.get(pod_pool_name(target.pod, declared))
        if pod_pool is not None:
            return pod_pool
    if disk.pool is not None and disk.pool.target is not None:
        for p in by_name.values():
            if p.target == disk.pool.target and p.type in ("dir", "netfs", "fs"):
                return p
    return None


def check(target: Host, record: HostRecord, needs: VMNeeds, *, copy_storage: bool,
          pods: Storages, seconds: float, restart: bool = False) -> Fit:
    """Whether `target` can take the VM, and what a move there copies. `restart`: HA asks,
    to start the VM there after its own host failed (nothing can be copied then)."""
    to = record.name
    if record.name == needs.source.name:
        return Fit(to, InvalidInput("to", f"{needs.name} is already on {to}"))
    if record.maintenance:
        return Fit(to, Conflict(f"{to} is in maintenance: nothing is placed on it until "
                                f"'virtfleet host activate {to}'"))
    try:
        for d in target.list_domains():
            if d.name == needs.name or d.uuid == needs.uuid:
                return Fit(to, Conflict(f"{to} already has a domain {d.name!r} ({d.uuid}) "
                                        f"in the way of {needs.name}"))
        target_pools = list_pools(target)
        copies: list[CopyDisk] = []
        shared_dirs: set[str] = set()
        room: dict[str, int] = defaultdict(int)
        for disk in needs.disks:
            if disk.path is None:
                continue  # a network disk: every host reaches it the same way
            same, why = _shared(disk, needs, record, target_pools, pods)
            if same:
                if disk.pool is not None and disk.pool.type == "dir" and disk.pool.target:
                    shared_dirs.add(disk.pool.target)
                continue
            what = f"{needs.name}'s {disk.device} {disk.dev} ({disk.path}) is {why}"
            if restart:
                return Fit(to, InvalidInput("copy_storage", f"{what}: {to} cannot see it (put "
                                            "its disks on the pod's shared storage, so another "
                                            "host can restart it)"))
            if not copy_storage:
                return Fit(to, InvalidInput("copy_storage", f"{what}: {to} cannot see it "
                                            "(migrate with copy-storage to copy it, or put it "
                                            "on the pod's shared storage)"))
            if disk.readonly or disk.device != "disk":
                return Fit(to, InvalidInput("copy_storage", f"{what}: a read-only {disk.device}"
                                            " is not copied; eject it or share it first"))
            if not needs.flags.active and disk.backing is not None:
                # An offline copy moves the file alone; QEMU's live copy holds the whole chain.
                return Fit(to, InvalidInput("copy_storage", f"{what}: a linked clone of "
                                            f"{disk.backing}, which an offline copy would "
                                            "leave behind; start it and migrate it live with "
                                            "copy-storage (the copy then holds its whole "
                                            "image), or share its template's image first"))
            into = _copy_into(disk, needs, record, target_pools, pods)
            if into is None or into.target is None:
                return Fit(to, InvalidInput("copy_storage", f"{what}: {to} has no pool to copy "
                                            "it into (its pod's shared pool, or one at the same "
                                            "directory)"))
            name = posixpath.basename(disk.path)
            if not name or name.translate(_SAFE_VOLUME) != name:
                return Fit(to, InvalidInput("copy_storage", f"{what}: its file name cannot "
                                            "name a volume"))
            path = posixpath.join(into.target, name)
            if storage.volume_at(target, path) is not None:
                return Fit(to, Conflict(f"{to} already has {path} in the way of {what}"))
            room[into.name] += disk.capacity_bytes
            if room[into.name] > into.available_bytes:
                return Fit(to, InvalidInput("copy_storage", f"{to}: pool {into.name!r} has "
                                            f"{into.available_bytes // 2**20} MiB free, "
                                            f"{needs.name}'s disks need "
                                            f"{room[into.name] // 2**20} MiB"))
            copies.append(CopyDisk(disk.dev, disk.path, into.name, name, path,
                                   disk.capacity_bytes, disk.format or "raw"))
        if needs.nvram is not None and not _nvram_shared(needs, record, target_pools, pods):
            return Fit(to, Conflict(f"{needs.name}'s UEFI NVRAM {needs.nvram} is not on storage "
                                    f"{to} shares; virtfleet does not copy NVRAM files"))
        problem = _network_problem(target, to, needs)
        if problem is not None:
            return Fit(to, problem)
        if needs.cpu is not None:
            why_not = migration.check_cpu(
                target, etree.fromstring(needs.cpu.encode()), emulator=needs.emulator,
                arch=needs.arch, machine=needs.machine, virt_type=needs.virt_type,
                seconds=seconds)
            if why_not is not None:
                return Fit(to, Conflict(f"{to} cannot give {needs.name} its CPU: {why_not} "
                                        "(give the pod's VMs a CPU model every host runs: "
                                        "virtfleet host cpu-baseline)"))
    except VirtfleetError as exc:
        return Fit(to, exc)
    return Fit(to, None, tuple(copies), tuple(sorted(shared_dirs)))


def _nvram_shared(needs: VMNeeds, record: HostRecord, target_pools: list[PoolDetail],
                  pods: Storages) -> bool:
    """Whether the NVRAM file sits in the directory of a pool the target shares."""
    assert needs.nvram is not None
    nvram = posixpath.normpath(needs.nvram)
    for d in needs.disks:
        if d.pool is not None and d.pool.target and nvram.startswith(
                posixpath.normpath(d.pool.target) + "/"):
            return _shared(d, needs, record, target_pools, pods)[0]
    return False


def _network_problem(target: Host, to: str, needs: VMNeeds) -> VirtfleetError | None:
    if not needs.nics:
        return None
    nets = {n.name: n for n in networks.list_networks(target)}
    ifaces: set[str] | None = None
    for nic in needs.nics:
        if nic.kind == "network":
            net = nets.get(nic.source)
            if net is None:
                return InvalidInput("to", f"{to} has no libvirt network {nic.source!r}, which "
                                    f"{needs.name}'s NIC uses (see 'virtfleet net list --host "
                                    f"{to}')")
            if not net.active:
                return InvalidInput("to", f"{to}'s libvirt network {nic.source!r}, which "
                                    f"{needs.name}'s NIC uses, is not active")
            continue
        if ifaces is None:
            listed = networks.host_interfaces(target)
            if listed is None:
                return None  # this libvirt cannot list interfaces: the target checks itself
            ifaces = set(listed) | {n.bridge for n in nets.values()
                                    if n.active and n.bridge and n.mode != "bridge"}
        if nic.source not in ifaces:
            kind = "bridge" if nic.kind == "bridge" else "interface"
            return InvalidInput("to", f"{to} has no {kind} {nic.source!r}, which "
                                f"{needs.name}'s NIC uses (see 'virtfleet host check {to}')")
    return None
