"""libvirt virtual networks on one hypervisor: virsh's net-* verbs, and making a network what a
spec says (for `apply`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import Any

import libvirt

from virtfleet.errors import Conflict, InvalidInput, NotFound, VirtfleetError
from virtfleet.inventory.networks import (
    NetworkSpec,
    build_network,
    check_no_overlap,
    same,
    spec_of,
)
from virtfleet.virt.errors import libvirt_errors, or_none
from virtfleet.virt.host import Host
from virtfleet.xml.network import Network


@dataclass(frozen=True)
class NetworkInfo:
    """`virsh net-list --all` and `net-info` in one record."""

    name: str
    uuid: str
    active: bool
    persistent: bool
    autostart: bool
    bridge: str | None
    mode: str  # nat, route, open, bridge, hostdev, ... or isolated
    subnets: tuple[str, ...] = ()  # IPv4 CIDRs of its <ip> elements
    virtualport: str | None = None
    portgroups: tuple[str, ...] = field(default=())

    def as_json(self) -> dict[str, object]:
        return {**self.__dict__, "subnets": list(self.subnets),
                "portgroups": list(self.portgroups)}


def _subnets(doc: Network) -> tuple[str, ...]:
    out = []
    for ip in doc.ips:
        if (ip.family or "ipv4") != "ipv4" or ip.address is None:
            continue
        try:
            if ip.prefix is not None:
                net = IPv4Network(f"{ip.address}/{ip.prefix}", strict=False)
            elif ip.netmask is not None:
                net = IPv4Network(f"{ip.address}/{ip.netmask}", strict=False)
            else:
                continue
        except ValueError:  # a network made elsewhere with an address we cannot read
            continue
        out.append(str(net))
    return tuple(out)


def _info(net: Any) -> NetworkInfo:
    doc = Network.parse(net.XMLDesc(0))
    return NetworkInfo(
        name=str(net.name()), uuid=str(net.UUIDString()), active=bool(net.isActive()),
        persistent=bool(net.isPersistent()), autostart=bool(net.autostart()),
        bridge=doc.bridge, mode=doc.forward_mode or "isolated", subnets=_subnets(doc),
        virtualport=doc.virtualport, portgroups=tuple(str(pg.name) for pg in doc.portgroups))


def list_networks(host: Host) -> list[NetworkInfo]:
    """Every network, active or not, sorted by name (one listAllNetworks call)."""
    with libvirt_errors(host.label):
        return sorted((_info(n) for n in host.conn.listAllNetworks(0)), key=lambda i: i.name)


def _lookup(host: Host, name: str) -> Any:
    with libvirt_errors(host.label):
        net = or_none(lambda: host.conn.networkLookupByName(name), libvirt.VIR_ERR_NO_NETWORK)
    if net is None:
        raise NotFound(f"has no network {name!r}", host=host.label)
    return net


def has_network(host: Host, name: str) -> bool:
    try:
        _lookup(host, name)
        return True
    except NotFound:
        return False


def info(host: Host, name: str) -> NetworkInfo:
    net = _lookup(host, name)
    with libvirt_errors(host.label):
        return _info(net)


def network_xml(host: Host, name: str) -> str:
    net = _lookup(host, name)
    with libvirt_errors(host.label):
        return str(net.XMLDesc(0))


def subnets_in_use(host: Host) -> list[tuple[str, IPv4Network]]:
    """(network name, subnet) for every network of the host, to refuse overlapping ones."""
    return [(i.name, IPv4Network(s)) for i in list_networks(host) for s in i.subnets]


def check_overlap(doc: Network, used: list[tuple[str, IPv4Network]], field: str,
                  on: str) -> None:
    """InvalidInput if a subnet of `doc` overlaps one in `used` (another network's)."""
    spec = spec_of(doc)
    if spec is not None:
        check_no_overlap(spec, used, field, on=on)
        return
    # a hand-written XML file virtfleet has no spec for: check its subnets directly
    for mine in (IPv4Network(s) for s in _subnets(doc)):
        for other, net in used:
            if other != doc.name and mine.overlaps(net):
                raise InvalidInput(field, f"{mine} overlaps network {other!r} ({net}) on {on}")


def define(host: Host, doc: Network, field: str = "network") -> NetworkInfo:
    """Define a new persistent network. Conflict if the name is taken; InvalidInput if its
    subnet overlaps one of the host's networks."""
    name = doc.name or ""
    if has_network(host, name):
        raise Conflict(f"network {name!r} already exists", host=host.label)
    check_overlap(doc, subnets_in_use(host), field, host.label)
    with libvirt_errors(host.label):
        return _info(host.conn.networkDefineXML(doc.to_xml()))


def start(host: Host, name: str) -> None:
    net = _lookup(host, name)
    with libvirt_errors(host.label):
        net.create()


def destroy(host: Host, name: str) -> None:
    net = _lookup(host, name)
    with libvirt_errors(host.label):
        net.destroy()


def undefine(host: Host, name: str, *, destroy: bool = False) -> bool:
    """Remove the network's definition. An active one is refused unless `destroy`, which
    stops it first: libvirt would leave it running as a transient network, holding its subnet
    and bridge, while saying it was undefined. Returns whether it was destroyed."""
    net = _lookup(host, name)
    with libvirt_errors(host.label):
        active = bool(net.isActive())
        if active and not destroy:
            raise Conflict(f"network {name!r} is active; destroy it first (or give "
                           "`destroy`)", host=host.label)
        if active:
            net.destroy()
        net.undefine()
    return active


def set_autostart(host: Host, name: str, on: bool) -> None:
    net = _lookup(host, name)
    with libvirt_errors(host.label):
        net.setAutostart(1 if on else 0)


@dataclass(frozen=True)
class Lease:
    """One DHCP lease libvirt's dnsmasq handed out (`virsh net-dhcp-leases`)."""

    network: str
    mac: str
    ip: str  # address/prefix, as virsh prints it
    hostname: str | None
    expires: int  # seconds since the epoch

    def as_json(self) -> dict[str, object]:
        return dict(self.__dict__)


def dhcp_leases(host: Host, name: str) -> list[Lease]:
    net = _lookup(host, name)
    with libvirt_errors(host.label):
        raw = net.DHCPLeases() or []
    return sorted((Lease(name, str(r["mac"]), f"{r['ipaddr']}/{r['prefix']}",
                         r.get("hostname") or None, int(r["expirytime"])) for r in raw),
                  key=lambda lease: lease.ip)


def host_interfaces(host: Host) -> list[str] | None:
    """Names of the host's active interfaces (bridges among them) as libvirt's interface
    driver sees them; None if this libvirt has no interface driver."""
    with libvirt_errors(host.label):
        try:
            return sorted(str(i.name()) for i in host.conn.listAllInterfaces(
                libvirt.VIR_CONNECT_LIST_INTERFACES_ACTIVE))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in (libvirt.VIR_ERR_NO_SUPPORT,
                                        libvirt.VIR_ERR_OPERATION_UNSUPPORTED):
                return None
            raise


def domain_xmls(host: Host) -> list[tuple[str, str]]:
    """(name, XML) of every domain, to see which networks and bridges their NICs need."""
    with libvirt_errors(host.label):
        return [(str(d.name()), str(d.XMLDesc(0))) for d in host.conn.listAllDomains(0)]


def ensure(host: Host, spec: NetworkSpec, field: str, *, dry_run: bool = False) -> list[str]:
    """Make `spec` defined, active and autostarted on `host`; return what was (or, dry, would
    be) done. A network of that name that differs is a Conflict, never rewritten: VMs may be
    using it, and changing it under them is an operator's decision."""
    changes: list[str] = []
    existing = next((i for i in list_networks(host) if i.name == spec.name), None)
    if existing is None:
        check_no_overlap(spec, subnets_in_use(host), field, on=host.label)
        changes.append("define")
        if not dry_run:
            with libvirt_errors(host.label):
                host.conn.networkDefineXML(build_network(spec).to_xml())
        existing = NetworkInfo(spec.name, "", False, True, False, spec.bridge, spec.mode)
    else:
        have = spec_of(Network.parse(network_xml(host, spec.name)))
        if have is None or not same(have, spec):
            raise Conflict(f"network {spec.name!r} exists and differs from the fleet file; "
                           "virtfleet does not rewrite a network VMs may use (undefine it, or "
                           "rename one)", host=host.label)
        if not existing.persistent:
            raise Conflict(f"network {spec.name!r} is transient; define it persistently "
                           "first", host=host.label)
    if not existing.active:
        changes.append("start")
        if not dry_run:
            try:
                start(host, spec.name)
            except VirtfleetError:
                if changes[0] == "define":  # ours, just defined: leave nothing half-made
                    undefine(host, spec.name)
                raise
    if not existing.autostart:
        changes.append("autostart")
        if not dry_run:
            set_autostart(host, spec.name, True)
    return changes
