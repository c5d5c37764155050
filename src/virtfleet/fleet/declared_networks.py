"""Networks across the fleet: make every hypervisor carry the libvirt networks its pod and
site declare (for `apply`), and the network preflight (for `host check`).

Both go through the fan-out, so each host answers within its deadline and fails on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from virtfleet.errors import InvalidInput, VirtfleetError
from virtfleet.inventory.fleetfile import Fleet
from virtfleet.inventory.networks import NetworkSpec, declared_networks
from virtfleet.inventory.records import HostRecord
from virtfleet.virt import networks
from virtfleet.virt.fanout import ConnectionPool, HostResult, fan_out
from virtfleet.virt.host import Host
from virtfleet.xml.domain import Domain
from virtfleet.xml.network import Network


@dataclass(frozen=True)
class NetChange:
    """One declared network on one host: what apply did (or would do), or why it could not."""

    host: str
    network: str
    changes: tuple[str, ...]  # define, start, autostart; empty: already as declared
    error: str = ""
    kind: str = ""

    def as_json(self) -> dict[str, object]:
        return {"host": self.host, "network": self.network, "changes": list(self.changes),
                "ok": not self.error, "error": self.error, "kind": self.kind}


def hosts_with_networks(fleet: Fleet) -> list[tuple[HostRecord, list[NetworkSpec]]]:
    """Every hypervisor of the fleet file that has declared networks, with them."""
    out = []
    for site, pod, hv in fleet.hypervisors():
        specs = declared_networks(site, pod)
        if specs:
            out.append((HostRecord(name=hv.name, uri=hv.uri, site=site.name, pod=pod.name,
                                   groups=hv.groups, maintenance=hv.maintenance), specs))
    return out


def converge(fleet: Fleet, *, dry_run: bool,
             progress: Callable[[HostResult[list[NetChange]]], None] | None = None,
             ) -> list[HostResult[list[NetChange]]]:
    """Define, start and autostart each declared network on each of its hypervisors.

    Within a host, one network's refusal (it exists and differs, its subnet overlaps one made
    outside the fleet file) is that network's row, and the host's other networks go ahead.
    """
    targets = hosts_with_networks(fleet)
    by_name = {rec.name: specs for rec, specs in targets}

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
                text = exc.in_row(h.label)
                out.append(NetChange(h.label, spec.name, (), text, exc.kind))
        return out

    pool = ConnectionPool(one_shot=True)
    try:
        return fan_out([rec for rec, _ in targets], work, pool, progress=progress)
    finally:
        pool.close()


def first_bad_input(results: Sequence[HostResult[list[NetChange]]]) -> InvalidInput | None:
    """The first row a dry run refused as bad input (an overlapping subnet), if any."""
    for r in results:
        for c in r.value or ():
            if c.kind == "invalid-input":
                return InvalidInput(f"{c.host}: network {c.network}", c.error)
    return None


# -- net define -------------------------------------------------------------------------------

def define_on(host: Host, doc: Network, field: str, *, start: bool,
              autostart: bool) -> list[str]:
    """Define `doc` on `host`, then start it and mark it autostart if asked; return what was
    done. If a step fails, the steps before it are undone (nothing of it is left on the host)
    and the error says so: a re-run then does not stop at "already exists"."""
    name = str(doc.name)
    networks.define(host, doc, field)
    done = ["defined"]
    try:
        if start:
            networks.start(host, name)
            done.append("started")
        if autostart:
            networks.set_autostart(host, name, True)
            done.append("marked autostart")
    except VirtfleetError as exc:
        try:
            undo_define(host, name, done)
            exc.add(f"; {name} was undefined again, nothing was left behind")
        except VirtfleetError as undo:
            exc.add(f"; could not undefine {name} again ({undo.message})")
        raise
    return done


def undo_define(host: Host, name: str, done: Sequence[str]) -> None:
    """Take back what define_on did on `host` (another host failed: all or nothing)."""
    networks.undefine(host, name, destroy="started" in done)


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
