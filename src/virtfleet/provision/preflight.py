"""Cheap, certain checks before the scheduler: on each hypervisor in scope, in one fan-out,
whether the new VMs' names are free and whether the host has what they need (storage pools,
room for new disks, networks, bridges). The names come from the call's one reading of each
host (provision/reading.py), taken in the same visit.

A wrong pool or bridge is then reported as what it is, not as "CoreFilter removed 1", and the
scheduler only places among hosts that can take the VMs. Nothing is made and no room is held.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from virtfleet.errors import Conflict, HypervisorError, InvalidInput, NotFound, VirtfleetError
from virtfleet.inventory.records import HostRecord
from virtfleet.provision.reading import Reading, read_hosts
from virtfleet.virt import networks, storage
from virtfleet.virt.fanout import ConnectionPool
from virtfleet.virt.host import Host


@dataclass(frozen=True)
class NewVolume:
    """Room a new volume needs in a pool (its capacity, or for a copy what will be written)."""

    field: str  # the request field to name in an error: "disks[0].size", "pool"
    pool: str
    size_bytes: int
    pool_field: str | None = None  # the field that names the pool ("disks[0].pool")
    pool_given: bool = True  # False: that field was left out and `pool` is its default


@dataclass(frozen=True)
class Needs:
    """What a host must have to take the VMs."""

    names: tuple[str, ...]  # must not be defined there (unless a clone of `template`)
    volumes: tuple[NewVolume, ...] = ()  # per VM; the sizes in one pool add up
    images: tuple[tuple[str, str], ...] = ()  # (field, path): inside an active pool
    media: tuple[tuple[str, str], ...] = ()  # (field, path): a volume of an active pool
    networks: tuple[tuple[str, str], ...] = ()  # (field, libvirt network) a NIC names
    bridges: tuple[tuple[str, str], ...] = ()  # (field, host bridge) a NIC names
    host_volumes: dict[str, tuple[NewVolume, ...]] = field(default_factory=dict)  # by host,
    # instead of `volumes` (a full clone copies into its template's pool on the template's own
    # host, and into 'default' elsewhere)


@dataclass(frozen=True)
class HostFit:
    """One host's answer: what it lacks (None: it can take them) and which of the names it
    already has, each with the template it was cloned from (None: not a clone)."""

    host: str
    problem: VirtfleetError | None
    existing: dict[str, str | None] = field(default_factory=dict)
    answered: bool = True  # its domains were listed (else the names are unchecked there)


def _bridges(h: Host, nets: list[networks.NetworkInfo]) -> set[str] | None:
    """Bridges the host has: libvirt's interface list, or made by an active network; None if
    this libvirt cannot list interfaces (then bridges are not checked)."""
    ifaces = networks.host_interfaces(h)
    if ifaces is None:
        return None
    return set(ifaces) | {n.bridge for n in nets if n.active and n.bridge and n.mode != "bridge"}


def lacks(h: Host, needs: Needs) -> VirtfleetError | None:
    """The first thing `h` lacks for `needs`, as the error making the VM there would raise."""
    want: dict[str, int] = defaultdict(int)
    fields: dict[str, str] = {}
    named: dict[str, tuple[str, bool]] = {}
    for v in needs.host_volumes.get(h.label, needs.volumes):
        want[v.pool] += v.size_bytes
        fields.setdefault(v.pool, v.field)
        if v.pool_field is not None:
            named.setdefault(v.pool, (v.pool_field, v.pool_given))
    try:
        for name, size in want.items():
            try:
                free = storage.pool(h, name).available_bytes
            except NotFound as exc:
                if name in named:  # the field behind it, worded by the CLI as its option
                    fld, given = named[name]
                    exc.add(f" (`{fld}`)" if given else f" (`{fld}` not given: the default)")
                raise
            storage.check_fits(name, free, size, fields[name], on=h.label)
        for fld, path in needs.images:
            storage.confine(h, fld, path)
        for fld, path in needs.media:
            storage.media(h, fld, path)
    except (InvalidInput, NotFound, Conflict) as exc:
        return exc
    if needs.networks or needs.bridges:
        nets = networks.list_networks(h)
        have = {n.name for n in nets}
        for fld, net in needs.networks:
            if net not in have:
                return InvalidInput(fld, f"{h.label} has no libvirt network {net!r} "
                                    f"(see 'virtfleet net list --host {h.label}')")
        bridges = _bridges(h, nets) if needs.bridges else None
        for fld, br in needs.bridges:
            if bridges is not None and br not in bridges:
                return InvalidInput(fld, f"{h.label} has no bridge {br!r} (see "
                                    f"'virtfleet host check {h.label}')")
    return None


def fit(hosts: list[HostRecord], candidates: set[str], needs: Needs,
        pool: ConnectionPool) -> tuple[list[HostFit], Reading]:
    """Each host's answer: the names on all of `hosts`, the rest on `candidates` only; and the
    reading it came from (provision/reading.py), which placement and the MAC rule use too. A
    host that does not answer gets its error as the problem."""
    wanted = set(needs.names)
    reading = read_hosts(hosts, pool,
                         lambda h: lacks(h, needs) if h.label in candidates else None)
    out = []
    for r in reading.results:
        if r.value is not None:
            found = {n: t for n, t in sorted(r.value.templates.items()) if n in wanted}
            out.append(HostFit(r.host.name, r.value.lack, found))
        else:
            assert r.error is not None
            out.append(HostFit(r.host.name, r.error, answered=False))
    return out, reading


def only_fitting(fits: list[HostFit], candidates: set[str], where: str) -> set[str]:
    """The candidates that can take the VMs; if none can, the first one's reason (a host
    named with --host: its reason), saying so when there were others."""
    problems = sorted(((f.host, f.problem) for f in fits
                       if f.host in candidates and f.problem is not None),
                      key=lambda p: (p[1].retryable, p[0]))  # a host's own lack first
    ok = candidates - {h for h, _ in problems}
    if ok:
        return ok
    if not problems:
        raise HypervisorError(f"no hypervisor in {where} answered")
    first = problems[0][1]
    if len(problems) > 1:
        first.add(f" (and {len(problems) - 1} other hypervisor(s) in {where} cannot "
                  "take it either)")
    raise first
