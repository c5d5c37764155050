"""libvirt virtual networks as specs: what `net define` options and the fleet file's
`libvirt_networks:` lists declare, checked, and turned into network XML.

One spec model serves both, so the command line and the fleet file share every rule. The rules
that span fields (a DHCP range inside its subnet, a portgroup only where libvirt can tag) are in
`check_spec`, which names the failing field through a caller-given mapping: the option on the
command line (`--dhcp-range`), the path in the fleet file (`sites[0].libvirt_networks[1].dhcp`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from virtfleet.errors import InvalidInput
from virtfleet.validate import check_name
from virtfleet.xml.network import IP, DhcpHost, DhcpRange, Network, PortGroup

if TYPE_CHECKING:  # fleetfile imports this module for its fields
    from virtfleet.inventory.fleetfile import Fleet, Pod, Site

# Linux interface names: IFNAMSIZ is 16 with the NUL, so 15 characters.
IFACE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")

Mode = Literal["nat", "route", "open", "isolated", "bridge", "hostdev"]
IP_MODES = ("nat", "route", "open", "isolated")  # libvirt makes the bridge and serves DHCP


def check_iface(field: str, value: str) -> str:
    if len(value) > 15:
        raise InvalidInput(field, f"{value!r} is {len(value)} characters; a Linux interface "
                           "name has at most 15")
    if not IFACE_RE.match(value):
        raise InvalidInput(field, f"{value!r} is not an interface name (letters, digits, "
                           "'.', '_', '-', ':')")
    return value


def check_vlan(field: str, value: int) -> int:
    if not 1 <= value <= 4094:
        raise InvalidInput(field, f"VLAN id {value} is outside 1-4094")
    return value


def parse_cidr(field: str, text: str) -> IPv4Network:
    """An IPv4 network in CIDR form with no host bits: 192.168.122.0/24."""
    if "/" not in text:
        raise InvalidInput(field, f"{text!r} is not CIDR (write it as 192.168.122.0/24)")
    try:
        net = IPv4Network(text, strict=False)
    except ValueError:
        raise InvalidInput(field, f"{text!r} is not an IPv4 network in CIDR form") from None
    if str(net.network_address) != text.split("/")[0]:
        raise InvalidInput(field, f"{text!r} has host bits set (did you mean {net}?)")
    if net.prefixlen > 30:
        raise InvalidInput(field, f"{text!r} is too small for a gateway and DHCP clients "
                           "(/30 at most)")
    return net


def _iface(value: str) -> str:
    try:
        return check_iface("name", value)
    except InvalidInput as exc:
        raise ValueError(exc.rule) from None


def _vlan(value: int) -> int:
    try:
        return check_vlan("vlan", value)
    except InvalidInput as exc:
        raise ValueError(exc.rule) from None


def _name(value: str) -> str:
    try:
        check_name("name", value)
    except InvalidInput as exc:
        raise ValueError(exc.rule) from None
    return value


def _mac(value: str) -> str:
    mac = value.lower().replace("-", ":")
    if not MAC_RE.match(mac) or int(mac[:2], 16) & 1:
        raise ValueError(f"{value!r} is not a unicast MAC address")
    return mac


def _cidr(value: object) -> str:
    try:
        return str(parse_cidr("subnet", str(value)))
    except InvalidInput as exc:
        raise ValueError(exc.rule) from None


Iface = Annotated[str, AfterValidator(_iface)]
Vlan = Annotated[int, AfterValidator(_vlan)]
NetName = Annotated[str, AfterValidator(_name)]
Mac = Annotated[str, AfterValidator(_mac)]
Cidr = Annotated[str, AfterValidator(_cidr)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DhcpRangeSpec(_Model):
    start: IPv4Address
    end: IPv4Address


class DhcpHostSpec(_Model):
    mac: Mac
    ip: IPv4Address
    name: NetName | None = None


class PortGroupSpec(_Model):
    """A portgroup: VMs pick it with `--network network=NET,portgroup=NAME`."""

    name: Iface
    vlans: tuple[Vlan, ...] = Field(default=(), max_length=64)
    trunk: bool = False  # several tags pass tagged; one tag without trunk is an access port
    default: bool = False


class NetworkSpec(_Model):
    """One libvirt network. `mode` says what it is:

    nat / route / open / isolated: libvirt makes a bridge (`bridge`, or virbrN) with an address
        in `subnet` and serves DHCP from `dhcp`;
    bridge: an existing host bridge (`bridge`, required), Open vSwitch if `ovs`;
    hostdev: a pool of SR-IOV VFs of the physical function `pf`.
    """

    name: NetName
    mode: Mode = "nat"
    subnet: Cidr | None = None
    address: IPv4Address | None = None  # the host's address in it; default the first one
    dhcp: tuple[DhcpRangeSpec, ...] = ()
    hosts: tuple[DhcpHostSpec, ...] = ()
    bridge: Iface | None = None
    stp: bool = True
    forward_dev: Iface | None = None
    ovs: bool = False
    portgroups: tuple[PortGroupSpec, ...] = ()
    pf: Iface | None = None

    @property
    def network(self) -> IPv4Network | None:
        return None if self.subnet is None else IPv4Network(self.subnet)

    @property
    def gateway(self) -> IPv4Address | None:
        net = self.network
        if net is None:
            return None
        return self.address or next(net.hosts())


Where = Callable[[str], str]


def check_spec(spec: NetworkSpec, where: Where) -> None:
    """Rules across fields; `where(field)` names a field the way the caller's user wrote it."""
    net = spec.network
    if spec.mode in IP_MODES:
        if net is None:
            raise InvalidInput(where("subnet"), f"missing: a {spec.mode} network needs a "
                               "subnet (CIDR)")
        if spec.pf is not None or spec.ovs:
            raise InvalidInput(where("pf" if spec.pf else "ovs"),
                               f"not for a {spec.mode} network")
        if spec.portgroups:
            raise InvalidInput(where("portgroups"), "VLAN portgroups need an Open vSwitch "
                               "bridge or an SR-IOV (hostdev) network")
        if spec.mode not in ("nat", "route") and spec.forward_dev is not None:
            raise InvalidInput(where("forward_dev"), "only nat and route networks forward")
        gw = spec.gateway
        assert gw is not None
        if gw not in net or gw in (net.network_address, net.broadcast_address):
            raise InvalidInput(where("address"), f"{gw} is not a host address of {net}")
        for rng in spec.dhcp:
            for end in (rng.start, rng.end):
                if end not in net or end in (net.network_address, net.broadcast_address):
                    raise InvalidInput(where("dhcp"), f"range {rng.start}-{rng.end} is "
                                       f"outside subnet {net} ({end})")
            if rng.start > rng.end:
                raise InvalidInput(where("dhcp"), f"range {rng.start}-{rng.end} ends before "
                                   "it starts")
            if rng.start <= gw <= rng.end:
                raise InvalidInput(where("dhcp"), f"range {rng.start}-{rng.end} contains "
                                   f"the network's own address {gw}")
        for h in spec.hosts:
            if h.ip not in net or h.ip == gw:
                raise InvalidInput(where("hosts"), f"{h.ip} is not a free host address of "
                                   f"{net}")
        if spec.hosts and not spec.dhcp:
            raise InvalidInput(where("hosts"), "fixed leases need a DHCP range")
        return
    for key in ("subnet", "address"):
        if getattr(spec, key) is not None:
            raise InvalidInput(where(key), f"not for a {spec.mode} network (libvirt gives "
                               "it no address)")
    if spec.dhcp or spec.hosts:
        raise InvalidInput(where("dhcp"), f"not for a {spec.mode} network (no DHCP)")
    if spec.forward_dev is not None:
        raise InvalidInput(where("forward_dev"), f"not for a {spec.mode} network")
    if spec.mode == "bridge":
        if spec.bridge is None:
            raise InvalidInput(where("bridge"), "missing: a bridge network names the host "
                               "bridge")
        if spec.pf is not None:
            raise InvalidInput(where("pf"), "only for a hostdev network")
        if spec.portgroups and not spec.ovs:
            raise InvalidInput(where("portgroups"), "VLAN portgroups on a host bridge need "
                               "Open vSwitch (ovs: true); a Linux bridge cannot tag per port")
    else:  # hostdev
        if spec.pf is None:
            raise InvalidInput(where("pf"), "missing: a hostdev network names the SR-IOV "
                               "physical function (pf)")
        if spec.bridge is not None or spec.ovs:
            raise InvalidInput(where("bridge" if spec.bridge else "ovs"),
                               "not for a hostdev network")
    seen: set[str] = set()
    defaults = 0
    for pg in spec.portgroups:
        if pg.name in seen:
            raise InvalidInput(where("portgroups"), f"duplicate portgroup {pg.name!r}")
        seen.add(pg.name)
        defaults += pg.default
        if len(pg.vlans) > 1 and not pg.trunk:
            raise InvalidInput(where("portgroups"), f"portgroup {pg.name!r} has several "
                               "VLANs: set trunk")
        if spec.mode == "hostdev" and pg.trunk:
            raise InvalidInput(where("portgroups"), "an SR-IOV VF takes one VLAN tag, not "
                               "a trunk")
    if defaults > 1:
        raise InvalidInput(where("portgroups"), "at most one portgroup is the default")


def check_no_overlap(spec: NetworkSpec, others: Iterable[tuple[str, IPv4Network]],
                     field: str, on: str = "") -> None:
    """Refuse a subnet that overlaps another network's (on one host, routing would break)."""
    net = spec.network
    if net is None:
        return
    for name, other in others:
        if name != spec.name and net.overlaps(other):
            raise InvalidInput(field, f"{net} overlaps network {name!r} ({other})"
                               + (f" on {on}" if on else ""))


def build_network(spec: NetworkSpec, uuid: str | None = None) -> Network:
    """The network XML for a checked spec."""
    n = Network()
    n.name = spec.name
    if uuid is not None:
        n.uuid = uuid
    if spec.mode in IP_MODES:
        if spec.mode != "isolated":
            n.forward_mode = spec.mode
            if spec.forward_dev is not None:
                n.forward_dev = spec.forward_dev
        if spec.bridge is not None:
            n.bridge = spec.bridge
        n.stp = spec.stp
        net = spec.network
        assert net is not None
        ip = IP()
        ip.address = str(spec.gateway)
        ip.netmask = str(net.netmask)
        for rng in spec.dhcp:
            r = DhcpRange()
            r.start, r.end = str(rng.start), str(rng.end)
            ip.dhcp_ranges.append(r)
        for h in spec.hosts:
            dh = DhcpHost()
            dh.mac, dh.ip = h.mac, str(h.ip)
            if h.name:
                dh.name = h.name
            ip.dhcp_hosts.append(dh)
        n.ips.append(ip)
        return n
    if spec.mode == "bridge":
        n.forward_mode = "bridge"
        n.bridge = spec.bridge
        if spec.ovs:
            n.virtualport = "openvswitch"
    else:
        n.forward_mode = "hostdev"
        n.forward_managed = True  # libvirt detaches the VF from its host driver and back
        n.forward_pf = spec.pf
    for pg_spec in spec.portgroups:
        pg = PortGroup()
        pg.name = pg_spec.name
        if pg_spec.default:
            pg.default = True
        pg.set_vlans(list(pg_spec.vlans), trunk=pg_spec.trunk)
        n.portgroups.append(pg)
    return n


def spec_of(doc: Network) -> NetworkSpec | None:
    """The spec a network XML matches, if it is one of the shapes virtfleet builds; for
    comparing what a host has with what the fleet file declares."""
    mode = doc.forward_mode or "isolated"
    data: dict[str, object] = {"name": doc.name, "mode": mode}
    try:
        if mode in IP_MODES:
            ips = [ip for ip in doc.ips if (ip.family or "ipv4") == "ipv4"]
            if len(ips) != 1 or ips[0].address is None:
                return None
            ip = ips[0]
            prefix = ip.prefix if ip.prefix is not None else IPv4Network(
                f"0.0.0.0/{ip.netmask}").prefixlen
            data["subnet"] = str(IPv4Network(f"{ip.address}/{prefix}", strict=False))
            data["address"] = ip.address
            data["dhcp"] = [{"start": r.start, "end": r.end} for r in ip.dhcp_ranges]
            data["hosts"] = [{"mac": h.mac, "ip": h.ip, **({"name": h.name} if h.name else {})}
                             for h in ip.dhcp_hosts]
            if doc.bridge:
                data["bridge"] = doc.bridge
            data["stp"] = doc.stp if doc.stp is not None else True
            if doc.forward_dev:
                data["forward_dev"] = doc.forward_dev
        elif mode in ("bridge", "hostdev"):
            if mode == "bridge":
                data["bridge"] = doc.bridge
                data["ovs"] = doc.virtualport == "openvswitch"
            else:
                data["pf"] = doc.forward_pf
            data["portgroups"] = [{"name": pg.name, "vlans": pg.vlans, "trunk": pg.vlan_trunk,
                                   "default": bool(pg.default)} for pg in doc.portgroups]
        else:
            return None
        return NetworkSpec.model_validate(data)
    except (ValueError, InvalidInput):
        return None


def same(a: NetworkSpec, b: NetworkSpec) -> bool:
    """Whether two specs describe the same network (libvirt fills in a bridge name for
    nat/route/isolated networks that do not name one; that is not a difference)."""
    da, db = a.model_dump(), b.model_dump()
    if a.mode in IP_MODES and (a.bridge is None or b.bridge is None):
        da.pop("bridge"), db.pop("bridge")
    da["address"], db["address"] = str(a.gateway), str(b.gateway)
    return da == db


# -- the fleet file ---------------------------------------------------------------------------

def declared_networks(site: Site, pod: Pod) -> list[NetworkSpec]:
    """The networks every hypervisor of `pod` should have: its site's, then its own."""
    return [*site.libvirt_networks, *pod.libvirt_networks]


def check_fleet_networks(fleet: Fleet) -> None:
    """Each declared network obeys the spec rules; within what one pod's hypervisors get
    (site + pod networks) names are unique and subnets do not overlap."""
    for si, site in enumerate(fleet.sites):
        site_nets = [(n, f"sites[{si}].libvirt_networks[{ni}]")
                     for ni, n in enumerate(site.libvirt_networks)]
        for spec, where in site_nets:
            check_spec(spec, lambda f, w=where: f"{w}.{f}")  # type: ignore[misc]
        _check_set(site_nets)
        for pi, pod in enumerate(site.pods):
            pod_nets = [(n, f"sites[{si}].pods[{pi}].libvirt_networks[{ni}]")
                        for ni, n in enumerate(pod.libvirt_networks)]
            for spec, where in pod_nets:
                check_spec(spec, lambda f, w=where: f"{w}.{f}")  # type: ignore[misc]
            _check_set(site_nets + pod_nets)


def _check_set(nets: list[tuple[NetworkSpec, str]]) -> None:
    for i, (spec, where) in enumerate(nets):
        for other, other_where in nets[:i]:
            if spec.name == other.name:
                raise InvalidInput(f"{where}.name", f"duplicate libvirt network "
                                   f"{spec.name!r} (first at {other_where}.name)")
            if spec.network is not None and other.network is not None and \
                    spec.network.overlaps(other.network):
                raise InvalidInput(f"{where}.subnet", f"{spec.network} overlaps network "
                                   f"{other.name!r} ({other.network}, at {other_where})")
