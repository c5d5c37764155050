"""The host service: the inventory's hypervisors, and what each one is, in virsh's words
(nodeinfo, sysinfo, version) plus the preflight that says whether it can run VMs.

    with HostService(store) as hosts:
        facts = hosts.info(HostQuery(pod="p1"))          # each host's nodeinfo, or why not
        checks = hosts.check(HostQuery(names=("hv1",)))

Every question goes to every host at once through the fan-out (fleet/queries.py): each host
answers within its deadline or fails on its own, and its failure is part of the answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from virtfleet.errors import Conflict, InvalidInput, NotFound
from virtfleet.fleet.queries import HostCheck, NodeInfo, node_info_of, sysinfo_of, version_of
from virtfleet.fleet.scope import Answers, FleetService, Progress
from virtfleet.inventory.records import HostFailure, HostRecord, HostStatus
from virtfleet.virt.host import Host
from virtfleet.xml.sysinfo import SysInfo

if TYPE_CHECKING:
    from virtfleet.inventory.fleetfile import Hypervisor

__all__ = ["AddHostRequest", "CheckedHost", "HostChecks", "HostQuery", "HostRow",
           "HostService", "NodeInfo", "SysInfo"]

T = TypeVar("T")

# A fleet-file path `host add` builds -> the request field it came from.
_FROM_FLEET_FILE = {
    "sites[0].name": "site",
    "sites[0].pods[0].name": "pod",
    "sites[0].pods[0].hypervisors[0].name": "name",
    "sites[0].pods[0].hypervisors[0].uri": "uri",
    "sites[0].pods[0].hypervisors[0].groups": "groups",
}


@dataclass(frozen=True)
class HostQuery:
    """The hypervisors to ask: those named (default: all), within a site, pod or group."""

    names: tuple[str, ...] = ()
    site: str | None = None
    pod: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class AddHostRequest:
    """One hypervisor into the inventory, in a site and pod (made if new)."""

    name: str
    uri: str  # a libvirt URI: qemu+ssh://hv1/system
    site: str
    pod: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class HostRow:
    """A hypervisor as the inventory knows it, with the last reachability seen."""

    host: HostRecord
    status: HostStatus | None

    @property
    def state(self) -> str:
        if self.host.maintenance:
            return "maintenance"
        if self.status is None:
            return "unknown"
        return "up" if self.status.reachable else "down"

    def as_json(self) -> dict[str, object]:
        h, s = self.host, self.status
        seen = s.observed_at if s is not None else None
        return {"name": h.name, "uri": h.uri, "site": h.site, "pod": h.pod,
                "groups": list(h.groups), "maintenance": h.maintenance,
                "reachable": s.reachable if s is not None else None,
                "error": s.error if s is not None else "",
                "observed_at": seen.isoformat() if seen is not None else None}


@dataclass(frozen=True)
class CheckedHost:
    host: HostRecord
    check: HostCheck

    def as_json(self) -> dict[str, object]:
        return {"host": self.host.name, **self.check.as_json()}


@dataclass(frozen=True)
class HostChecks:
    """Every host's preflight; a host that did not answer has a check that says so."""

    hosts: tuple[CheckedHost, ...]
    failed: tuple[HostFailure, ...]

    @property
    def ok(self) -> bool:
        return not self.failed


class HostService(FleetService):
    def select(self, query: HostQuery) -> list[HostRecord]:
        """The hosts a query names, in its order; NotFound for a name not among them."""
        hosts = self.store.hypervisors(site=query.site, pod=query.pod, group=query.group)
        if not query.names:
            return hosts
        by_name = {h.name: h for h in hosts}
        missing = [n for n in query.names if n not in by_name]
        if missing:
            narrowed = query.site or query.pod or query.group
            raise NotFound(f"hypervisor {missing[0]!r} is not in the inventory"
                           + (" (or not in the given site/pod/group)" if narrowed else ""))
        return [by_name[n] for n in query.names]

    def validate(self, req: AddHostRequest) -> Hypervisor:
        """The request as the fleet file's own models read it, so `host add` and `apply` share
        every rule; an error names this request's field. Nothing is stored."""
        from virtfleet.inventory.fleetfile import parse_fleet  # pydantic: slow to import

        try:
            # insecure_transport: whether qemu+tcp may join the pod is the stored pod's to say
            # (Store.add_hypervisor), not this one-host fleet's.
            fleet = parse_fleet({"sites": [{"name": req.site, "pods": [{
                "name": req.pod, "insecure_transport": True, "hypervisors": [
                    {"name": req.name, "uri": req.uri, "groups": list(req.groups)}]}]}]})
        except InvalidInput as exc:
            field = re.sub(r"\[\d+\]$", "", exc.field)
            raise InvalidInput(_FROM_FLEET_FILE.get(field, exc.field), exc.rule) from None
        hv = fleet.sites[0].pods[0].hypervisors[0]
        # The store's answer before any host is asked (its ssh key scanned): cheap and certain.
        for known in self.store.hypervisors():
            if known.name == hv.name:
                raise Conflict(f"hypervisor {hv.name!r} is already in the inventory")
            if known.uri == hv.uri:
                raise Conflict(f"uri {hv.uri!r} already belongs to hypervisor {known.name!r}")
        return hv

    def add(self, req: AddHostRequest) -> HostRecord:
        """Validated as validate() does, then stored. A qemu+ssh host's key is the caller's to
        pin first (transport/pinning.py): the store does not ask hosts."""
        self.store.add_hypervisor(req.site, req.pod, self.validate(req))
        [added] = self.store.hypervisors(host=req.name)
        return added

    def remove(self, name: str) -> None:
        """Out of the inventory; its VMs are not touched."""
        self.store.remove_hypervisor(name)

    def hosts(self, query: HostQuery) -> list[HostRow]:
        """The inventory's hypervisors with the last reachability the store has (no host is
        asked)."""
        status = {s.host: s for s in self.store.host_statuses()}
        return [HostRow(h, status.get(h.name)) for h in self.select(query)]

    def _ask(self, query: HostQuery, what: str, work: Callable[[Host], T],
             progress: Progress | None) -> Answers[T]:
        return self.ask(self.select(query), what, work, progress)

    def info(self, query: HostQuery, progress: Progress | None = None) -> Answers[NodeInfo]:
        """`virsh nodeinfo` of each host."""
        return self._ask(query, "nodeinfo", node_info_of, progress)

    def sysinfo(self, query: HostQuery, progress: Progress | None = None) -> Answers[SysInfo]:
        """`virsh sysinfo` of each host, parsed: BIOS, system, processors, DIMMs."""
        return self._ask(query, "sysinfo", sysinfo_of, progress)

    def version(self, query: HostQuery, progress: Progress | None = None
                ) -> Answers[dict[str, object]]:
        """`virsh version` of each host: libvirt's and the hypervisor's."""
        return self._ask(query, "version", version_of, progress)

    def check(self, query: HostQuery, progress: Progress | None = None) -> HostChecks:
        """Can each host run VMs: virt types, VT-x/AMD-V, IOMMU, KVM, its networks, and its
        pod's storage pool (docs/storage.md)."""
        from virtfleet.fleet.storage_check import host_check_with_storage, storage_by_host

        work = host_check_with_storage(storage_by_host(self.store))
        answers = self._ask(query, "check", work, progress)
        failed = answers.failures
        why = {f.host: f.message for f in failed}
        return HostChecks(tuple(
            CheckedHost(r.host, r.value if r.value is not None
                        else HostCheck.unreachable(why.get(r.host.name, "")))
            for r in answers.results), tuple(failed))
