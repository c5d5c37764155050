"""Headroom on a live fleet: how many more VMs of a shape fit, where, and what fails first when
a hypervisor or a whole pod is lost.

Pure: the caller gathers host facts (inventory, nodeinfo, domains, claims) into HostState and
per-host VM shapes; this module only counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from virtfleet.errors import Conflict
from virtfleet.placement.models import HostState, PlacementRequest, VMShape
from virtfleet.placement.policy import Policy
from virtfleet.placement.scheduler import Scheduler


@dataclass(frozen=True)
class HostFit:
    host: str
    site: str
    pod: str
    groups: tuple[str, ...]
    fits: int
    free_vcpus: int
    free_memory_mib: int
    bound_by: str  # cpu, memory, or "unavailable"

    def as_json(self) -> dict[str, object]:
        return {"host": self.host, "site": self.site, "pod": self.pod,
                "groups": list(self.groups), "fits": self.fits, "free_vcpus": self.free_vcpus,
                "free_memory_mib": self.free_memory_mib, "bound_by": self.bound_by}


@dataclass(frozen=True)
class LossCase:
    """One failure scenario: `lost` (a host or a pod) and whether its VMs fit elsewhere."""

    kind: str  # host or pod
    lost: str
    scope: str  # where its VMs may restart: the pod (shared storage) or the site
    displaced: int
    placed: int
    runs_out_first: str  # cpu, memory, or cpu and memory
    spare_after: int  # VMs of the displaced shape still free afterwards (0 when it failed)

    @property
    def ok(self) -> bool:
        return self.placed == self.displaced

    def as_json(self) -> dict[str, object]:
        return {"kind": self.kind, "lost": self.lost, "scope": self.scope,
                "displaced": self.displaced, "placed": self.placed, "ok": self.ok,
                "runs_out_first": self.runs_out_first, "spare_after": self.spare_after}


def host_fits(hosts: Sequence[HostState], shape: VMShape, policy: Policy,
              group: str | None = None) -> list[HostFit]:
    """How many more VMs of `shape` each host takes (hosts of `group`, or every host)."""
    sched = Scheduler(hosts, policy)
    out = []
    for i, h in enumerate(sched.hosts):
        if group is not None and group not in h.groups:
            continue
        by_cpu = max(0, sched.cpu_free[i]) // shape.vcpus
        by_mem = max(0, sched.mem_free[i]) // shape.memory_mib
        avail = not (h.maintenance or h.unreachable)
        out.append(HostFit(
            host=h.name, site=h.site, pod=h.pod, groups=h.groups,
            fits=min(by_cpu, by_mem) if avail else 0,
            free_vcpus=sched.cpu_free[i], free_memory_mib=sched.mem_free[i],
            bound_by=("unavailable" if not avail else "cpu and memory" if by_cpu == by_mem
                      else "cpu" if by_cpu < by_mem else "memory")))
    return out


def _first_out(sched: Scheduler, idx: Sequence[int], shape: VMShape) -> tuple[str, int]:
    cpu_slots = sum(max(0, sched.cpu_free[i]) // shape.vcpus for i in idx)
    mem_slots = sum(max(0, sched.mem_free[i]) // shape.memory_mib for i in idx)
    word = "cpu and memory" if cpu_slots == mem_slots else (
        "cpu" if cpu_slots < mem_slots else "memory")
    return word, min(cpu_slots, mem_slots)


def _replace(survivors: list[HostState], vms: list[tuple[str, VMShape, str | None]],
             policy: Policy) -> tuple[int, str, int]:
    """Re-place displaced VMs (largest first) on `survivors`: (placed, first out, spare)."""
    if not vms:
        return 0, "nothing displaced", 0
    sched = Scheduler(survivors, policy)
    placed = 0
    worst, worst_group = vms[0][1], vms[0][2]
    for _name, shape, group in sorted(vms, key=lambda v: (-v[1].memory_mib, -v[1].vcpus)):
        worst, worst_group = shape, group
        if group is not None and group not in sched.groups:
            break  # no surviving host of its group at all
        try:
            # A fixed request name: libvirt domain names need not follow virtfleet's rules.
            sched.place(PlacementRequest(name="displaced", shape=shape, group=group))
        except Conflict:
            break
        placed += 1
    # Only hosts the displaced VMs may use (their group's) say what runs out.
    ok = [i for i in sched.by_group.get(worst_group, ())
          if not (sched.hosts[i].maintenance or sched.hosts[i].unreachable)]
    if not ok:
        return placed, "no hypervisor of its group", 0
    word, spare = _first_out(sched, ok, worst)
    return placed, word, spare if placed == len(vms) else 0


def _vm_list(host: HostState, shapes: Mapping[str, Sequence[tuple[str, VMShape]]]
             ) -> list[tuple[str, VMShape, str | None]]:
    group = host.groups[0] if host.groups else None
    return [(name, shape, group) for name, shape in shapes.get(host.name, ())]


def loss_cases(hosts: Sequence[HostState], shapes: Mapping[str, Sequence[tuple[str, VMShape]]],
               policy: Policy) -> list[LossCase]:
    """For each pod, lose its busiest hypervisor (its VMs restart in the same pod, on the
    shared storage); for each site, lose its busiest pod (its VMs are rebuilt in the site's
    other pods). Busiest: most memory in use."""
    out: list[LossCase] = []
    by_pod: dict[str, list[HostState]] = {}
    for h in hosts:
        by_pod.setdefault(h.pod, []).append(h)
    for pod in sorted(by_pod):
        members = by_pod[pod]
        lost = max(members, key=lambda h: (h.used_memory_mib, h.used_vcpus, h.name))
        vms = _vm_list(lost, shapes)
        placed, word, spare = _replace([h for h in members if h is not lost], vms, policy)
        out.append(LossCase("host", lost.name, f"pod {pod}", len(vms), placed, word, spare))
    by_site: dict[str, list[str]] = {}
    for pod, members in by_pod.items():
        by_site.setdefault(members[0].site, []).append(pod)
    for site in sorted(by_site):
        pods = by_site[site]
        lost_pod = max(pods, key=lambda p: (sum(h.used_memory_mib for h in by_pod[p]), p))
        vms = [v for h in by_pod[lost_pod] for v in _vm_list(h, shapes)]
        rest = [h for p in pods if p != lost_pod for h in by_pod[p]]
        placed, word, spare = _replace(rest, vms, policy)
        out.append(LossCase("pod", lost_pod, f"site {site}", len(vms), placed, word, spare))
    return out
