"""`vm clone TEMPLATE NEW`: VMs from a sealed template, linked (a qcow2 overlay on the
template's image) or full (an independent copy), one or `--count N` at a time.

Each clone gets a new name, UUID and MACs, its hostname through the SMBIOS serial in
cloud-init's NoCloud form (so nothing is written into the image), and the room it needs is
claimed by the scheduler before anything is made, the whole batch's claims on the journal at
once. Each clone is its own journaled operation: one that fails is rolled back and reported,
the others stand; members an earlier run already made are reported, not made again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from virtfleet.design.policy import random_mac
from virtfleet.errors import Conflict, InvalidInput, VirtfleetError
from virtfleet.ha.definitions import requested_mark
from virtfleet.inventory.records import HostRecord, Made
from virtfleet.inventory.store import Store
from virtfleet.placement.models import PlacementRequest, VMShape
from virtfleet.placement.policy import Policy
from virtfleet.provision.create import (
    not_claimed,
    preflight_scope,
    remember_new,
    reserve_hosts,
    settle,
)
from virtfleet.provision.journal import Operation, begin, journaled
from virtfleet.provision.locks import vm_lock
from virtfleet.provision.preflight import Needs, NewVolume
from virtfleet.provision.reading import Reading
from virtfleet.provision.schedule import group_of
from virtfleet.provision.templates import Template, file_disks, find_template
from virtfleet.validate import check_name
from virtfleet.virt import storage
from virtfleet.virt.fanout import ConnectionPool, fan_out
from virtfleet.virt.guest import Guest
from virtfleet.virt.host import Host
from virtfleet.xml.domain import Domain, FleetFacts

MAX_COUNT = 10_000  # clones in one request


@dataclass(frozen=True)
class CloneRequest:
    template: str
    name: str
    count: int = 1
    linked: bool = True
    host: str | None = None
    pod: str | None = None
    site: str | None = None
    template_host: str | None = None
    pool: str | None = None  # full clones on another host: the pool to copy into
    start: bool = False
    ha: bool = False  # each clone restarted elsewhere in its pod when its host fails
    ha_priority: int | None = None  # with `ha`: 0-1000, higher first (default 100)

    def check(self) -> None:
        """What can be told without asking anyone; the names are checked as clone() starts."""
        if sum(x is not None for x in (self.host, self.pod, self.site)) > 1:
            raise InvalidInput("host/pod/site", "give at most one place for the clones")
        if not 1 <= self.count <= MAX_COUNT:
            raise InvalidInput("count", f"must be from 1 to {MAX_COUNT:,}")
        self.ha_mark()

    def ha_mark(self) -> int | None:
        """The restart priority each clone is marked HA with; None: not marked."""
        return requested_mark(self.ha, self.ha_priority)


@dataclass(frozen=True)
class Cloned:
    host: str
    name: str
    ok: bool
    result: str  # "cloned (linked)", "cloned and started", or the error
    uuid: str | None = None
    disks: tuple[str, ...] = ()
    macs: tuple[str, ...] = ()
    ha_priority: int | None = None  # an HA clone's restart priority; None: not HA

    def as_json(self) -> dict[str, object]:
        return {**self.__dict__, "disks": list(self.disks), "macs": list(self.macs)}


def _sees(tpl: Template) -> Callable[[Host], bool]:
    """Whether a hypervisor has the template's images at the same paths: its own host, or one
    sharing that storage (a pod's NFS pool); only there can a linked clone be made."""
    def check(h: Host) -> bool:
        return all(storage.volume_at(h, d.path) is not None for d in tpl.disks)
    return check


def _candidates(store: Store, pool: ConnectionPool, tpl: Template, req: CloneRequest
                ) -> set[str] | None:
    """Hosts a clone may go to (None: any in scope), with a clear error if none can."""
    if not req.linked:
        return None
    scope = store.hypervisors(host=req.host, pod=req.pod, site=req.site) if (
        req.host or req.pod or req.site) else store.hypervisors(pod=tpl.record.pod)
    seeing = {r.host.name for r in fan_out(scope, _sees(tpl), pool) if r.value}
    if not seeing:
        where = req.host or req.pod or req.site
        raise InvalidInput("linked", f"no hypervisor in {where} sees {tpl.name}'s image "
                           f"{tpl.disks[0].path} (it is on {tpl.record.name}, not on storage "
                           "shared with it); make full clones (`linked=false`) instead")
    return seeing


def member_names(req: CloneRequest) -> list[str]:
    return PlacementRequest(name=req.name, shape=VMShape(vcpus=1, memory_mib=1),
                            count=req.count).member_names()


def _needs(tpl: Template, req: CloneRequest, names: list[str],
           scope: list[HostRecord]) -> Needs:
    """What a host must have for a clone: the template's networks and bridges; for a full
    copy, its target pool with room for what is written (a raw image's whole capacity)."""
    # a clone's NICs are the template's: `networks[i]` names the clone's i-th NIC
    nics = list(enumerate(tpl.domain.devices.interfaces))
    nets = tuple((f"networks[{i}]", str(n.source_network)) for i, n in nics
                 if n.type == "network" and n.source_network)
    bridges = tuple((f"networks[{i}]", str(n.source_bridge)) for i, n in nics
                    if n.type == "bridge" and n.source_bridge)
    per_host: dict[str, tuple[NewVolume, ...]] = {}
    if not req.linked:
        for rec in scope:
            own = rec.name == tpl.record.name
            per_host[rec.name] = tuple(
                NewVolume("pool", req.pool or (src.pool if own else "default"),
                          src.capacity_bytes if (src.format or "raw") == "raw" else 0,
                          "pool", bool(req.pool))
                for src in tpl.disks)
    return Needs(names=tuple(names), networks=nets, bridges=bridges, host_volumes=per_host)


def clone(store: Store, pool: ConnectionPool, req: CloneRequest,
          progress: Callable[[Cloned], None] = lambda _c: None,
          policy: Policy | None = None) -> list[Cloned]:
    """Make the clones, one result each. Raises (nothing made, no room held) if the template,
    the names, what the hosts lack or the placement are wrong; after that a failed clone is
    only its result.

    Members that already exist as clones of this template (a run that was interrupted, then
    cleaned up) are finished work: they are reported, started if asked, and not made again,
    so running the same command again finishes the job."""
    req.check()
    check_name("name", req.name)
    names = member_names(req)
    for n in names:
        check_name("name", n)
    tpl = find_template(store, pool, req.template, host=req.template_host)
    vcpus, memory_kib = tpl.domain.vcpus or 1, tpl.domain.memory_kib or 1024
    pod = req.pod if (req.pod or req.site or req.host) else tpl.record.pod
    only = _candidates(store, pool, tpl, req)
    scope = store.hypervisors(host=req.host) if req.host else store.hypervisors(
        site=req.site, pod=pod)
    fitting, done, reading = preflight_scope(store, pool, _needs(tpl, req, names, scope),
                                             host=req.host, site=req.site, pod=pod,
                                             clones_of=tpl.name, only=only)
    todo = [n for n in names if n not in done]
    not_claimed(store, todo)
    out: list[Cloned] = []
    for vm in (n for n in names if n in done):
        out.append(_existing(store, pool, done[vm], vm, req.start))
        progress(out[-1])
    if todo:
        shape = VMShape(vcpus=vcpus, memory_mib=max(1, memory_kib // 1024))
        # The template's group, as a migration or an HA restart would keep it: a host
        # dedicated to a group (GroupIsolationFilter) takes no clone that has none.
        facts = tpl.domain.facts
        group = group_of(store, facts.app if facts is not None else None, tpl.record)
        request = PlacementRequest(name=req.name, names=tuple(todo), count=len(todo),
                                   site=req.site, pod=pod, shape=shape, group=group)
        _make(store, pool, tpl, req, request, fitting, reading, out, progress, policy)
    order = {n: i for i, n in enumerate(names)}
    return sorted(out, key=lambda c: order[c.name])


def _make(store: Store, pool: ConnectionPool, tpl: Template, req: CloneRequest,
          request: PlacementRequest, fitting: set[str], reading: Reading, out: list[Cloned],
          progress: Callable[[Cloned], None], policy: Policy | None) -> None:
    placed = reserve_hosts(store, pool, request, host=req.host, only=fitting, policy=policy,
                           reading=reading)
    # The batch's claims go on record at once: if the process is killed, `ops cleanup` gives
    # back the room of the clones never made (a finished clone's claim was settled already,
    # so releasing it again does nothing).
    names = [vm for vm, _rec in placed]
    batch = begin(store, "clone", f"{names[0]}..{names[-1]} from {tpl.name}"
                  if len(names) > 1 else f"{names[0]} from {tpl.name}",
                  tuple(Made("claim", rec.name, vm) for vm, rec in placed))
    try:
        taken: set[str] = set()
        for pod in sorted({rec.pod for _vm, rec in placed}):
            taken |= reading.macs(store.hypervisors(pod=pod))
        # Linked clones hold the template while they are made: `template delete` takes the
        # same lock, so it cannot remove the image between its check for clones and a new
        # overlay.
        held = (vm_lock(store, f"{tpl.record.name}/{tpl.name}", "linked clone") if req.linked
                else contextlib.nullcontext())
        with held:
            _each(store, pool, tpl, req, placed, taken, out, progress)
    except BaseException as exc:  # busy, Ctrl-C: the clones not made give their room back
        batch.roll_back(exc, pool)
        raise
    batch.end()


def _existing(store: Store, pool: ConnectionPool, host_name: str, vm: str,
              start: bool) -> Cloned:
    """A member an earlier run made: its row, and started if asked and not running."""
    [rec] = store.hypervisors(host=host_name)
    try:
        guest = Guest.lookup(pool.get(rec), vm)
        started = start and not guest.is_active()
        if started:
            guest.start()
        d = guest.domain()
    except VirtfleetError as exc:
        return Cloned(host_name, vm, False, exc.in_row(host_name, vm))
    return Cloned(host_name, vm, True, "already cloned" + (", started" if started else ""),
                  d.uuid, tuple(guest.disk_sources()),
                  tuple(str(i.mac) for i in d.devices.interfaces if i.mac))


@dataclass
class _Batch:
    """What the clones on one host share: the template's images as that host sees them and
    the pools their overlays go into, each looked up once for the batch."""

    host: Host
    sources: dict[int, storage.VolumeInfo] = field(default_factory=dict)  # disk -> volume
    pools: dict[str, storage.OverlayPool] = field(default_factory=dict)

    def source(self, i: int, path: str) -> storage.VolumeInfo:
        if i not in self.sources:
            here = storage.volume_at(self.host, path)
            assert here is not None  # _candidates chose only hosts that see it
            self.sources[i] = here
        return self.sources[i]

    def pool(self, name: str) -> storage.OverlayPool:
        if name not in self.pools:
            self.pools[name] = storage.OverlayPool(self.host, name)
        return self.pools[name]


def _each(store: Store, pool: ConnectionPool, tpl: Template, req: CloneRequest,
          placed: list[tuple[str, HostRecord]], taken: set[str], out: list[Cloned],
          progress: Callable[[Cloned], None]) -> None:
    batches: dict[str, _Batch] = {}
    for vm, rec in placed:
        try:
            with vm_lock(store, f"create/{vm}", "clone"):
                if rec.name not in batches:
                    batches[rec.name] = _Batch(pool.get(rec))
                made = _one(store, pool, tpl, req, vm, rec, taken, batches[rec.name])
        except VirtfleetError as exc:
            store.release_placement(rec.name, vm)  # no-op when the rollback already did
            made = Cloned(rec.name, vm, False, exc.message)
        out.append(made)
        progress(made)


def _one(store: Store, pool: ConnectionPool, tpl: Template, req: CloneRequest, vm: str,
         rec: HostRecord, taken: set[str], batch: _Batch) -> Cloned:
    with journaled(store, pool, "clone", f"{rec.name}/{vm}",
                   (Made("claim", rec.name, vm),)) as op:
        host = batch.host
        paths = []
        for i, src in enumerate(tpl.disks):
            paths.append(_disk(op, pool, tpl, req, batch, src, vm, i))
        macs = [random_mac(taken) for _ in tpl.domain.devices.interfaces]
        taken.update(macs)
        doc = clone_domain(tpl, vm, rec, paths, macs, linked=req.linked,
                           ha_priority=req.ha_mark())
        with op.making(Made("vm", rec.name, f"{vm}/{doc.uuid}")):
            defined = host.define_and_read(doc.to_xml())
        if req.ha_mark() is not None:
            remember_new(store, host, rec.name, str(doc.uuid), pool.timeouts.call)
        if req.start:
            Guest.lookup(host, vm).start()
            settle(store, host, str(doc.uuid))  # running now: read its state again
        else:  # what libvirt answered to the define is what it holds
            store.settle_placement(host.label, defined)
    kind = "linked" if req.linked else "full"
    mark = req.ha_mark()
    return Cloned(rec.name, vm, True, f"cloned ({kind})" + (", started" if req.start else "")
                  + (f", HA priority {mark}" if mark is not None else ""),
                  str(doc.uuid), tuple(paths), tuple(macs), mark)


def _disk(op: Operation, pool: ConnectionPool, tpl: Template, req: CloneRequest,
          batch: _Batch, src: storage.VolumeInfo, vm: str, i: int) -> str:
    suffix = "qcow2" if req.linked else (src.format or "raw")
    name = f"{vm}.{suffix}" if i == 0 else f"{vm}-disk{i}.{suffix}"
    host = batch.host
    if req.linked:
        here = batch.source(i, src.path)
        backing = dataclasses.replace(here, format=src.format)  # declared, never probed
        with op.making(Made("poolvol", host.label, f"{here.pool}/{name}")):
            return batch.pool(here.pool).create(name, backing)
    if host.label == tpl.record.name:
        target = req.pool or src.pool
        with op.making(Made("poolvol", host.label, f"{target}/{name}")):
            return storage.clone_volume(host, target, src, name)
    # Another hypervisor: the bytes travel through this machine, holes kept.
    source_host = pool.get(tpl.record)
    target = req.pool or "default"
    with tempfile.TemporaryDirectory(prefix="virtfleet-clone-") as tmp, \
            op.making(Made("poolvol", host.label, f"{target}/{name}")):
        local = str(Path(tmp) / "disk")
        storage.download(source_host, src.path, local)
        return storage.upload(host, target, name, local, src.format or "raw")


def clone_domain(tpl: Template, name: str, rec: HostRecord, disks: list[str], macs: list[str],
                 linked: bool, ha_priority: int | None = None) -> Domain:
    """The template's hardware as a new VM: new name, UUID, disks and MACs; hostname via the
    SMBIOS serial; virtfleet's facts saying where it is, which template it came from and, with
    `ha_priority`, that it is HA (autostart is never copied: a clone starts with it off)."""
    doc = Domain.parse(tpl.domain.to_xml())
    doc.name = name
    doc.uuid = str(uuid.uuid4())
    doc.id = None
    for disk, path, src in zip(file_disks(doc), disks, tpl.disks, strict=True):
        disk.readonly = False
        disk.source_file = path
        disk.format = "qcow2" if linked else (src.format or "raw")
    if len(macs) != len(doc.devices.interfaces):
        raise Conflict(f"template {tpl.name} changed while cloning")
    for nic, mac in zip(doc.devices.interfaces, macs, strict=True):
        nic.mac = mac
    _own_console_logs(doc, tpl.name, name)
    doc.set_smbios_serial(f"ds=nocloud;h={name}")
    facts = FleetFacts()
    old = tpl.domain.facts
    if old is not None:
        facts.app, facts.owner = old.app, old.owner
    facts.site, facts.pod, facts.template = rec.site, rec.pod, tpl.name
    facts.ha_priority = ha_priority
    doc.set_facts(facts)
    return doc


def _own_console_logs(doc: Domain, template: str, name: str) -> None:
    """A console log file is one VM's: the clone logs to its own name's file, or not at all."""
    for log in doc.element.findall("devices/*/log"):
        path = log.get("file", "")
        head, _, base = path.rpartition("/")
        if template in base:
            log.set("file", f"{head}/{base.replace(template, name)}")
        else:
            parent = log.getparent()
            assert parent is not None
            parent.remove(log)
