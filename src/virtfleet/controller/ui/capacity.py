"""The capacity page's model: `plan headroom` (fleet/planning.py) per pod, with a bar each, and
the loss cases that do not fit (what runs out first when a hypervisor or a pod is lost).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from virtfleet.design.sizes import parse_mib
from virtfleet.errors import InvalidInput
from virtfleet.placement.headroom import HostFit
from virtfleet.validate import check_name

MAX_VCPUS = 4096


@dataclass(frozen=True)
class CapacityQuery:
    vcpus: int = 4
    memory: str = "32G"
    site: str = ""
    pod: str = ""
    group: str = ""

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> CapacityQuery:
        known = set(cls.__dataclass_fields__)
        for key in params:
            if key not in known:
                raise InvalidInput(key, "unknown query parameter (known: "
                                   f"{', '.join(sorted(known))})")
        raw = params.get("vcpus") or "4"
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_VCPUS:
            raise InvalidInput("vcpus", f"a whole number from 1 to {MAX_VCPUS}")
        got = cls(int(raw), params.get("memory") or "32G", params.get("site", ""),
                  params.get("pod", ""), params.get("group", ""))
        parse_mib("memory", got.memory)
        for key in ("site", "pod", "group"):
            if getattr(got, key):
                check_name(key, getattr(got, key))
        return got

    @property
    def memory_mib(self) -> int:
        return parse_mib("memory", self.memory)


@dataclass(frozen=True)
class PodRoom:
    site: str
    pod: str
    hosts: int
    fits: int
    bound_cpu: int  # hosts where CPUs run out first
    bound_memory: int
    bar: int  # tenths of the widest pod's room, for the bar's width class


def per_pod(hosts: Iterable[HostFit]) -> list[PodRoom]:
    """Each host's headroom summed per pod, biggest room first."""
    pods: dict[tuple[str, str], list[int]] = {}
    for h in hosts:
        p = pods.setdefault((h.site, h.pod), [0, 0, 0, 0])
        p[0] += 1
        p[1] += h.fits
        p[2] += h.bound_by == "cpu"
        p[3] += h.bound_by == "memory"
    widest = max((p[1] for p in pods.values()), default=0)
    out = [PodRoom(site, pod, n, fits, cpu, mem,
                   round(10 * fits / widest) if widest else 0)
           for (site, pod), (n, fits, cpu, mem) in pods.items()]
    return sorted(out, key=lambda r: (-r.fits, r.site, r.pod))
