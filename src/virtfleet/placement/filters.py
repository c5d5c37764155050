"""Filters, Nova style: each one looks at a host and a request and says why the host cannot
take the request, or None if it can. `explain` runs them in order and keeps the reasons."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from virtfleet.placement.models import HostState, PlacementRequest

# A filter: (host, request, free vcpus, free memory MiB) -> reason it is removed, or None.
Check = Callable[[HostState, PlacementRequest, int, int], "str | None"]


def availability(h: HostState, _r: PlacementRequest, _c: int, _m: int) -> str | None:
    if h.maintenance:
        return "in maintenance"
    if h.unreachable:
        return "unreachable"
    return None


def group_isolation(h: HostState, r: PlacementRequest, _c: int, _m: int) -> str | None:
    if r.group is None:
        return f"dedicated to group(s) {','.join(h.groups)}" if h.groups else None
    if r.group not in h.groups:
        return (f"not in group {r.group} (groups: {','.join(h.groups)})" if h.groups
                else f"not in group {r.group} (ungrouped)")
    return None


def site(h: HostState, r: PlacementRequest, _c: int, _m: int) -> str | None:
    return None if r.site is None or h.site == r.site else f"in site {h.site}, not {r.site}"


def pod(h: HostState, r: PlacementRequest, _c: int, _m: int) -> str | None:
    return None if r.pod is None or h.pod == r.pod else f"in pod {h.pod}, not {r.pod}"


def cpu(_h: HostState, r: PlacementRequest, free_cpu: int, _m: int) -> str | None:
    need = r.shape.vcpus
    return None if free_cpu >= need else f"{free_cpu} vCPUs free under its ratio, needs {need}"


def ram(_h: HostState, r: PlacementRequest, _c: int, free_mem: int) -> str | None:
    need = r.shape.memory_mib
    return (None if free_mem >= need
            else f"{free_mem} MiB free after reserve and ratio, needs {need}")


def disk(h: HostState, r: PlacementRequest, _c: int, _m: int) -> str | None:
    if not r.shape.disk_gib or h.disk_gib is None:
        return None  # no local disk figure: VM disks live on the pod's shared storage
    free = h.disk_gib - h.used_disk_gib
    return None if free >= r.shape.disk_gib else f"{free} GiB disk free, needs {r.shape.disk_gib}"


@dataclass(frozen=True)
class Filter:
    name: str
    check: Check


# Order matters only for explain: cheap, static filters first, capacity last, so each host is
# reported under the first rule it breaks.
FILTERS: tuple[Filter, ...] = (
    Filter("AvailabilityFilter", availability),
    Filter("GroupIsolationFilter", group_isolation),
    Filter("SiteFilter", site),
    Filter("PodFilter", pod),
    Filter("CoreFilter", cpu),
    Filter("RamFilter", ram),
    Filter("DiskFilter", disk),
)
