"""`vm create`: a validated spec becomes volumes and a defined (and started) domain, or nothing.

Each step that makes something is journaled (provision/journal.py); if a later step fails the
steps are undone in reverse and the error says what was rolled back, and if the process dies
`virtfleet ops cleanup` undoes them later. Nothing half-made is left behind.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from virtfleet.config import virt_type_setting
from virtfleet.design.policy import Placement, build_domain, choose_virt_type, random_mac
from virtfleet.design.spec import VMSpec
from virtfleet.errors import Conflict, HypervisorError, InvalidInput, NotFound
from virtfleet.ha.definitions import remember
from virtfleet.inventory.records import HostRecord, Made
from virtfleet.inventory.store import Store
from virtfleet.placement.models import HostState, PlacementRequest
from virtfleet.placement.policy import Policy
from virtfleet.provision import preflight
from virtfleet.provision.journal import journaled
from virtfleet.provision.preflight import Needs, NewVolume
from virtfleet.provision.reading import Reading
from virtfleet.units import human_bytes
from virtfleet.virt import ha as vha
from virtfleet.virt import networks, storage
from virtfleet.virt.fanout import ConnectionPool, fan_out
from virtfleet.virt.guest import Guest
from virtfleet.virt.host import Host
from virtfleet.xml.capabilities import parse_capabilities
from virtfleet.xml.domain import Domain


@dataclass(frozen=True)
class Created:
    host: str
    name: str
    uuid: str
    virt_type: str
    disks: tuple[str, ...]
    macs: tuple[str, ...]
    started: bool
    ha_priority: int | None = None  # an HA VM's restart priority; None: not HA

    def as_json(self) -> dict[str, object]:
        return {**self.__dict__, "disks": list(self.disks), "macs": list(self.macs)}


def pod_macs(pod_hosts: list[HostRecord], pool: ConnectionPool) -> set[str]:
    """Every MAC in use by a domain on the pod's hypervisors (VMs move within a pod)."""
    def macs(h: Host) -> set[str]:
        found: set[str] = set()
        for d in h.list_domains():
            dom = Domain.parse(Guest.lookup(h, d.name).xml())
            found.update(i.mac.lower() for i in dom.devices.interfaces if i.mac)
        return found
    results = fan_out(pod_hosts, macs, pool)
    bad = [r for r in results if r.error is not None]
    if bad:
        raise HypervisorError(f"cannot check MAC addresses: {bad[0].host.name} did not answer "
                              f"({bad[0].error}); MACs must be unique in the pod")
    return set().union(*(r.value for r in results if r.value is not None))


def not_observed(store: Store, name: str, checked: Collection[str] = ()) -> None:
    """The fleet-wide name rule against the store's last observation of every hypervisor.

    Hosts in `checked` were just asked live and do not have the VM: an observation there is
    stale (undefined since, outside virtfleet or by a test hypervisor that forgot it)."""
    seen = [v for v in store.fleet_vms(name=name) if v.host not in checked]
    if seen:
        raise Conflict(f"a VM named {name!r} already exists on {seen[0].host} "
                       "(names are unique across the fleet)")


def not_claimed(store: Store, names: list[str]) -> None:
    """No other operation is making a VM of these names (a live placement claim), or was
    interrupted making one (then its claim waits for `ops cleanup`, or expires)."""
    from virtfleet.provision.journal import interrupted

    held = {c.vm: c for c in store.placement_claims()}
    clash = [n for n in names if n in held]
    if not clash:
        return
    claim = held[clash[0]]
    for op in store.operations():
        if any(m.kind == "claim" and m.ref == claim.vm and m.host == claim.host
               for m in op.steps) and interrupted(op):
            raise Conflict(f"a VM named {claim.vm!r} was being made on {claim.host} by an "
                           f"interrupted operation: run 'virtfleet ops cleanup {op.id[:12]}' "
                           "first (names are unique across the fleet)")
    raise Conflict(f"a VM named {claim.vm!r} is being created on {claim.host} (its room is "
                   f"claimed until {claim.expires_at:%H:%M:%S} UTC; names are unique across "
                   "the fleet)")


def check_name_free(name: str, store: Store, pod_hosts: list[HostRecord],
                    pool: ConnectionPool) -> None:
    """The fleet-wide name rule: live on the pod's hypervisors (a VM made outside virtfleet
    since the last sync counts too), then against the store for every other host."""
    results = fan_out(pod_hosts, lambda h: h.has_domain(name), pool)
    taken = [r.host.name for r in results if r.value]
    if taken:
        raise Conflict(f"a VM named {name!r} already exists on {taken[0]}")
    not_observed(store, name, {r.host.name for r in results if r.value is False})


def create_vm(spec: VMSpec, target: HostRecord, store: Store, pool: ConnectionPool, *,
              start: bool = True, virt_type: str | None = None,
              facts: dict[str, str] | None = None, storage_pool: str = "default",
              progress: Callable[[str], None] | None = None,
              ha_priority: int | None = None, reading: Reading | None = None) -> Created:
    """Make the VM on `target` (room already claimed by reserve_host), or nothing.
    `progress` hears each step as the journal records it, and the start. With
    `ha_priority`, an HA VM: marked so in its metadata, autostart off, in the store's HA VMs
    (as `ha set` leaves one) before it first starts. `reading`: reserve_and_read's reading of
    the pod, whose names and MACs were checked there; without one the pod is asked now."""
    say = progress or (lambda _what: None)
    # The claim goes back if anything fails; on success the VM is recorded as observed and the
    # claim goes (settle): its room stays counted, and nothing outlives the VM.
    with journaled(store, pool, "create", f"{target.name}/{spec.name}",
                   (Made("claim", target.name, spec.name),),
                   on_step=lambda m: say(f"recorded {m.describe()}")) as op:
        pod_hosts = store.hypervisors(pod=target.pod)
        if reading is None:
            check_name_free(spec.name, store, pod_hosts, pool)
        host = pool.get(target)
        caps = parse_capabilities(host.capabilities_xml())
        kvm_usable = "kvm" in caps.virt_types and _kvm_usable(host)
        vtype = choose_virt_type(virt_type or virt_type_setting(), caps.virt_types, kvm_usable)
        taken = pod_macs(pod_hosts, pool) if reading is None else reading.macs(pod_hosts)
        macs = []
        for i, nic in enumerate(spec.nics):
            if nic.mac is not None:
                if nic.mac in taken:
                    raise Conflict(f"`networks[{i}].mac` {nic.mac} is already used in pod "
                                   f"{target.pod}")
                mac = nic.mac
            else:
                mac = random_mac(taken)
            taken.add(mac)
            macs.append(mac)
        for i, nic in enumerate(spec.nics):  # refused now, not when the VM first starts
            if nic.kind == "network" and not networks.has_network(host, nic.source):
                raise InvalidInput(f"networks[{i}]", f"{target.name} has no libvirt network "
                                   f"{nic.source!r} (see 'virtfleet net list --host "
                                   f"{target.name}')")
        for i, d in enumerate(spec.disks):
            if d.path is not None:
                storage.confine(host, _path_field(spec, i), d.path)
        if spec.boot.cdrom:
            storage.media(host, "cdrom", spec.boot.cdrom)
        paths = []
        for i, d in enumerate(spec.disks):
            if d.path is not None:
                paths.append(d.path)
                continue
            assert d.size_bytes is not None
            vol = f"{spec.name}.{d.format}" if i == 0 else f"{spec.name}-disk{i}.{d.format}"
            where = d.pool or storage_pool
            with op.making(Made("poolvol", target.name, f"{where}/{vol}")):
                paths.append(storage.create_volume(host, where, vol, d.size_bytes, d.format,
                                                   field=f"{spec.disk_field(i)}.size"))
        placement = Placement(virt_type=vtype, disk_paths=tuple(paths), macs=tuple(macs),
                              facts={"site": target.site, "pod": target.pod, **(facts or {})},
                              ha_priority=ha_priority)
        with op.making(Made("vm", target.name, f"{spec.name}/{placement.uuid}")):
            host.define_domain(build_domain(spec, placement).to_xml())
        guest = Guest.lookup(host, spec.name)
        if spec.autostart:
            guest.set_autostart(True)
        if ha_priority is not None:
            remember_new(store, host, target.name, placement.uuid, pool.timeouts.call)
        if start:
            guest.start()
            say(f"started {spec.name} on {target.name}")
        settle(store, host, placement.uuid)
    return Created(host=target.name, name=spec.name, uuid=placement.uuid, virt_type=vtype,
                   disks=tuple(paths), macs=tuple(macs), started=start,
                   ha_priority=ha_priority)


def remember_new(store: Store, host: Host, host_name: str, uuid: str, seconds: float) -> None:
    """A VM just defined HA goes into the store's HA VMs with its definition, so the
    controller can restart it even if its host fails before the next sync. Undoing its
    definition (the journal's "vm" step) forgets it again."""
    found = vha.definition(host, uuid, seconds)
    if found is None:
        raise NotFound(f"{host.label}: the VM {uuid} just defined is gone")
    remember(store, host, host_name, found, seconds, datetime.now(UTC))


def settle(store: Store, host: Host, uuid: str) -> None:
    """The VM `uuid` is defined on `host`: recorded as observed there, its claim released."""
    seen = host.domain_by_uuid(uuid)
    if seen is None:
        raise NotFound(f"{host.label}: the VM {uuid} just defined is gone")
    store.settle_placement(host.label, seen)


def _enforced(store: Store, app: str | None) -> str | None:
    """--app names a host group of the inventory (placement then isolates it), or is only a
    label kept in the VM's metadata."""
    if app is None:
        return None
    try:
        store.hypervisors(group=app)
        return app
    except NotFound:
        return None


def _kvm_usable(host: Host) -> bool:
    try:
        host.domain_capabilities_xml("kvm")
        return True
    except HypervisorError:
        return False


def _path_field(spec: VMSpec, i: int) -> str:
    """The field that named disk `i`'s image: the imported one is the whole field."""
    field = spec.disk_field(i)
    return field if field == "import_disk" else f"{field}.path"


def needs_of(spec: VMSpec, storage_pool: str = "default") -> Needs:
    """What a hypervisor must have for `spec`: its pools with room for the new disks, the
    images it imports inside a pool, its networks and bridges (each with its request field)."""
    disks = list(enumerate(spec.disks))
    nics = [(f"networks[{i}]", n) for i, n in enumerate(spec.nics)]
    return Needs(
        names=(spec.name,),
        volumes=tuple(NewVolume(f"{spec.disk_field(i)}.size", d.pool or storage_pool,
                                d.size_bytes, f"{spec.disk_field(i)}.pool", bool(d.pool))
                      for i, d in disks if d.path is None and d.size_bytes is not None),
        images=tuple((_path_field(spec, i), d.path) for i, d in disks if d.path is not None),
        media=(("cdrom", spec.boot.cdrom),) if spec.boot.cdrom else (),
        networks=tuple((f, n.source) for f, n in nics if n.kind == "network"),
        bridges=tuple((f, n.source) for f, n in nics if n.kind == "bridge"))


def reserve_host(store: Store, pool: ConnectionPool, spec: VMSpec, *, host: str | None,
                 site: str | None, pod: str | None, group: str | None,
                 policy: Policy | None = None, storage_pool: str = "default") -> HostRecord:
    """The hypervisor for a new VM, with room claimed for it in the store (reserve_and_read)."""
    return reserve_and_read(store, pool, spec, host=host, site=site, pod=pod, group=group,
                            policy=policy, storage_pool=storage_pool)[0]


def reserve_and_read(store: Store, pool: ConnectionPool, spec: VMSpec, *, host: str | None,
                     site: str | None, pod: str | None, group: str | None,
                     policy: Policy | None = None, storage_pool: str = "default"
                     ) -> tuple[HostRecord, Reading]:
    """The hypervisor for a new VM, with room claimed for it in the store, and the reading of
    the hosts it was chosen among (for create_vm's name and MAC rules).

    The cheap, certain checks come first, on every host in scope at once (the name is free,
    the pools, room for the disks, networks and bridges are there): a wrong pool is reported
    as such, not as a full host, and the scheduler places only among hosts that can take it.
    """
    from virtfleet.placement.models import PlacementRequest, VMShape

    not_claimed(store, [spec.name])
    only, _done, reading = preflight_scope(store, pool, needs_of(spec, storage_pool),
                                           host=host, site=site, pod=pod, clones_of=None)
    [(_vm, record)] = reserve_hosts(store, pool, PlacementRequest(
        name=spec.name, shape=VMShape(vcpus=spec.vcpus, memory_mib=spec.memory_mib),
        group=_enforced(store, group), site=site, pod=pod), host=host, only=only,
        policy=policy, reading=reading, sized=True)
    return record, reading


def _never_fits(hosts: list[HostState], request: PlacementRequest, policy: Policy) -> None:
    """InvalidInput naming `vcpus` or `memory` when no host of the scope could hold the VM
    even empty: a size to fix, not a pod that is full for now (the scheduler's words)."""
    scope = [h for h in hosts if (request.group in h.groups if request.group is not None
                                  else not h.groups)] or hosts
    if not scope:
        return
    limits = {h.name: policy.limits(h) for h in scope}
    shape = request.shape
    for field, want, k in (("memory", shape.memory_mib, 1), ("vcpus", shape.vcpus, 0)):
        name, largest = max(((n, lim[k]) for n, lim in limits.items()), key=lambda x: x[1])
        if want > largest:
            asked, has = ((human_bytes(want * 2**20), human_bytes(largest * 2**20))
                          if field == "memory" else (str(want), f"{largest} vCPUs"))
            raise InvalidInput(field, f"{asked} is more than any hypervisor in scope can ever "
                               f"hold: the largest, {name}, takes {has} under the placement "
                               "policy")


def preflight_scope(store: Store, pool: ConnectionPool, needs: Needs, *, host: str | None,
                    site: str | None, pod: str | None, clones_of: str | None,
                    only: set[str] | None = None
                    ) -> tuple[set[str], dict[str, str], Reading]:
    """Run the preflight (provision/preflight.py) over the hosts a new VM may go to, and the
    name rule over them and their pods. Returns the hosts that can take the VMs, the names
    that already exist as clones of `clones_of` (name -> host; a re-run's finished work), and
    the reading of those hosts, for placement and the MAC rule (reserve_hosts, pod_macs).
    Raises what the first host lacks if none can, or Conflict for a name taken otherwise."""
    if host is not None:
        [record] = store.hypervisors(host=host)
        scope, names_on = [record], store.hypervisors(pod=record.pod)
        where = host
    else:
        scope = names_on = store.hypervisors(site=site, pod=pod)
        where = pod or site or "the fleet"
    candidates = {r.name for r in scope}
    if only is not None:
        candidates &= only
    fits, reading = preflight.fit(names_on, candidates, needs, pool)
    done: dict[str, str] = {}
    for f in fits:
        for name, template in sorted(f.existing.items()):
            if clones_of is not None and template == clones_of:
                done[name] = f.host
            else:
                raise Conflict(f"a VM named {name!r} already exists on {f.host}")
    answered = {f.host for f in fits if f.answered}
    for name in needs.names:
        if name not in done:
            not_observed(store, name, answered)
    return preflight.only_fitting(fits, candidates, where), done, reading


def reserve_hosts(store: Store, pool: ConnectionPool, request: PlacementRequest, *,
                  host: str | None, only: set[str] | None = None,
                  policy: Policy | None = None, reading: Reading | None = None,
                  sized: bool = False) -> list[tuple[str, HostRecord]]:
    """Hypervisors for every member of `request`, with room claimed for each in the store.

    --host is checked against that host's capacity; --pod/--site ask the scheduler (filters,
    weighers, group isolation); `only` limits the choice further (hosts that see a template's
    image). Claims are made in one locked transaction, so two operations at once never
    overbook a host; the operation that made them gives them back if it fails, or settles
    them once its VM is defined (Store.settle_placement). The names were checked by the
    caller (preflight_scope, not_claimed), before any room is held. `reading`: the
    preflight's reading of the same hosts, used instead of asking them again. `sized`: the
    request's shape is its caller's `vcpus` and `memory`, named if no host could hold it.
    """
    from virtfleet.provision.schedule import fleet_from, live_fleet, place_and_claim

    if host is not None:
        [record] = store.hypervisors(host=host)
        fleet = (fleet_from(store, reading) if reading is not None
                 else live_fleet(store, pod=record.pod, pool=pool))
        if not any(h.name == host for h in fleet.hosts):
            why = next((f.message for f in fleet.failed if f.host == host), "no answer")
            raise HypervisorError(f"{host}: cannot check its capacity ({why})")
        only = {host} if only is None else only & {host}
    elif reading is not None:
        fleet = fleet_from(store, reading)
    else:
        fleet = live_fleet(store, site=request.site, pod=request.pod, pool=pool)
    if only is not None:
        fleet = type(fleet)([h for h in fleet.hosts if h.name in only], fleet.shapes,
                            fleet.failed)
    if sized:
        _never_fits(fleet.hosts, request, policy or Policy())
    placed = place_and_claim(store, fleet, policy or Policy(), request)
    records = {r.name: r for r in store.hypervisors(site=request.site, pod=request.pod)}
    if host is not None:
        records[host] = record
    return [(vm, records[h]) for vm, h in placed.vms]
