"""RHEL/CentOS network-scripts files (/etc/sysconfig/network-scripts/ifcfg-*), and back.

A bond is ifcfg-bond0 with BONDING_OPTS="mode=1 miimon=80" and ifcfg-eth0/eth1 with
MASTER=bond0 SLAVE=yes. `primary` names a slave interface, so it is written only when the layout
names one. Modes are written as numbers, as most existing hosts' files have them; the parser
takes numbers or names. VLANs are VLAN=yes with
PHYSDEV/VLAN_ID, bridges TYPE=Bridge with BRIDGE= on their ports, and Open vSwitch uses the
openvswitch network-scripts (DEVICETYPE=ovs, TYPE=OVSBridge/OVSPort, OVS_BRIDGE=).

The files are shell-sourced KEY=value lines. They are written from (key, value) pairs, not
templates: every value comes from the validated model (names, numbers, addresses), and the one
value with spaces, BONDING_OPTS, is double-quoted.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network

from virtfleet.errors import InvalidInput
from virtfleet.inventory.niclayout import (
    BOND_MODES,
    BondSpec,
    Bridge,
    Ethernet,
    NicLayout,
    OvsBridge,
    Vlan,
)
from virtfleet.netcfg.topology import Link, build_layout, links

_BARE = re.compile(r"^[A-Za-z0-9_.:/-]*$")
_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")


def file_name(interface: str) -> str:
    return f"ifcfg-{interface}"


def _text(pairs: list[tuple[str, str]]) -> str:
    out = []
    for key, value in pairs:
        if not _BARE.match(value):
            # Model values never hold quotes, '$' or '\'; anything else is a bug, not input.
            assert not set(value) & set('"$`\\\n'), (key, value)
            value = f'"{value}"'
        out.append(f"{key}={value}\n")
    return "".join(out)


def _bonding_opts(bond: BondSpec) -> str:
    opts = [f"mode={BOND_MODES.index(bond.mode)}", f"miimon={bond.miimon}"]
    if bond.primary is not None:
        opts.append(f"primary={bond.primary}")
    return " ".join(opts)


def _pairs(link: Link) -> list[tuple[str, str]]:
    iface = link.iface
    pairs = [("DEVICE", iface.name)]
    ovs_port = link.master_kind == "ovs"
    if isinstance(iface, OvsBridge):
        pairs += [("DEVICETYPE", "ovs"), ("TYPE", "OVSBridge")]
    elif ovs_port:
        pairs += [("DEVICETYPE", "ovs"), ("TYPE", "OVSPort"), ("OVS_BRIDGE", link.master or "")]
    elif isinstance(iface, Bridge):
        pairs.append(("TYPE", "Bridge"))
    elif isinstance(iface, BondSpec):
        pairs.append(("TYPE", "Bond"))
    elif isinstance(iface, Ethernet):
        pairs.append(("TYPE", "Ethernet"))
    pairs += [("ONBOOT", "yes"), ("BOOTPROTO", "none"), ("USERCTL", "no")]
    if isinstance(iface, Ethernet):
        if iface.mac is not None:
            pairs.append(("HWADDR", iface.mac.upper()))
        if iface.mtu is not None:
            pairs.append(("MTU", str(iface.mtu)))
    elif isinstance(iface, BondSpec):
        pairs += [("BONDING_MASTER", "yes"), ("BONDING_OPTS", _bonding_opts(iface))]
    elif isinstance(iface, Vlan):
        pairs += [("VLAN", "yes"), ("PHYSDEV", iface.parent), ("VLAN_ID", str(iface.id))]
    elif isinstance(iface, Bridge):
        pairs += [("STP", "yes" if iface.stp else "no"), ("DELAY", "0")]
    if link.master_kind == "bond":
        pairs += [("MASTER", link.master or ""), ("SLAVE", "yes")]
    elif link.master_kind == "bridge":
        pairs.append(("BRIDGE", link.master or ""))
    if link.master_kind is None:
        for n, addr in enumerate(link.addresses):
            suffix = str(n) if n else ""
            pairs += [(f"IPADDR{suffix}", str(addr.address.ip)),
                      (f"PREFIX{suffix}", str(addr.address.network.prefixlen))]
        if link.gateway is not None:
            pairs.append(("GATEWAY", str(link.gateway)))
        pairs += [(f"DNS{i}", str(d)) for i, d in enumerate(link.dns, 1)]
        pairs.append(("IPV6INIT", "no"))
    if isinstance(iface, OvsBridge) or ovs_port:
        # NetworkManager's ifcfg reader does not know DEVICETYPE=ovs: the openvswitch
        # network-scripts (ifup-ovs) bring these up.
        pairs.append(("NM_CONTROLLED", "no"))
    return pairs


def render_ifcfg(layout: NicLayout) -> dict[str, str]:
    """One ifcfg file per interface: file name -> text."""
    return {file_name(link.name): _text(_pairs(link)) for link in links(layout)}


# ---- parsing ----

def parse_file(name: str, text: str) -> dict[str, str]:
    """KEY=value lines as the shell would read them (quotes removed); comments skipped."""
    values: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        found = _LINE.match(line)
        if found is None:
            raise InvalidInput(f"{name}: line {lineno}", "is not KEY=value")
        try:
            words = shlex.split(found.group(2), comments=True)
        except ValueError as exc:
            raise InvalidInput(f"{name}: {found.group(1)}", f"bad quoting ({exc})") from None
        if len(words) > 1:
            raise InvalidInput(f"{name}: {found.group(1)}", "holds spaces without quotes")
        values[found.group(1)] = words[0] if words else ""
    return values


def _yes(value: str | None) -> bool:
    return (value or "").lower() in ("yes", "true", "1")


def _bond_from_opts(name: str, opts: str, field: str) -> dict[str, object]:
    bond: dict[str, object] = {"name": name, "interfaces": []}
    for word in opts.split():
        key, sep, value = word.partition("=")
        if not sep or key not in ("mode", "miimon", "primary"):
            raise InvalidInput(field, f"option {word!r} is not understood (mode, miimon, "
                               "primary)")
        bond[key] = value
    return bond


def _addresses(name: str, v: dict[str, str], fname: str) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for n in ("", *(str(i) for i in range(10))):
        ip = v.get(f"IPADDR{n}")
        if ip is None:
            continue
        prefix = v.get(f"PREFIX{n}")
        if prefix is None and f"NETMASK{n}" in v:
            try:
                prefix = str(IPv4Network(f"0.0.0.0/{v[f'NETMASK{n}']}").prefixlen)
            except ValueError:
                raise InvalidInput(f"{fname}: NETMASK{n}", "is not a netmask") from None
        if prefix is None:
            raise InvalidInput(f"{fname}: PREFIX{n}", f"missing for IPADDR{n}")
        out.append({"interface": name, "address": f"{ip}/{prefix}"})
    gateway = v.get("GATEWAY")
    if gateway is not None:
        if not out:
            raise InvalidInput(f"{fname}: GATEWAY", "given without an IPADDR")
        try:
            gw = IPv4Address(gateway)
        except ValueError:
            raise InvalidInput(f"{fname}: GATEWAY", f"{gateway!r} is not an IPv4 address") \
                from None
        holder = next((a for a in out if _contains(str(a["address"]), gw)), out[0])
        holder["gateway"] = gateway
    dns = [v[k] for k in ("DNS1", "DNS2", "DNS3") if k in v]
    if dns:
        if not out:
            raise InvalidInput(f"{fname}: DNS1", "given without an IPADDR")
        out[0]["dns"] = dns
    return out


def _contains(address: str, ip: IPv4Address) -> bool:
    try:
        return ip in IPv4Network(address, strict=False)
    except ValueError:
        return False


def parse_ifcfg(files: Mapping[str, str]) -> NicLayout:
    """The layout a set of ifcfg files describes (file name -> text); InvalidInput if they do
    not make a valid one."""
    data: dict[str, list[dict[str, object]]] = {k: [] for k in (
        "ethernets", "bonds", "vlans", "bridges", "ovs_bridges", "addresses")}
    members: list[tuple[str, str, str, str]] = []  # (kind, master, member, file)
    for fname in sorted(files):
        v = parse_file(fname, files[fname])
        name = v.get("DEVICE")
        if not name:
            raise InvalidInput(f"{fname}: DEVICE", "missing: every ifcfg file names its device")
        kind = v.get("TYPE", "")
        if kind == "OVSBridge":
            data["ovs_bridges"].append({"name": name, "ports": []})
        elif kind == "Bridge":
            data["bridges"].append({"name": name, "ports": [], "stp": _yes(v.get("STP"))})
        elif _yes(v.get("VLAN")):
            data["vlans"].append({"name": name, "id": v.get("VLAN_ID", ""),
                                  "parent": v.get("PHYSDEV", "")})
        elif "BONDING_OPTS" in v or kind == "Bond" or _yes(v.get("BONDING_MASTER")):
            data["bonds"].append(_bond_from_opts(name, v.get("BONDING_OPTS", ""),
                                                 f"{fname}: BONDING_OPTS"))
        elif kind in ("Ethernet", "OVSPort", ""):
            nic: dict[str, object] = {"name": name}
            if "HWADDR" in v:
                nic["mac"] = v["HWADDR"]
            if "MTU" in v:
                nic["mtu"] = v["MTU"]
            data["ethernets"].append(nic)
        else:
            raise InvalidInput(f"{fname}: TYPE", f"{kind!r} is not a type virtfleet writes "
                               "(Ethernet, Bond, Bridge, OVSBridge, OVSPort, or VLAN=yes)")
        if "MASTER" in v and _yes(v.get("SLAVE")):
            members.append(("bonds", v["MASTER"], name, fname))
        elif "BRIDGE" in v:
            members.append(("bridges", v["BRIDGE"], name, fname))
        elif "OVS_BRIDGE" in v:
            members.append(("ovs_bridges", v["OVS_BRIDGE"], name, fname))
        data["addresses"] += _addresses(name, v, fname)
    for kind, master, member, fname in members:
        holder = next((m for m in data[kind] if m["name"] == master), None)
        if holder is None:
            raise InvalidInput(f"{fname}: master", f"{master!r} has no ifcfg file of its kind")
        key = "interfaces" if kind == "bonds" else "ports"
        holder[key].append(member)  # type: ignore[attr-defined]
    return build_layout(data, "ifcfg")
