"""NetworkManager keyfiles (/etc/NetworkManager/system-connections/*.nmconnection), and back.

Keyfiles are INI: written and read with configparser (no interpolation, keys kept as written).
One connection per interface; a bond's slaves and a bridge's ports point at it with master= and
slave-type=. Open vSwitch takes NetworkManager's three kinds of connection: the ovs-bridge, one
ovs-port per member (the member's own connection is its slave), and, when the bridge holds an
address, an internal ovs-interface of the bridge's name. Connection UUIDs are derived from the
host and connection id, so a re-render gives the same files (and golden files are stable).
NetworkManager ignores keyfiles that are not 0600 and root's: render writes them 0600.
"""

from __future__ import annotations

import configparser
import io
import uuid
from collections.abc import Mapping

from virtfleet.errors import InvalidInput
from virtfleet.inventory.niclayout import (
    BondSpec,
    Bridge,
    Ethernet,
    NicLayout,
    OvsBridge,
    StaticAddress,
    Vlan,
)
from virtfleet.netcfg.topology import Link, build_layout, links

SUFFIX = ".nmconnection"
_NAMESPACE = uuid.UUID("5b0e6a57-2f4c-4d8e-9a4b-6e7a1c2d9f30")  # virtfleet's keyfile UUIDs
REQUIRED = {"connection": ("id", "uuid", "type", "interface-name")}
_TYPES = {Ethernet: "ethernet", BondSpec: "bond", Vlan: "vlan", Bridge: "bridge",
          OvsBridge: "ovs-bridge"}


def _uuid(host: str, conn_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{host}/{conn_id}"))


def _ini(sections: dict[str, dict[str, str]]) -> str:
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    for section, values in sections.items():
        cp[section] = values
    out = io.StringIO()
    cp.write(out, space_around_delimiters=False)
    return out.getvalue().rstrip("\n") + "\n"


def _ip(addresses: tuple[StaticAddress, ...]) -> dict[str, dict[str, str]]:
    if not addresses:
        return {"ipv4": {"method": "disabled"}, "ipv6": {"method": "disabled"}}
    ipv4 = {"method": "manual"}
    for n, addr in enumerate(addresses, 1):
        ipv4[f"address{n}"] = str(addr.address)
    gateway = next((a.gateway for a in addresses if a.gateway is not None), None)
    if gateway is not None:
        ipv4["gateway"] = str(gateway)
    dns: list[str] = []
    for a in addresses:
        dns.extend(str(d) for d in a.dns if str(d) not in dns)
    if dns:
        ipv4["dns"] = "".join(f"{d};" for d in dns)
    return {"ipv4": ipv4, "ipv6": {"method": "disabled"}}


def _connection(host: str, conn_id: str, kind: str, ifname: str,
                master: str | None = None, slave_type: str | None = None) -> dict[str, str]:
    conn = {"id": conn_id, "uuid": _uuid(host, conn_id), "type": kind,
            "interface-name": ifname, "autoconnect": "true"}
    if master is not None and slave_type is not None:
        conn.update({"master": master, "slave-type": slave_type})
    return conn


def _ovs_port_id(member: str) -> str:
    return f"ovs-port-{member}"


def _link_file(host: str, link: Link) -> dict[str, dict[str, str]]:
    iface = link.iface
    master = slave_type = None
    if link.master_kind == "bond" or link.master_kind == "bridge":
        master, slave_type = link.master, link.master_kind
    elif link.master_kind == "ovs":
        master, slave_type = _uuid(host, _ovs_port_id(iface.name)), "ovs-port"
    sections = {"connection": _connection(host, iface.name, _TYPES[type(iface)], iface.name,
                                          master, slave_type)}
    if isinstance(iface, Ethernet):
        eth = {}
        if iface.mac is not None:
            eth["mac-address"] = iface.mac.upper()
        if iface.mtu is not None:
            eth["mtu"] = str(iface.mtu)
        sections["ethernet"] = eth
    elif isinstance(iface, BondSpec):
        bond = {"mode": iface.mode, "miimon": str(iface.miimon)}
        if iface.primary is not None:
            bond["primary"] = iface.primary
        sections["bond"] = bond
    elif isinstance(iface, Vlan):
        sections["vlan"] = {"id": str(iface.id), "parent": iface.parent}
    elif isinstance(iface, Bridge):
        sections["bridge"] = {"stp": "true" if iface.stp else "false"}
    elif isinstance(iface, OvsBridge):
        sections["ovs-bridge"] = {}
        return sections  # its addresses live on its internal ovs-interface
    if master is None:
        sections.update(_ip(link.addresses))
    return sections


def render_keyfiles(host: str, layout: NicLayout) -> dict[str, str]:
    """One .nmconnection per connection: file name -> text."""
    files: dict[str, str] = {}
    for link in links(layout):
        files[link.name + SUFFIX] = _ini(_link_file(host, link))
        if isinstance(link.iface, OvsBridge):
            bridge = link.iface
            members = list(bridge.ports)
            if link.addresses:
                members.append(bridge.name)  # the internal port that holds the address
                internal = {
                    "connection": _connection(host, f"ovs-if-{bridge.name}", "ovs-interface",
                                              bridge.name, _uuid(host, _ovs_port_id(bridge.name)),
                                              "ovs-port"),
                    "ovs-interface": {"type": "internal"}, **_ip(link.addresses)}
                files[f"ovs-if-{bridge.name}{SUFFIX}"] = _ini(internal)
            for member in members:
                port_id = _ovs_port_id(member)
                files[port_id + SUFFIX] = _ini({
                    "connection": _connection(host, port_id, "ovs-port", member,
                                              _uuid(host, bridge.name), "ovs-bridge"),
                    "ovs-port": {}})
    return files


# ---- parsing ----

def parse_keyfile(name: str, text: str) -> configparser.ConfigParser:
    """One keyfile as configparser reads it; the keys every connection needs must be there."""
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        cp.read_string(text, source=name)
    except configparser.Error as exc:
        first = str(exc).splitlines()[0]
        raise InvalidInput(name, f"is not a keyfile: {first}") from None
    for section, keys in REQUIRED.items():
        for key in keys:
            if not cp.has_option(section, key):
                raise InvalidInput(f"{name}: [{section}] {key}", "missing: every keyfile "
                                   "connection needs it")
    return cp


def _addresses(cp: configparser.ConfigParser, ifname: str,
               name: str) -> list[dict[str, object]]:
    if not cp.has_section("ipv4") or cp.get("ipv4", "method", fallback="") != "manual":
        return []
    ipv4 = cp["ipv4"]
    out: list[dict[str, object]] = []
    for n in range(1, 100):
        value = ipv4.get(f"address{n}")
        if value is None:
            break
        address, _, gateway = value.partition(",")  # the older address1=ip/prefix,gw form
        entry: dict[str, object] = {"interface": ifname, "address": address}
        if gateway:
            entry["gateway"] = gateway
        out.append(entry)
    if not out:
        raise InvalidInput(f"{name}: [ipv4] address1", "missing: method=manual needs it")
    if "gateway" in ipv4:
        out[0]["gateway"] = ipv4["gateway"]
    dns = [d for d in ipv4.get("dns", "").split(";") if d]
    if dns:
        out[0]["dns"] = dns
    return out


def parse_keyfiles(files: Mapping[str, str]) -> NicLayout:
    """The layout a set of keyfiles describes (file name -> text)."""
    data: dict[str, list[dict[str, object]]] = {k: [] for k in (
        "ethernets", "bonds", "vlans", "bridges", "ovs_bridges", "addresses")}
    parsed = {fname: parse_keyfile(fname, files[fname]) for fname in sorted(files)}
    by_uuid = {cp["connection"]["uuid"]: cp for cp in parsed.values()}
    by_id = {cp["connection"]["id"]: cp for cp in parsed.values()}

    def master_of(cp: configparser.ConfigParser, fname: str) -> configparser.ConfigParser:
        ref = cp["connection"]["master"]
        found = by_uuid.get(ref) or by_id.get(ref)
        if found is None:  # a master named by interface, as nmcli allows
            found = next((c for c in parsed.values()
                          if c["connection"]["interface-name"] == ref
                          and c["connection"]["type"] != "ovs-port"), None)
        if found is None:
            raise InvalidInput(f"{fname}: [connection] master", f"{ref!r} is no connection here")
        return found

    members: list[tuple[str, str, str]] = []  # (kind, master interface, member)
    for fname, cp in parsed.items():
        conn = cp["connection"]
        kind, ifname = conn["type"], conn["interface-name"]
        if kind == "ethernet":
            nic: dict[str, object] = {"name": ifname}
            if cp.has_option("ethernet", "mac-address"):
                nic["mac"] = cp["ethernet"]["mac-address"]
            if cp.has_option("ethernet", "mtu"):
                nic["mtu"] = cp["ethernet"]["mtu"]
            data["ethernets"].append(nic)
        elif kind == "bond":
            bond: dict[str, object] = {"name": ifname, "interfaces": []}
            if cp.has_section("bond"):
                bond.update({k: v for k, v in cp["bond"].items()
                             if k in ("mode", "miimon", "primary")})
            data["bonds"].append(bond)
        elif kind == "vlan":
            data["vlans"].append({"name": ifname, "id": cp.get("vlan", "id", fallback=""),
                                  "parent": cp.get("vlan", "parent", fallback="")})
        elif kind == "bridge":
            data["bridges"].append({"name": ifname, "ports": [], "stp": cp.get(
                "bridge", "stp", fallback="true") == "true"})  # NetworkManager's default
        elif kind == "ovs-bridge":
            data["ovs_bridges"].append({"name": ifname, "ports": []})
        elif kind not in ("ovs-port", "ovs-interface"):
            raise InvalidInput(f"{fname}: [connection] type", f"{kind!r} is not a type "
                               "virtfleet writes")
        if kind == "ovs-interface":
            port = master_of(cp, fname)
            bridge = master_of(port, fname)
            data["addresses"] += _addresses(cp, bridge["connection"]["interface-name"], fname)
            continue
        data["addresses"] += _addresses(cp, ifname, fname)
        if kind == "ovs-port" or "master" not in conn:
            continue
        slave_type = conn.get("slave-type", "")
        master = master_of(cp, fname)
        if slave_type == "ovs-port":
            master = master_of(master, fname)
            members.append(("ovs_bridges", master["connection"]["interface-name"], ifname))
        elif slave_type in ("bond", "bridge"):
            members.append((slave_type + "s", master["connection"]["interface-name"], ifname))
        else:
            raise InvalidInput(f"{fname}: [connection] slave-type",
                               f"{slave_type!r} is not bond, bridge or ovs-port")
    for kind, master_name, member in members:
        holder = next((m for m in data[kind] if m["name"] == master_name), None)
        if holder is None:
            raise InvalidInput(f"keyfile: {member}", f"its master {master_name!r} is not a "
                               f"{kind[:-1].replace('_', ' ')}")
        key = "interfaces" if kind == "bonds" else "ports"
        holder[key].append(member)  # type: ignore[attr-defined]
    return build_layout(data, "keyfile")
