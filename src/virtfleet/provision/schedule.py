"""The scheduler on the live fleet: hosts as they are now (nodeinfo, domains, the store's
claims), a placement, and a claim in the store before anything is defined.

placement/ is pure code; this module feeds it from the libvirt layer and the store, so both
`plan` and `vm create` see the same fleet the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from virtfleet.errors import NotFound
from virtfleet.fleet.queries import NodeInfo, ask_fleet, domains_of, failures, node_info_of
from virtfleet.inventory.claims import DEFAULT_CLAIM_TTL, ClaimRequest
from virtfleet.inventory.records import DomainRecord, HostFailure, HostRecord
from virtfleet.inventory.store import Store
from virtfleet.placement.models import HostState, PlacementRequest, VMShape
from virtfleet.placement.policy import Policy
from virtfleet.placement.scheduler import Placed, Scheduler
from virtfleet.provision.reading import Reading
from virtfleet.virt.fanout import ConnectionPool, HostResult
from virtfleet.virt.host import Host


def _facts(host: Host) -> tuple[NodeInfo, list[DomainRecord]]:
    return node_info_of(host), domains_of(host)


def group_of(store: Store, app: str | None, source: HostRecord) -> str | None:
    """The group placement isolates the VM to: its application group if the inventory has
    such a host group, else its host's first group (a VM made on a dedicated host outside
    virtfleet stays among that group's hosts), else none."""
    if app is not None:
        try:
            store.hypervisors(group=app)
            return app
        except NotFound:
            pass
    return source.groups[0] if source.groups else None


@dataclass(frozen=True)
class LiveFleet:
    hosts: list[HostState]
    shapes: dict[str, list[tuple[str, VMShape]]]  # host -> (VM or claim, its size)
    failed: list[HostFailure]


def live_fleet(store: Store, *, site: str | None = None, pod: str | None = None,
               pool: ConnectionPool | None = None,
               progress: Callable[[Any], None] | None = None) -> LiveFleet:
    """Hosts in scope with live nodeinfo and domains, plus the store's live claims.

    Every defined VM counts against its host, running or not (a shut-off VM can be started);
    a claimed VM not yet observed counts too. Hosts that do not answer are left out and listed.
    """
    records: Sequence[HostRecord] = store.hypervisors(site=site, pod=pod)
    return fleet_of(store, ask_fleet(records, _facts, pool, progress=progress))


def fleet_from(store: Store, reading: Reading) -> LiveFleet:
    """live_fleet() from a provisioning call's reading (provision/reading.py): the same hosts,
    nothing asked again."""
    results: list[HostResult[tuple[NodeInfo, list[DomainRecord]]]] = [
        HostResult(r.host, (r.value.node, r.value.domains) if r.value is not None else None,
                   r.error, r.seconds, r.at) for r in reading.results]
    return fleet_of(store, results)


def fleet_of(store: Store, results: list[HostResult[tuple[NodeInfo, list[DomainRecord]]]]
             ) -> LiveFleet:
    """Hosts that answered, with their VMs and the store's live claims counted."""
    claims: dict[str, list[tuple[str, int, int]]] = {}
    for c in store.placement_claims():
        claims.setdefault(c.host, []).append((c.vm, c.vcpus, c.memory_mib))
    hosts: list[HostState] = []
    shapes: dict[str, list[tuple[str, VMShape]]] = {}
    for r in results:
        if r.value is None:
            continue
        node, doms = r.value
        rec = r.host
        mine = [(d.name, VMShape(vcpus=max(1, d.vcpus), memory_mib=max(1, d.memory_mib)))
                for d in doms]
        seen = {d.name for d in doms}
        mine += [(vm, VMShape(vcpus=cpu, memory_mib=mem))
                 for vm, cpu, mem in claims.get(rec.name, ()) if vm not in seen]
        shapes[rec.name] = mine
        hosts.append(HostState(
            rec.name, site=rec.site, pod=rec.pod, groups=rec.groups,
            cpus=node.cpus, memory_mib=node.memory_kib // 1024,
            used_vcpus=sum(s.vcpus for _, s in mine),
            used_memory_mib=sum(s.memory_mib for _, s in mine),
            maintenance=rec.maintenance))
    return LiveFleet(hosts, shapes, failures(results))


def place_and_claim(store: Store | None, fleet: LiveFleet, policy: Policy,
                    request: PlacementRequest, *, explain: bool = False,
                    ttl: timedelta = DEFAULT_CLAIM_TTL) -> Placed:
    """Where every member of `request` goes; with a store, room is held there for each (for
    `ttl`, or until released).

    The claim re-checks capacity inside one locked transaction, so two operators placing at
    once cannot both take the last room on a host: the loser gets a Conflict.
    """
    placed = Scheduler(fleet.hosts, policy).place(request, explain=explain)
    if store is not None:
        limits = {h.name: policy.limits(h) for h in fleet.hosts}
        shape = request.shape
        store.claim_placements([
            ClaimRequest(host=h, vm=vm, vcpus=shape.vcpus, memory_mib=shape.memory_mib,
                         vcpu_limit=limits[h][0], memory_limit_mib=limits[h][1])
            for vm, h in placed.vms], ttl=ttl)
    return placed
