"""The estate map's model: sites -> pods -> a cell per hypervisor, coloured by its state and
with how much of its CPUs and memory the running VMs hold. Pure: the page hands in the
controller's view, the last stats pass's capacities and HA's host states.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from virtfleet.inventory.records import HostRecord

STATES = ("ok", "unreachable", "suspect", "maintenance")
# HA states in which a lost host is still being looked at (not yet known off)
_SUSPECT = frozenset({"suspect", "fencing", "fence-failed"})
ACTIVE = frozenset({"running", "idle", "paused", "in shutdown", "pmsuspended"})
MIB = 1024 * 1024


@dataclass(frozen=True)
class Cell:
    name: str
    state: str  # one of STATES
    cpu: int  # tenths of capacity allocated (0..10), for the bar's width class
    mem: int
    title: str  # what a hover says


@dataclass
class Pod:
    name: str
    hosts: list[Cell] = field(default_factory=list)


@dataclass
class Site:
    name: str
    pods: list[Pod] = field(default_factory=list)


@dataclass(frozen=True)
class Estate:
    sites: list[Site]
    hosts: int
    vms: int
    by_state: list[tuple[str, int]]  # (state, hosts in it), only states with any


def host_state(rec: HostRecord, failed: bool, ha_state: str | None) -> str:
    if rec.maintenance:
        return "maintenance"
    if ha_state in _SUSPECT:
        return "suspect"
    if failed or (ha_state is not None and ha_state != "ok"):
        return "unreachable"
    return "ok"


def _tenths(used: int, capacity: int) -> int:
    return 0 if capacity <= 0 else max(0, min(10, round(10 * used / capacity)))


def build(hosts: Iterable[HostRecord], rows: Sequence[Mapping[str, Any]],
          failed: Iterable[str], capacity: Mapping[str, tuple[int, int]],
          ha: Mapping[str, str]) -> Estate:
    """`rows`: the view's VM rows (those the caller may see); `capacity`: host -> (CPUs,
    memory bytes) from the last stats pass (a host missing there draws empty bars)."""
    used: dict[str, list[int]] = {}
    for r in rows:
        if r["state"] in ACTIVE:
            u = used.setdefault(r["host"], [0, 0])
            u[0] += int(r["vcpus"])
            u[1] += int(r["memory_mib"])
    down = set(failed)
    sites: dict[str, dict[str, Pod]] = {}
    counts = dict.fromkeys(STATES, 0)
    n = 0
    for rec in sorted(hosts, key=lambda h: (h.site, h.pod, h.name)):
        n += 1
        state = host_state(rec, rec.name in down, ha.get(rec.name))
        counts[state] += 1
        vcpus, mem_mib = used.get(rec.name, [0, 0])
        cpus, mem_bytes = capacity.get(rec.name, (0, 0))
        cap_mib = mem_bytes // MIB
        title = (f"{rec.name}: {state}; vCPUs {vcpus}/{cpus or '?'}; memory "
                 f"{mem_mib // 1024} of {cap_mib // 1024 if cap_mib else '?'} GiB")
        if rec.groups:
            title += f"; groups {', '.join(rec.groups)}"
        pods = sites.setdefault(rec.site, {})
        pods.setdefault(rec.pod, Pod(rec.pod)).hosts.append(
            Cell(rec.name, state, _tenths(vcpus, cpus), _tenths(mem_mib, cap_mib), title))
    return Estate([Site(s, list(p.values())) for s, p in sites.items()], n, len(rows),
                  [(s, c) for s, c in counts.items() if c])
