"""The scheduler: filter, weigh, place a batch without overbooking, explain why.

Speed comes from indexes, not cleverness: hosts are indexed by group (isolation makes a group's
hosts the only candidates), free capacity lives in flat lists, and each request keeps a heap of
its candidates keyed by weight, so a VM costs O(log hosts) instead of a scan of every host.
Each request is all or nothing: if one member cannot be placed, the others are given back.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from virtfleet.errors import Conflict, InvalidInput
from virtfleet.placement.filters import FILTERS
from virtfleet.placement.models import HostState, PlacementRequest, Scope, Spread
from virtfleet.placement.policy import Policy


@dataclass
class Explain:
    """Which hosts each filter removed and why, for one request."""

    request: str
    hosts: int
    removed: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)
    passed: int = 0

    def as_json(self) -> dict[str, object]:
        return {"request": self.request, "hosts": self.hosts, "passed": self.passed,
                "filters": [{"filter": f, "removed": len(hs),
                             "hosts": [{"host": h, "reason": why} for h, why in hs]}
                            for f, hs in self.removed]}

    def text(self, limit: int = 5) -> str:
        out = [f"{self.request}: {self.hosts} hypervisors considered"]
        for name, hosts in self.removed:
            out.append(f"  {name}: removed {len(hosts)}")
            out.extend(f"    {h}: {why}" for h, why in hosts[:limit])
            if len(hosts) > limit:
                out.append(f"    ... and {len(hosts) - limit} more")
        out.append(f"  {self.passed} passed every filter")
        return "\n".join(out) + "\n"


@dataclass(frozen=True)
class Placed:
    request: PlacementRequest
    vms: tuple[tuple[str, str], ...]  # (vm name, host name)
    explain: Explain | None = None


class Scheduler:
    """Places requests onto `hosts` (copied: the caller's HostState objects are not touched)."""

    def __init__(self, hosts: Iterable[HostState], policy: Policy | None = None, *,
                 groups: Iterable[str] | None = None) -> None:
        self.policy = policy or Policy()
        self.hosts = [h.copy() for h in hosts]
        seen: set[str] = set()
        for h in self.hosts:
            if h.name in seen:
                raise InvalidInput("hosts", f"duplicate hypervisor {h.name!r}")
            seen.add(h.name)
        n = len(self.hosts)
        self.cpu_limit = [0] * n
        self.mem_limit = [0] * n
        self.cpu_free = [0] * n
        self.mem_free = [0] * n
        self.by_group: dict[str | None, list[int]] = {}
        self.sites: set[str] = set()
        self.pods: dict[str, str] = {}
        ratio_cache: dict[frozenset[str], tuple[float, float]] = {}
        for i, h in enumerate(self.hosts):
            ratios = ratio_cache.get(h.group_key)
            if ratios is None:
                r = self.policy.ratios(h)
                ratios = ratio_cache[h.group_key] = (r.cpu, r.memory)
            self.cpu_limit[i] = int(h.cpus * ratios[0])
            self.mem_limit[i] = int(max(0, h.memory_mib - self.policy.reserve_for(h))
                                    * ratios[1])
            self.cpu_free[i] = self.cpu_limit[i] - h.used_vcpus
            self.mem_free[i] = self.mem_limit[i] - h.used_memory_mib
            for g in h.groups or (None,):
                self.by_group.setdefault(g, []).append(i)
            self.sites.add(h.site)
            self.pods[h.pod] = h.site
        self.groups = set(groups) if groups is not None else {
            g for h in self.hosts for g in h.groups}
        # Per group, a heap of (weight, version, host) that lives across requests: a change to
        # a host bumps its version and pushes a fresh entry, older ones are skipped when popped.
        # A request then costs O(log hosts) instead of a pass over its group's hosts.
        self._version = [0] * n
        self._heaps: dict[str | None, list[tuple[float, int, int]]] = {}

    # ------------------------------------------------------------------ checks

    def _check(self, r: PlacementRequest) -> None:
        if r.group is not None and r.group not in self.groups:
            raise InvalidInput("group", f"unknown group {r.group!r}")
        if r.site is not None and r.site not in self.sites:
            raise InvalidInput("site", f"unknown site {r.site!r}")
        if r.pod is not None:
            if r.pod not in self.pods:
                raise InvalidInput("pod", f"unknown pod {r.pod!r}")
            if r.site is not None and self.pods[r.pod] != r.site:
                raise InvalidInput("pod", f"pod {r.pod!r} is in site {self.pods[r.pod]!r}, "
                                          f"not {r.site!r}")
        if (r.affinity is not None and r.anti_affinity is not None and r.count > 1
                and (r.affinity == r.anti_affinity or r.affinity == Scope.host)):
            raise InvalidInput("anti_affinity", f"{r.anti_affinity.value} anti-affinity "
                               f"contradicts {r.affinity.value} affinity")
        if r.anti_affinity == Scope.pod and r.pod is not None and r.count > 1:
            raise InvalidInput("anti_affinity", f"pod anti-affinity of {r.count} VMs cannot "
                               f"hold inside the one pod {r.pod!r}")

    def _fits(self, i: int, r: PlacementRequest) -> bool:
        s = r.shape
        if self.cpu_free[i] < s.vcpus or self.mem_free[i] < s.memory_mib:
            return False
        h = self.hosts[i]
        return not s.disk_gib or h.disk_gib is None or h.disk_gib - h.used_disk_gib >= s.disk_gib

    def _how_many(self, i: int, r: PlacementRequest) -> int:
        s = r.shape
        n = min(self.cpu_free[i] // s.vcpus, self.mem_free[i] // s.memory_mib)
        h = self.hosts[i]
        if s.disk_gib and h.disk_gib is not None:
            n = min(n, (h.disk_gib - h.used_disk_gib) // s.disk_gib)
        return max(0, n)

    def _key(self, i: int) -> float:
        # Free fraction of memory plus of CPU: spread takes the largest, pack the smallest.
        w = (self.mem_free[i] / (self.mem_limit[i] or 1)
             + self.cpu_free[i] / (self.cpu_limit[i] or 1))
        return -w if self.policy.weigh == Spread.spread else w

    def candidates(self, r: PlacementRequest) -> list[int]:
        """Hosts that pass every filter, straight from the group index."""
        out = []
        for i in self.by_group.get(r.group, ()):
            h = self.hosts[i]
            if h.maintenance or h.unreachable:
                continue
            if (r.site is not None and h.site != r.site) or (r.pod is not None and h.pod != r.pod):
                continue
            if self._fits(i, r):
                out.append(i)
        return out

    def explain(self, r: PlacementRequest) -> Explain:
        """Run every filter over every host, in order, and record what each one removed."""
        self._check(r)
        ex = Explain(request=r.name, hosts=len(self.hosts))
        left = list(range(len(self.hosts)))
        for f in FILTERS:
            keep, gone = [], []
            for i in left:
                why = f.check(self.hosts[i], r, self.cpu_free[i], self.mem_free[i])
                if why is None:
                    keep.append(i)
                else:
                    gone.append((self.hosts[i].name, why))
            ex.removed.append((f.name, gone))
            left = keep
        ex.passed = len(left)
        return ex

    # ------------------------------------------------------------------ placing

    def _changed(self, i: int) -> None:
        self._version[i] += 1
        entry = (self._key(i), self._version[i], i)
        for g in self.hosts[i].groups or (None,):
            heap = self._heaps.get(g)
            if heap is not None:
                heapq.heappush(heap, entry)

    def _take(self, i: int, r: PlacementRequest, log: list[int]) -> None:
        s = r.shape
        self.cpu_free[i] -= s.vcpus
        self.mem_free[i] -= s.memory_mib
        h = self.hosts[i]
        h.used_vcpus += s.vcpus
        h.used_memory_mib += s.memory_mib
        h.used_disk_gib += s.disk_gib
        log.append(i)
        self._changed(i)

    def _give_back(self, r: PlacementRequest, log: list[int]) -> None:
        s = r.shape
        for i in log:
            self.cpu_free[i] += s.vcpus
            self.mem_free[i] += s.memory_mib
            h = self.hosts[i]
            h.used_vcpus -= s.vcpus
            h.used_memory_mib -= s.memory_mib
            h.used_disk_gib -= s.disk_gib
        for i in set(log):
            self._changed(i)

    def _group_heap(self, group: str | None) -> list[tuple[float, int, int]]:
        heap = self._heaps.get(group)
        if heap is None:
            heap = [(self._key(i), self._version[i], i) for i in self.by_group.get(group, ())
                    if not (self.hosts[i].maintenance or self.hosts[i].unreachable)]
            heapq.heapify(heap)
            self._heaps[group] = heap
        return heap

    def _place_indexed(self, r: PlacementRequest, log: list[int]) -> None:
        """Requests with no site, pod or affinity constraint: straight from the group's heap.

        Hosts popped that cannot take this request (too small for this shape, already used by
        an anti-affinity member) are set aside and pushed back afterwards; hosts with no room at
        all are dropped until a change to them pushes them again."""
        heap = self._group_heap(r.group)
        version = self._version
        aside: list[tuple[float, int, int]] = []
        used_hosts: set[int] = set()
        used_pods: set[str] = set()
        distinct = r.anti_affinity
        try:
            for _ in range(r.count):
                while heap:
                    entry = heap[0]
                    i = entry[2]
                    if entry[1] != version[i]:
                        heapq.heappop(heap)  # stale: the host changed since
                        continue
                    if self.cpu_free[i] <= 0 or self.mem_free[i] <= 0:
                        heapq.heappop(heap)  # full for any VM
                        continue
                    if (not self._fits(i, r) or i in used_hosts
                            or (distinct == Scope.pod and self.hosts[i].pod in used_pods)):
                        aside.append(heapq.heappop(heap))
                        continue
                    heapq.heappop(heap)
                    self._take(i, r, log)  # pushes the host's new entry
                    if distinct is not None:
                        used_hosts.add(i)
                        used_pods.add(self.hosts[i].pod)
                    break
                else:
                    rule = {Scope.host: "anti-affinity by host", Scope.pod: "anti-affinity by pod",
                            None: "capacity"}[distinct]
                    raise self._no_room(r, len(log), rule)
        finally:
            for entry in aside:
                heapq.heappush(heap, entry)

    def _no_room(self, r: PlacementRequest, placed: int, rule: str) -> Conflict:
        ex = self.explain(r)
        why = "; ".join(f"{name} removed {len(hs)}" for name, hs in ex.removed if hs)
        where = "".join(f" {k} {v}" for k, v in (("group", r.group), ("site", r.site),
                                                  ("pod", r.pod)) if v)
        return Conflict(f"{r.name}: {rule}: placed {placed} of {r.count} VMs of "
                        f"{r.shape.vcpus} vCPUs/{r.shape.memory_mib} MiB{where or ' ungrouped'}"
                        f" ({why or 'no hypervisors'})")

    def place(self, r: PlacementRequest, *, explain: bool = False) -> Placed:
        """Place every member of `r` or none. InvalidInput for impossible constraints, Conflict
        naming the rule that ran out of hosts."""
        self._check(r)
        ex = self.explain(r) if explain else None
        log: list[int] = []
        if r.site is None and r.pod is None and (r.affinity is None or r.count == 1):
            try:
                self._place_indexed(r, log)
            except Conflict:
                self._give_back(r, log)
                raise
            names = r.member_names()
            return Placed(r, tuple((names[k], self.hosts[i].name) for k, i in enumerate(log)),
                          ex)
        cands = self.candidates(r)
        try:
            if r.affinity == Scope.host and r.count > 1:
                self._place_affine_host(r, cands, log)
            elif r.affinity == Scope.pod and r.count > 1:
                self._place_affine_pod(r, cands, log)
            else:
                self._place_heap(r, cands, log)
        except Conflict:
            self._give_back(r, log)
            raise
        names = r.member_names()
        return Placed(r, tuple((names[k], self.hosts[i].name) for k, i in enumerate(log)), ex)

    def _place_heap(self, r: PlacementRequest, cands: Sequence[int], log: list[int],
                    rule: str | None = None) -> None:
        heap = [(self._key(i), i) for i in cands]
        heapq.heapify(heap)
        distinct_host = r.anti_affinity == Scope.host
        distinct_pod = r.anti_affinity == Scope.pod
        used_pods: set[str] = set()
        for _ in range(r.count):
            while heap:
                _, i = heap[0]
                if not self._fits(i, r) or (distinct_pod and self.hosts[i].pod in used_pods):
                    heapq.heappop(heap)  # never fits again within this request
                    continue
                self._take(i, r, log)
                if distinct_host or distinct_pod:
                    heapq.heappop(heap)
                    used_pods.add(self.hosts[i].pod)
                else:
                    heapq.heapreplace(heap, (self._key(i), i))
                break
            else:
                if rule is None:
                    rule = {Scope.host: "anti-affinity by host", Scope.pod: "anti-affinity by pod",
                            None: "capacity"}[r.anti_affinity]
                raise self._no_room(r, len(log), rule)

    def _place_affine_host(self, r: PlacementRequest, cands: Sequence[int],
                           log: list[int]) -> None:
        fit = [i for i in cands if self._how_many(i, r) >= r.count]
        if not fit:
            raise self._no_room(r, 0, "affinity by host")
        best = min(fit, key=lambda i: (self._key(i), i))
        for _ in range(r.count):
            self._take(best, r, log)

    def _place_affine_pod(self, r: PlacementRequest, cands: Sequence[int],
                          log: list[int]) -> None:
        by_pod: dict[str, list[int]] = {}
        for i in cands:
            by_pod.setdefault(self.hosts[i].pod, []).append(i)
        room = {p: sum(self._how_many(i, r) for i in hs) for p, hs in by_pod.items()}
        if r.anti_affinity == Scope.host:
            room = {p: min(n, len(by_pod[p])) for p, n in room.items()}
        ok = [p for p, n in room.items() if n >= r.count]
        if not ok:
            raise self._no_room(r, 0, "affinity by pod")
        best = min(ok, key=lambda p: (sum(self._key(i) for i in by_pod[p]) / len(by_pod[p]), p))
        self._place_heap(r, by_pod[best], log, rule="affinity by pod")

    def host(self, name: str) -> HostState:
        for h in self.hosts:
            if h.name == name:
                return h
        raise InvalidInput("host", f"unknown hypervisor {name!r}")
