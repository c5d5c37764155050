"""The networks the fleet file declares: every hypervisor made to carry the libvirt networks
its pod and site declare (for `apply`), and the network preflight (for `host check`).

Both go through the fan-out, so each host answers within its deadline and fails on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from virtfleet.errors import InvalidInput, VirtfleetError
from virtfleet.fleet.scope import FanOutService, Progress
from virtfleet.inventory.fleetfile import Fleet
from virtfleet.inventory.networks import NetworkSpec, declared_networks
from virtfleet.inventory.records import HostFailure, HostRecord
from virtfleet.virt import networks
from virtfleet.virt.fanout import ConnectionPool
from virtfleet.virt.host import Host
from virtfleet.xml.domain import Domain


@dataclass(frozen=True)
class NetChange:
    """One declared network on one host: what apply did (or would do), or why it could not."""

    host: str
    network: str
    changes: tuple[str, ...]  # define, start, autostart; empty: already as declared
    error: VirtfleetError | None = None

    def as_json(self) -> dict[str, object]:
        return {"host": self.host, "network": self.network, "changes": list(self.changes),
                "ok": self.error is None,
                "error": self.error.in_row(self.host) if self.error else "",
                "kind": self.error.kind if self.error else ""}


@dataclass(frozen=True)
class NetworkChanges:
    """What apply did (or, dry, would do) to the declared networks, host by host; `failures`:
    the hosts that could not be asked at all."""

    changes: tuple[NetChange, ...]
    failures: tuple[HostFailure, ...]
    hosts: int  # how many hypervisors have declared networks

    @property
    def ok(self) -> bool:
        return not self.failures and all(c.error is None for c in self.changes)

    def first_bad_input(self) -> InvalidInput | None:
        """The first network a host refused as bad input (a subnet overlapping one it has)."""
        for c in self.changes:
            if isinstance(c.error, InvalidInput):
                return InvalidInput(f"network {c.network}", c.error.in_row(c.host),
                                    host=c.host)
        return None

    def as_json(self) -> list[dict[str, object]]:
        return [c.as_json() for c in self.changes] + [
            {"host": f.host, "network": None, "changes": [], "ok": False,
             "error": f.message, "kind": f.kind} for f in self.failures]


def hosts_with_networks(fleet: Fleet) -> list[tuple[HostRecord, list[NetworkSpec]]]:
    """Every hypervisor of the fleet file that has declared networks, with them."""
    out = []
    for site, pod, hv in fleet.hypervisors():
        specs = declared_networks(site, pod)
        if specs:
            out.append((HostRecord(name=hv.name, uri=hv.uri, site=site.name, pod=pod.name,
                                   groups=hv.groups, maintenance=hv.maintenance), specs))
    return out


class DeclaredNetworks(FanOutService):
    """The fleet file's libvirt networks onto its hypervisors, for `apply`: each declared
    network defined, started and autostarted on each hypervisor of its site or pod.

    `plan` is a dry pass over every host, to make first: a declared subnet overlapping a
    network a host already has is bad input, raised before the store or any host is changed.
    Within a host, one network's refusal (it exists and differs, its subnet overlaps one made
    outside the fleet file) is that network's row, and the host's other networks go ahead.
    """

    def __init__(self, fleet: Fleet, pool: ConnectionPool | None = None) -> None:
        super().__init__(pool)
        self.targets = hosts_with_networks(fleet)

    def plan(self, progress: Progress | None = None) -> NetworkChanges:
        """What apply would do; raises the first bad input a host found."""
        dry = self._converge(True, progress)
        bad = dry.first_bad_input()
        if bad is not None:
            raise bad
        return dry

    def apply(self, progress: Progress | None = None) -> NetworkChanges:
        return self._converge(False, progress)

    def _converge(self, dry_run: bool, progress: Progress | None) -> NetworkChanges:
        by_name = {rec.name: specs for rec, specs in self.targets}

        def work(h: Host) -> list[NetChange]:
            out = []
            for spec in by_name[h.label]:
                try:
                    done = networks.ensure(h, spec, f"libvirt_networks {spec.name}",
                                           dry_run=dry_run)
                    out.append(NetChange(h.label, spec.name, tuple(done)))
                except VirtfleetError as exc:
                    if exc.retryable:
                        raise  # the host, not this network, is the problem
                    out.append(NetChange(h.label, spec.name, (), exc))
            return out

        answers = self.ask([rec for rec, _ in self.targets], "networks", work, progress)
        return NetworkChanges(tuple(c for _h, changes in answers.values for c in changes),
                              tuple(answers.failures), len(self.targets))


# -- preflight --------------------------------------------------------------------------------

def network_problems(host: Host, declared: Sequence[NetworkSpec] = ()) -> list[str]:
    """What would stop this host's VMs (or its declared networks) from having a link.

    - every declared network is defined and active;
    - every network a VM's NIC names is defined and active (else the VM cannot start);
    - every host bridge a VM's NIC or a bridge-mode network names exists, as libvirt's
      interface list or an active network's bridge shows it (no shelling out to `ip`).
    """
    problems: list[str] = []
    nets = {n.name: n for n in networks.list_networks(host)}
    ifaces = networks.host_interfaces(host)
    if ifaces is None:
        problems.append("cannot check bridges: this host's libvirt has no interface driver")
    # A bridge counts as present if libvirt lists it, or an active network made it.
    bridges = set(ifaces or ()) | {n.bridge for n in nets.values()
                                   if n.active and n.bridge and n.mode != "bridge"}
    for spec in declared:
        have = nets.get(spec.name)
        if have is None:
            problems.append(f"declared network {spec.name!r} is not defined (run apply)")
        elif not have.active:
            problems.append(f"declared network {spec.name!r} is not active")
    for n in nets.values():
        if ifaces is not None and n.active and n.mode == "bridge" and n.bridge and \
                n.bridge not in bridges:
            problems.append(f"network {n.name!r} uses bridge {n.bridge!r}, which this host "
                            "does not have")
        if n.autostart and not n.active:
            problems.append(f"network {n.name!r} is marked autostart but not active")
    needs_net: dict[str, list[str]] = {}
    needs_bridge: dict[str, list[str]] = {}
    for name, xml in networks.domain_xmls(host):
        for nic in Domain.parse(xml).devices.interfaces:
            if nic.type == "network" and nic.source_network:
                needs_net.setdefault(nic.source_network, []).append(name)
            elif nic.type == "bridge" and nic.source_bridge:
                needs_bridge.setdefault(nic.source_bridge, []).append(name)
    for net, vms in sorted(needs_net.items()):
        have = nets.get(net)
        if have is None or not have.active:
            state = "is not defined" if have is None else "is not active"
            problems.append(f"network {net!r} {state}; needed by {_vms(vms)}")
    for br, vms in sorted(needs_bridge.items()):
        if ifaces is not None and br not in bridges:
            problems.append(f"bridge {br!r} is missing; needed by {_vms(vms)}")
    return problems


def _vms(names: list[str]) -> str:
    shown = ", ".join(sorted(names)[:3])
    return f"VM {shown}" if len(names) == 1 else \
        f"VMs {shown}" + (f" and {len(names) - 3} more" if len(names) > 3 else "")
