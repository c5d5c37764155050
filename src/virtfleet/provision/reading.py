"""One live reading of the hypervisors a provisioning call touches: each host asked once.

Placement needs each host's size and its domains' sizes; the name rule needs the domains'
names (and, for a clone run again, which template each came from); the MAC rule needs every
NIC's MAC in the pod; the preflight needs what the candidate hosts lack (pools, room,
networks, bridges). One fan-out reads all of it, once per `vm create` or `vm clone`, and each
check takes its part, instead of each listing every host's domains again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from virtfleet.errors import HypervisorError, VirtfleetError
from virtfleet.fleet.queries import NodeInfo, node_info_of
from virtfleet.inventory.records import DomainRecord, HostRecord
from virtfleet.virt.fanout import ConnectionPool, HostResult, fan_out
from virtfleet.virt.host import Host
from virtfleet.xml.domain import Domain


@dataclass(frozen=True)
class HostReading:
    """One hypervisor as the call found it."""

    node: NodeInfo
    domains: list[DomainRecord]
    macs: frozenset[str]  # of every NIC of every domain, lower case
    templates: dict[str, str | None]  # domain name -> the template it was cloned from
    lack: VirtfleetError | None = None  # what it lacks for the new VMs (asked of candidates)


@dataclass(frozen=True)
class Reading:
    """Every host of the scope: its reading, or why it did not answer."""

    results: list[HostResult[HostReading]] = field(default_factory=list)

    def answered(self) -> list[tuple[HostRecord, HostReading]]:
        return [(r.host, r.value) for r in self.results if r.value is not None]

    def macs(self, hosts: Iterable[HostRecord]) -> set[str]:
        """Every MAC in use on `hosts` (a pod's: VMs move within a pod); HypervisorError if one
        did not answer, since MACs must be unique in the pod."""
        by_name = {r.host.name: r for r in self.results}
        mine = []
        for h in hosts:
            if h.name not in by_name:  # the callers read the whole pod: a bug if not
                raise HypervisorError(f"cannot check MAC addresses: {h.name} was not read")
            mine.append(by_name[h.name])
        bad = [r for r in mine if r.value is None]
        if bad:
            raise HypervisorError(f"cannot check MAC addresses: {bad[0].host.name} did not "
                                  f"answer ({bad[0].error}); MACs must be unique in the pod")
        return set().union(*(r.value.macs for r in mine if r.value is not None))


def _host(lacks: Callable[[Host], VirtfleetError | None] | None
          ) -> Callable[[Host], HostReading]:
    def read(h: Host) -> HostReading:
        node = node_info_of(h)
        domains: list[DomainRecord] = []
        macs: set[str] = set()
        templates: dict[str, str | None] = {}
        for rec, xml in h.domains_with_xml():
            doc = Domain.parse(xml)
            domains.append(rec)
            macs.update(i.mac.lower() for i in doc.devices.interfaces if i.mac)
            facts = doc.facts
            templates[rec.name] = facts.template if facts is not None else None
        return HostReading(node, domains, frozenset(macs), templates,
                           lacks(h) if lacks is not None else None)
    return read


def read_hosts(hosts: list[HostRecord], pool: ConnectionPool,
               lacks: Callable[[Host], VirtfleetError | None] | None = None) -> Reading:
    """Read `hosts` in one fan-out; `lacks(host)` (the preflight) runs on each in the same
    visit and is what the caller asks of candidates (None: nothing asked there)."""
    return Reading(fan_out(hosts, _host(lacks), pool))
