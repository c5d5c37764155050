"""Where VMs leaving a host go: the scheduler over the hosts that passed the checks, and a
placement claim for each before anything moves.

The same path as `vm create`: provision/schedule.py's live fleet (nodeinfo, domains and the
store's claims) and place_and_claim (filters, weighers, group isolation, a claim re-checked in
one locked transaction). What differs is the candidates: each VM only among the hosts that can
take it (fleet/movable.py), never its own host. A batch (a host being emptied) is placed VM by
VM, largest first, each placement counted against its host before the next one, so the batch
never overbooks a host even before its claims are read back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from virtfleet.errors import Conflict, InvalidInput, VirtfleetError
from virtfleet.inventory.records import HostRecord
from virtfleet.inventory.store import Store
from virtfleet.placement.models import HostState, PlacementRequest, VMShape
from virtfleet.placement.policy import Policy
from virtfleet.placement.scheduler import Scheduler
from virtfleet.provision.schedule import LiveFleet, live_fleet, place_and_claim
from virtfleet.virt.fanout import ConnectionPool


@dataclass(frozen=True)
class Leaving:
    """A VM that needs a new host, and the hosts that can take it."""

    name: str
    shape: VMShape
    group: str | None  # its application group, which placement isolates
    candidates: frozenset[str]
    why_not: tuple[tuple[str, str], ...] = ()  # (host, reason) for the hosts that cannot


@dataclass(frozen=True)
class Chosen:
    """Where one VM goes (room claimed there), or why it has nowhere to go."""

    vm: str
    target: HostRecord | None
    error: VirtfleetError | None = None


def _nowhere(vm: Leaving, where: str) -> Conflict:
    reasons = "; ".join(why if why.startswith(f"{h} ") else f"{h}: {why}"
                        for h, why in vm.why_not[:4])
    more = f"; and {len(vm.why_not) - 4} more" if len(vm.why_not) > 4 else ""
    return Conflict(f"{vm.name}: no hypervisor in {where} can take it"
                    + (f" ({reasons}{more})" if reasons else " (no other hypervisor there)"))


def _no_room(vm: Leaving, hosts: list[HostState], policy: Policy | None, where: str,
             exc: VirtfleetError) -> VirtfleetError:
    """The scheduler's refusal in the words of its filters, host by host, beside the reasons
    the other hosts of the scope were not candidates."""
    request = PlacementRequest(name=vm.name, shape=vm.shape, group=vm.group)
    try:
        ex = Scheduler(hosts, policy or Policy()).explain(request)
    except InvalidInput:
        return exc
    room = [(h, reason) for _f, removed in ex.removed for h, reason in removed]
    if not room:
        return exc  # room was there: the claim lost a race with another placement
    if vm.why_not:
        return _nowhere(Leaving(vm.name, vm.shape, vm.group, vm.candidates,
                                tuple(sorted(vm.why_not + tuple(room)))), where)
    shown = "; ".join(f"{h}: {why}" for h, why in room[:4]) + (
        f"; and {len(room) - 4} more" if len(room) > 4 else "")
    return Conflict(f"{vm.name} ({vm.shape.vcpus} vCPUs, {vm.shape.memory_mib} MiB) does not "
                    f"fit: {shown}")


def choose(store: Store, pool: ConnectionPool, leaving: Sequence[Leaving], *,
           site: str | None, pod: str | None, policy: Policy | None = None,
           ttl: timedelta = timedelta(minutes=15)) -> list[Chosen]:
    """A target with claimed room for each VM of `leaving`, in input order; a VM with nowhere
    to go gets the reason instead. Hosts in scope that do not answer are left out."""
    where = f"pod {pod}" if pod else f"site {site}" if site else "the fleet"
    if not any(vm.candidates for vm in leaving):
        return [Chosen(vm.name, None, _nowhere(vm, where)) for vm in leaving]
    fleet = live_fleet(store, site=site, pod=pod, pool=pool)
    records = {r.name: r for r in store.hypervisors(site=site, pod=pod)}
    unanswered = {f.host: f.message for f in fleet.failed}
    chosen: dict[str, Chosen] = {}
    for vm in sorted(leaving, key=lambda v: (-v.shape.memory_mib, -v.shape.vcpus, v.name)):
        hosts = [h for h in fleet.hosts if h.name in vm.candidates]
        if not hosts:
            why = tuple((h, f"did not answer ({m})") for h, m in unanswered.items()
                        if h in vm.candidates)
            chosen[vm.name] = Chosen(vm.name, None, _nowhere(
                Leaving(vm.name, vm.shape, vm.group, vm.candidates, vm.why_not + why), where))
            continue
        if vm.group is not None and not any(vm.group in h.groups for h in hosts):
            chosen[vm.name] = Chosen(vm.name, None, Conflict(
                f"{vm.name}: no hypervisor of its group {vm.group!r} can take it"))
            continue
        request = PlacementRequest(name=vm.name, shape=vm.shape, group=vm.group)
        try:
            placed = place_and_claim(store, LiveFleet(hosts, fleet.shapes, fleet.failed),
                                     policy or Policy(), request, ttl=ttl)
        except (Conflict, InvalidInput) as exc:
            chosen[vm.name] = Chosen(vm.name, None, _no_room(vm, hosts, policy, where, exc))
            continue
        [(_name, host)] = placed.vms
        for h in fleet.hosts:  # the next VM of the batch sees this one there
            if h.name == host:
                h.used_vcpus += vm.shape.vcpus
                h.used_memory_mib += vm.shape.memory_mib
        chosen[vm.name] = Chosen(vm.name, records[host])
    return [chosen[vm.name] for vm in leaving]
