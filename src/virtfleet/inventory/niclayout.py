"""A hypervisor's own network: NICs, bonds, VLAN sub-interfaces, bridges, OVS bridges, addresses.

The fleet file gives a `nic_layout` per hypervisor, or a default at pod, site or fleet level (the
nearest one wins, as a whole: layouts are not merged). Without one, the built-in seven-NIC
design applies (BUILTIN_LAYOUT): management, storage and VM traffic each on an active-backup
pair, plus the IPMI port, which belongs to the BMC and is only noted.

This module imports nothing from fleetfile.py (fleetfile imports it), so BondSpec, which the
kickstart generator also uses for the install-time bond, lives here.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Interface
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from virtfleet.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from virtfleet.inventory.fleetfile import Fleet

IFNAMSIZ = 16  # the kernel's buffer, NUL included: names hold at most 15 characters
_IFNAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}$")

# The bonding driver's modes in the order of their numbers (mode=1 is active-backup).
BOND_MODES = ("balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad",
              "balance-tlb", "balance-alb")
BondMode = Literal["balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad",
                   "balance-tlb", "balance-alb"]
_PRIMARY_MODES = ("active-backup", "balance-tlb", "balance-alb")  # the driver's own rule


def _ifname(value: str) -> str:
    if len(value) > IFNAMSIZ - 1:
        raise ValueError(f"{value!r} is {len(value)} characters; an interface name holds at "
                         f"most {IFNAMSIZ - 1} (the kernel's IFNAMSIZ)")
    if not _IFNAME_RE.match(value) or value.endswith((".", "-")) or ".." in value:
        raise ValueError(f"{value!r} is not an interface name: a letter, then letters, digits "
                         "and _ . - (like eth0, bond0.100, br-vm)")
    return value


def _mac(value: str) -> str:
    low = value.lower()
    if not _MAC_RE.match(low):
        raise ValueError(f"{value!r} is not a MAC address like 52:54:00:12:34:56")
    if int(low[:2], 16) & 1:
        raise ValueError(f"{value!r} is a multicast address, not a NIC's")
    return low.replace("-", ":")


def _bond_mode(value: Any) -> Any:
    """The ifcfg numbers (mode=1) mean the driver's names; keep one spelling in the model."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if isinstance(text, str) and text.isdigit():
        if int(text) >= len(BOND_MODES):
            raise ValueError(f"bond mode {text} does not exist (0-6, or a name such as "
                             "active-backup)")
        return BOND_MODES[int(text)]
    return value


def _vlan_id(value: int) -> int:
    if not 1 <= value <= 4094:
        raise ValueError(f"VLAN id {value} is outside 1-4094 (0 and 4095 are reserved)")
    return value


IfName = Annotated[str, AfterValidator(_ifname)]
Mac = Annotated[str, AfterValidator(_mac)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BondSpec(_Model):
    """A Linux bond: the install-time management bond (provision.bond) and the layout's bonds.
    `interfaces` are its slaves; mode takes a name or the ifcfg number (1 = active-backup)."""

    name: IfName = "bond0"
    mode: Annotated[BondMode, BeforeValidator(_bond_mode)] = "active-backup"
    interfaces: tuple[IfName, ...] = Field(min_length=2, max_length=8)
    miimon: int = Field(default=100, ge=0, le=10000)
    primary: IfName | None = None

    @model_validator(mode="after")
    def _primary_is_a_slave(self) -> BondSpec:
        if self.primary is None:
            return self
        if self.primary not in self.interfaces:
            raise ValueError(f"primary {self.primary!r} is not one of the bond's interfaces")
        if self.mode not in _PRIMARY_MODES:
            raise ValueError(f"primary needs mode {', '.join(_PRIMARY_MODES)} (not {self.mode})")
        return self


class Ethernet(_Model):
    """A physical NIC the OS configures."""

    name: IfName
    mac: Mac | None = None
    mtu: int | None = Field(default=None, ge=68, le=65535)


class Vlan(_Model):
    """An 802.1Q sub-interface of a trunk: a site trunks its VM VLANs into the hypervisor."""

    name: IfName  # conventionally <parent>.<id>
    id: Annotated[int, AfterValidator(_vlan_id)]
    parent: IfName


class Bridge(_Model):
    """A Linux bridge VMs attach to (libvirt <interface type='bridge'>)."""

    name: IfName
    ports: tuple[IfName, ...] = ()
    stp: bool = False


class OvsBridge(_Model):
    """An Open vSwitch bridge, for sites that want OVS instead of Linux bridges."""

    name: IfName
    ports: tuple[IfName, ...] = ()


class StaticAddress(_Model):
    """An address the host holds; `address` carries its prefix (10.1.1.20/24)."""

    interface: IfName
    address: IPv4Interface
    gateway: IPv4Address | None = None
    dns: tuple[IPv4Address, ...] = Field(default=(), max_length=3)  # ifcfg has DNS1-DNS3


class Ipmi(_Model):
    """The BMC's dedicated port: out of band, not configured by the host's OS; only noted."""

    port: str = Field(default="dedicated", max_length=64, pattern=r"^[A-Za-z0-9_.:/-]+$")
    address: IPv4Interface | None = None


class NicLayout(_Model):
    """A hypervisor's network. `management` names the interface that takes the inventory address
    (provision.ip in its network's prefix, with that network's gateway and DNS)."""

    ethernets: tuple[Ethernet, ...] = ()
    bonds: tuple[BondSpec, ...] = ()
    vlans: tuple[Vlan, ...] = ()
    bridges: tuple[Bridge, ...] = ()
    ovs_bridges: tuple[OvsBridge, ...] = ()
    addresses: tuple[StaticAddress, ...] = ()
    management: IfName | None = None
    ipmi: Ipmi | None = None

    def names(self) -> list[str]:
        return [i.name for group in (self.ethernets, self.bonds, self.vlans, self.bridges,
                                     self.ovs_bridges) for i in group]

    def masters(self) -> dict[str, tuple[str, str]]:
        """Each enslaved interface -> (kind of master: bond/bridge/ovs, master's name)."""
        out: dict[str, tuple[str, str]] = {}
        for kind, group in (("bond", [(b.name, b.interfaces) for b in self.bonds]),
                            ("bridge", [(b.name, b.ports) for b in self.bridges]),
                            ("ovs", [(b.name, b.ports) for b in self.ovs_bridges])):
            for master, members in group:
                for m in members:
                    out.setdefault(m, (kind, master))
        return out

    def canonical(self) -> NicLayout:
        """The same layout with every list in name order: what a parser can give back."""
        # Members too: neither a bond's slaves nor a bridge's ports have an order.
        return self.model_copy(update={
            "ethernets": tuple(sorted(self.ethernets, key=lambda i: i.name)),
            "bonds": tuple(sorted((b.model_copy(update={"interfaces": tuple(sorted(
                b.interfaces))}) for b in self.bonds), key=lambda i: i.name)),
            "vlans": tuple(sorted(self.vlans, key=lambda i: i.name)),
            "bridges": tuple(sorted((b.model_copy(update={"ports": tuple(sorted(b.ports))})
                                     for b in self.bridges), key=lambda i: i.name)),
            "ovs_bridges": tuple(sorted((b.model_copy(update={"ports": tuple(sorted(b.ports))})
                                         for b in self.ovs_bridges), key=lambda i: i.name)),
            "addresses": tuple(sorted(self.addresses, key=lambda a: (a.interface,
                                                                     a.address))),
        })


# The built-in design: seven NICs, so no single port or switch failure cuts a hypervisor off.
# bond0 on eth0/eth1 (active-backup, mode=1 miimon=80) carries the hypervisor's own management
# address; bond1 is storage; bond2 carries VM traffic through br-vm (a site trunks VLANs into
# it by giving its own layout); the seventh port is the BMC's.
BUILTIN_LAYOUT = NicLayout(
    ethernets=tuple(Ethernet(name=f"eth{i}") for i in range(6)),
    bonds=(
        BondSpec(name="bond0", mode="active-backup", interfaces=("eth0", "eth1"), miimon=80),
        BondSpec(name="bond1", mode="active-backup", interfaces=("eth2", "eth3"), miimon=80),
        BondSpec(name="bond2", mode="active-backup", interfaces=("eth4", "eth5"), miimon=80),
    ),
    bridges=(Bridge(name="br-vm", ports=("bond2",), stp=False),),
    management="bond0",
    ipmi=Ipmi(port="dedicated"),
)


def check_layout(layout: NicLayout, where: str) -> None:
    """Rules across a layout's interfaces; `where` is its path in the fleet file."""
    seen: dict[str, str] = {}
    groups: tuple[tuple[str, list[str]], ...] = tuple(
        (key, [i.name for i in group]) for key, group in (
            ("ethernets", layout.ethernets), ("bonds", layout.bonds), ("vlans", layout.vlans),
            ("bridges", layout.bridges), ("ovs_bridges", layout.ovs_bridges)))
    for key, names in groups:
        for i, name in enumerate(names):
            field = f"{where}.{key}[{i}].name"
            if name in seen:
                raise InvalidInput(field, f"duplicate interface name {name!r} (first at "
                                   f"{seen[name]})")
            seen[name] = field
    ethernets = {e.name for e in layout.ethernets}

    def known(name: str, field: str, what: str) -> None:
        if name not in seen:
            raise InvalidInput(field, f"unknown interface {name!r}: {what} must be declared "
                               "in this layout")

    taken: dict[str, str] = {}  # interface -> the master that holds it

    def enslave(name: str, field: str, master: str) -> None:
        if name in taken:
            raise InvalidInput(field, f"{name!r} is already in {taken[name]}; an interface "
                               "joins one bond or bridge at most")
        taken[name] = master

    for bi, bond in enumerate(layout.bonds):
        for si, slave in enumerate(bond.interfaces):
            field = f"{where}.bonds[{bi}].interfaces[{si}]"
            known(slave, field, "a bond's interfaces")
            if slave not in ethernets:
                raise InvalidInput(field, f"{slave!r} is not an ethernet; a bond's "
                                   "interfaces are physical NICs")
            enslave(slave, field, f"bond {bond.name!r}")
    vlan_keys: dict[tuple[str, int], str] = {}
    for vi, vlan in enumerate(layout.vlans):
        field = f"{where}.vlans[{vi}]"
        known(vlan.parent, f"{field}.parent", "a VLAN's parent")
        if vlan.parent in taken:
            raise InvalidInput(f"{field}.parent", f"{vlan.parent!r} is in {taken[vlan.parent]}; "
                               "tag the bond or bridge instead")
        if any(v.name == vlan.parent for v in layout.vlans):
            raise InvalidInput(f"{field}.parent", f"{vlan.parent!r} is itself a VLAN")
        tag = (vlan.parent, vlan.id)
        if tag in vlan_keys:
            raise InvalidInput(f"{field}.id", f"VLAN {vlan.id} on {vlan.parent!r} is already "
                               f"{vlan_keys[tag]}")
        vlan_keys[tag] = vlan.name
    bridge_names = {b.name for b in layout.bridges} | {b.name for b in layout.ovs_bridges}
    bridges: list[tuple[str, Bridge | OvsBridge]] = [
        *((f"bridges[{i}]", b) for i, b in enumerate(layout.bridges)),
        *((f"ovs_bridges[{i}]", b) for i, b in enumerate(layout.ovs_bridges))]
    for path, br in bridges:
        for pi, port in enumerate(br.ports):
            field = f"{where}.{path}.ports[{pi}]"
            known(port, field, "a bridge's ports")
            if port in bridge_names:
                raise InvalidInput(field, f"{port!r} is a bridge; bridges do not nest")
            enslave(port, field, f"bridge {br.name!r}")
    gateways: list[str] = []
    for ai, addr in enumerate(layout.addresses):
        field = f"{where}.addresses[{ai}]"
        known(addr.interface, f"{field}.interface", "an address's interface")
        if addr.interface in taken:
            raise InvalidInput(f"{field}.interface", f"{addr.interface!r} is in "
                               f"{taken[addr.interface]}; put the address on that instead")
        _check_address(addr.address, f"{field}.address")
        if addr.gateway is not None:
            if addr.gateway not in addr.address.network or addr.gateway == addr.address.ip:
                raise InvalidInput(f"{field}.gateway", f"{addr.gateway} is not another host "
                                   f"of {addr.address.network}")
            gateways.append(f"{field}.gateway")
    if len(gateways) > 1:
        raise InvalidInput(gateways[1], f"a second default gateway (first at {gateways[0]})")
    if layout.management is not None:
        known(layout.management, f"{where}.management", "the management interface")
        if layout.management in taken:
            raise InvalidInput(f"{where}.management", f"{layout.management!r} is in "
                               f"{taken[layout.management]}; name that instead")
    if layout.ipmi is not None and layout.ipmi.address is not None:
        _check_address(layout.ipmi.address, f"{where}.ipmi.address")


def _check_address(addr: IPv4Interface, field: str) -> None:
    net = addr.network
    if net.prefixlen < 8:
        raise InvalidInput(field, f"prefix /{net.prefixlen} is too short for a host (8-32)")
    if net.prefixlen < 31 and addr.ip in (net.network_address, net.broadcast_address):
        raise InvalidInput(field, f"{addr.ip} is the network or broadcast address of {net}")
    if addr.ip.is_multicast or addr.ip.is_unspecified or addr.ip.is_loopback:
        raise InvalidInput(field, f"{addr.ip} is not a unicast host address")


def layout_for(fleet: Fleet, hypervisor: str) -> tuple[NicLayout, str]:
    """The layout that applies to a hypervisor and the path it came from ('built-in' for
    BUILTIN_LAYOUT): its own, else its pod's, site's, fleet's."""
    for si, site in enumerate(fleet.sites):
        for pi, pod in enumerate(site.pods):
            for hi, hv in enumerate(pod.hypervisors):
                if hv.name != hypervisor:
                    continue
                for layout, path in (
                        (hv.nic_layout, f"sites[{si}].pods[{pi}].hypervisors[{hi}].nic_layout"),
                        (pod.nic_layout, f"sites[{si}].pods[{pi}].nic_layout"),
                        (site.nic_layout, f"sites[{si}].nic_layout"),
                        (fleet.nic_layout, "nic_layout")):
                    if layout is not None:
                        return layout, path
                return BUILTIN_LAYOUT, "built-in"
    raise NotFound(f"no hypervisor {hypervisor!r} in the inventory")


def host_layout(fleet: Fleet, hypervisor: str) -> NicLayout:
    """The concrete layout of one hypervisor: its inventory address (provision.ip, its
    network's prefix, gateway and DNS) placed on the management interface."""
    layout, where = layout_for(fleet, hypervisor)
    site, hv, hv_path = next(
        (site, hv, f"sites[{si}].pods[{pi}].hypervisors[{hi}]")
        for si, site in enumerate(fleet.sites) for pi, pod in enumerate(site.pods)
        for hi, hv in enumerate(pod.hypervisors) if hv.name == hypervisor)
    prov = hv.provision
    if prov is not None and prov.bond is not None:
        # The installer brings this bond up; the layout must not undo it after first boot.
        bond = next((b for b in layout.bonds if b.name == prov.bond.name), None)
        if bond is None or (sorted(bond.interfaces), bond.mode) != (
                sorted(prov.bond.interfaces), prov.bond.mode):
            source = "the built-in layout" if where == "built-in" else where
            raise InvalidInput(f"{hv_path}.provision.bond", f"{prov.bond.name!r} "
                               f"({prov.bond.mode} on {'+'.join(prov.bond.interfaces)}) is not "
                               f"a bond of its NIC layout ({source}); they must agree")
    if layout.management is None or prov is None:
        return layout.model_copy(update={"management": None})
    net = site.network(prov.network)
    assert net is not None, "validated by parse_fleet"
    if any(a.interface == layout.management for a in layout.addresses):
        raise InvalidInput(f"{where}.addresses", f"{layout.management!r} is the management "
                           "interface: it takes the inventory address, give it no other")
    gateway = None if any(a.gateway for a in layout.addresses) else net.gateway
    inventory = StaticAddress(interface=layout.management,
                              address=IPv4Interface(f"{prov.ip}/{net.subnet.prefixlen}"),
                              gateway=gateway, dns=net.dns[:3])
    return layout.model_copy(update={"management": None,
                                     "addresses": (inventory, *layout.addresses)})


def _shared(layout: NicLayout, where: str) -> None:
    """A pod, site or fleet layout applies to many hosts: a fixed address there would be
    every host's."""
    check_layout(layout, where)
    if layout.addresses:
        raise InvalidInput(f"{where}.addresses", "a shared layout cannot hold host addresses; "
                           "give them in the hypervisor's own nic_layout (management takes "
                           "provision.ip)")
    if layout.ipmi is not None and layout.ipmi.address is not None:
        raise InvalidInput(f"{where}.ipmi.address", "a shared layout cannot hold a host's "
                           "IPMI address; give it in the hypervisor's own nic_layout")


def check_fleet_layouts(fleet: Fleet) -> None:
    """Every layout in a fleet file, at each level it may appear; static addresses are unique
    across the fleet (and differ from every hypervisor's provision.ip)."""
    if fleet.nic_layout is not None:
        _shared(fleet.nic_layout, "nic_layout")
    taken: dict[IPv4Address, str] = {}
    for _, _, hv in fleet.hypervisors():
        if hv.provision is not None:
            taken.setdefault(hv.provision.ip, f"the provision.ip of {hv.name!r}")
    for si, site in enumerate(fleet.sites):
        if site.nic_layout is not None:
            _shared(site.nic_layout, f"sites[{si}].nic_layout")
        for pi, pod in enumerate(site.pods):
            if pod.nic_layout is not None:
                _shared(pod.nic_layout, f"sites[{si}].pods[{pi}].nic_layout")
            for hi, hv in enumerate(pod.hypervisors):
                if hv.nic_layout is None:
                    continue
                where = f"sites[{si}].pods[{pi}].hypervisors[{hi}].nic_layout"
                check_layout(hv.nic_layout, where)
                found = [(f"{where}.addresses[{ai}].address", a.address.ip)
                         for ai, a in enumerate(hv.nic_layout.addresses)]
                if hv.nic_layout.ipmi is not None and hv.nic_layout.ipmi.address is not None:
                    found.append((f"{where}.ipmi.address", hv.nic_layout.ipmi.address.ip))
                for field, ip in found:
                    if ip in taken:
                        raise InvalidInput(field, f"{ip} is already {taken[ip]}")
                    taken[ip] = f"at {field}"
