"""The capacity page's model: `plan headroom` (fleet/planning.py) per pod, with a bar each, and
the loss cases that do not fit (what runs out first when a hypervisor or a pod is lost); and
the same answer as two bar charts, per pod and per application group at once (what fits where,
what runs out first), whose bars are computed here and drawn as SVG by templates/capacity.html.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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


CHART_WIDTH = 640
LABEL_WIDTH = 150  # the bar's name, left of it
NUMBER_WIDTH = 170  # how many fit and what runs out first, right of it
ROW = 18
BAR_HEIGHT = 12
BOUNDS = ("cpu", "memory", "cpu and memory")  # a host's bound_by, as headroom.py words it
NO_GROUP = "(no group)"


@dataclass(frozen=True)
class Segment:
    bound: str  # the hosts' bound_by whose room this part of the bar is (its CSS class)
    x: float
    width: float
    fits: int


@dataclass(frozen=True)
class Bar:
    label: str
    y: int  # the row's top
    fits: int
    hosts: int
    unavailable: int  # hosts in maintenance or not answering: no room counted
    first: str  # what runs out first over these hosts: cpu, memory, cpu and memory
    segments: tuple[Segment, ...]  # the room of CPU-bound, memory-bound, both-bound hosts
    title: str  # what a hover says


@dataclass(frozen=True)
class Chart:
    key: str
    bars: tuple[Bar, ...]
    width: int = CHART_WIDTH
    label_width: int = LABEL_WIDTH
    row: int = ROW
    bar_height: int = BAR_HEIGHT

    @property
    def height(self) -> int:
        return max(1, len(self.bars)) * self.row

    @property
    def number_x(self) -> int:
        return self.width - NUMBER_WIDTH + 6


def _first_out(members: Sequence[HostFit], vcpus: int, memory_mib: int) -> str:
    """Which runs out first over these hosts together, as loss_cases words it: the
    resource with fewer VMs' worth free (hosts that take none left out)."""
    usable = [h for h in members if h.bound_by != "unavailable"]
    if not usable:
        return "no host available"
    cpu = sum(max(0, h.free_vcpus) // vcpus for h in usable)
    mem = sum(max(0, h.free_memory_mib) // memory_mib for h in usable)
    return "cpu and memory" if cpu == mem else "cpu" if cpu < mem else "memory"


def _chart(key: str, groups: Mapping[str, Sequence[HostFit]], vcpus: int,
           memory_mib: int) -> Chart:
    sums = {label: sum(h.fits for h in members) for label, members in groups.items()}
    widest = max(sums.values(), default=0)
    span = CHART_WIDTH - LABEL_WIDTH - NUMBER_WIDTH
    bars = []
    for row, label in enumerate(sorted(groups, key=lambda k: (-sums[k], k))):
        members = groups[label]
        x = float(LABEL_WIDTH)
        segments = []
        for bound in BOUNDS:
            fits = sum(h.fits for h in members if h.bound_by == bound)
            if fits:
                width = round(span * fits / widest, 1)
                segments.append(Segment(bound, round(x, 1), width, fits))
                x += width
        unavailable = sum(1 for h in members if h.bound_by == "unavailable")
        first = _first_out(members, vcpus, memory_mib)
        title = (f"{label}: {sums[label]} fit on {len(members)} hypervisors; "
                 + "; ".join(f"{s.fits} on {s.bound}-bound hosts" for s in segments)
                 + (f"; {unavailable} unavailable" if unavailable else "")
                 + f"; runs out first: {first}")
        bars.append(Bar(label, row * ROW, sums[label], len(members), unavailable, first,
                        tuple(segments), title))
    return Chart(key, tuple(bars))


def charts(hosts: Sequence[HostFit], vcpus: int, memory_mib: int) -> tuple[Chart, Chart]:
    """Room per pod and per group at once, from one headroom answer. A host in two groups
    counts in both; a host in none under NO_GROUP."""
    pods: dict[str, list[HostFit]] = {}
    groups: dict[str, list[HostFit]] = {}
    for h in hosts:
        pods.setdefault(f"{h.site}/{h.pod}", []).append(h)
        for g in h.groups or (NO_GROUP,):
            groups.setdefault(g, []).append(h)
    return (_chart("pods", pods, vcpus, memory_mib),
            _chart("groups", groups, vcpus, memory_mib))


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
