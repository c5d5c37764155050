"""The planning service: the scheduler and the headroom arithmetic (placement/) on the live
fleet, as `vm create` and `vm clone` see it (provision/schedule.py: each host's nodeinfo and
VMs now, plus the store's claims).

    with PlanningService(store, policy=policy) as plan:
        room = plan.headroom(HeadroomRequest(VMShape(vcpus=4, memory_mib=32768)))
        placed = plan.place(PlaceRequest(PlacementRequest(name="web", count=3, ...)))

Hosts that do not answer are left out of the plan and listed with it: a plan from part of the
fleet is shown, never taken for the whole.
"""

from __future__ import annotations

from dataclasses import dataclass

from virtfleet.errors import InvalidInput
from virtfleet.fleet.queries import counting
from virtfleet.fleet.scope import FleetService, Progress, Scope
from virtfleet.inventory.records import HostFailure
from virtfleet.inventory.store import Store
from virtfleet.placement.headroom import HostFit, LossCase, host_fits, loss_cases
from virtfleet.placement.models import HostState, PlacementRequest, VMShape
from virtfleet.placement.policy import Policy
from virtfleet.placement.scheduler import Placed
from virtfleet.provision.schedule import LiveFleet, live_fleet, place_and_claim
from virtfleet.virt.fanout import ConnectionPool

__all__ = ["HeadroomRequest", "Headroom", "PlaceRequest", "Placement", "PlanningService"]


@dataclass(frozen=True)
class HeadroomRequest:
    """How many more VMs of `shape` fit in `scope` (a site or pod; on hosts of its group)."""

    shape: VMShape
    scope: Scope = Scope()


@dataclass(frozen=True)
class Headroom:
    shape: VMShape
    group: str | None
    hosts: tuple[HostFit, ...]
    loss: tuple[LossCase, ...]  # what fails first if a hypervisor or a pod is lost
    failed: tuple[HostFailure, ...]  # hosts that did not answer, left out
    asked: int

    @property
    def fits(self) -> int:
        return sum(f.fits for f in self.hosts)

    def as_json(self) -> dict[str, object]:
        return {"shape": self.shape.model_dump(), "group": self.group, "fits": self.fits,
                "hosts": [f.as_json() for f in self.hosts],
                "loss": [c.as_json() for c in self.loss]}


@dataclass(frozen=True)
class PlaceRequest:
    """Where the scheduler puts `request`'s VMs (nothing is defined); with `claim`, the room
    is held in the store for whoever defines them."""

    request: PlacementRequest
    explain: bool = False  # say which hosts each filter removed
    claim: bool = False


@dataclass(frozen=True)
class Placement:
    placed: Placed
    claimed: bool
    failed: tuple[HostFailure, ...]
    asked: int

    def as_json(self) -> dict[str, object]:
        p = self.placed
        return {"placements": [{"vm": vm, "host": h} for vm, h in p.vms],
                "claimed": self.claimed,
                "explain": p.explain.as_json() if p.explain else None}


class PlanningService(FleetService):
    def __init__(self, store: Store, pool: ConnectionPool | None = None, *,
                 policy: Policy | None = None) -> None:
        super().__init__(store, pool)
        self.policy = policy or Policy()

    def _live(self, site: str | None, pod: str | None, progress: Progress | None
              ) -> LiveFleet:
        tick = counting(progress, "nodeinfo", len(self.store.hypervisors(site=site, pod=pod)))
        return live_fleet(self.store, site=site, pod=pod, pool=self.pool, progress=tick)

    @staticmethod
    def _check_group(hosts: list[HostState], group: str | None) -> None:
        if group is not None and not any(group in h.groups for h in hosts):
            raise InvalidInput("group", f"unknown group {group!r} (no answering hypervisor "
                               "is in it)")

    def headroom(self, req: HeadroomRequest, progress: Progress | None = None) -> Headroom:
        group = req.scope.group
        fleet = self._live(req.scope.site, req.scope.pod, progress)
        self._check_group(fleet.hosts, group)
        return Headroom(req.shape, group,
                        tuple(host_fits(fleet.hosts, req.shape, self.policy, group)),
                        tuple(loss_cases(fleet.hosts, fleet.shapes, self.policy)),
                        tuple(fleet.failed), len(fleet.hosts) + len(fleet.failed))

    def place(self, req: PlaceRequest, progress: Progress | None = None) -> Placement:
        """The scheduler over every answering host of the fleet (the request's site and pod
        are its own filters, so a refusal says which filter removed what)."""
        fleet = self._live(None, None, progress)
        self._check_group(fleet.hosts, req.request.group)
        placed = place_and_claim(self.store if req.claim else None,
                                 LiveFleet(fleet.hosts, fleet.shapes, []), self.policy,
                                 req.request, explain=req.explain)
        return Placement(placed, req.claim, tuple(fleet.failed),
                         len(fleet.hosts) + len(fleet.failed))
