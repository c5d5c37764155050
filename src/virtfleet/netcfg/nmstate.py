"""nmstate desired state (YAML for `nmstatectl apply`), built as data and dumped with PyYAML.

nmstate 2 spellings: link-aggregation.port, bridge.port as a list of {name}, routes.config,
dns-resolver.config. An OVS bridge that holds an address gets an internal ovs-interface of its
own name, as NetworkManager needs (see keyfile.py).
"""

from __future__ import annotations

from typing import Any

import yaml

from virtfleet.inventory.niclayout import (
    BondSpec,
    Bridge,
    Ethernet,
    NicLayout,
    OvsBridge,
    StaticAddress,
    Vlan,
)
from virtfleet.netcfg.topology import links

TYPES = {Ethernet: "ethernet", BondSpec: "bond", Vlan: "vlan", Bridge: "linux-bridge",
         OvsBridge: "ovs-bridge"}


def _ipv4(addresses: tuple[StaticAddress, ...]) -> dict[str, Any]:
    if not addresses:
        return {"enabled": False}
    return {"enabled": True, "dhcp": False,
            "address": [{"ip": str(a.address.ip), "prefix-length": a.address.network.prefixlen}
                        for a in addresses]}


def nmstate_state(layout: NicLayout) -> dict[str, Any]:
    """The desired state as plain data (what the YAML says)."""
    interfaces: list[dict[str, Any]] = []
    routes: list[dict[str, Any]] = []
    dns: list[str] = []
    for link in links(layout):
        iface = link.iface
        entry: dict[str, Any] = {"name": iface.name, "type": TYPES[type(iface)], "state": "up"}
        if isinstance(iface, Ethernet):
            if iface.mac is not None:
                entry["mac-address"] = iface.mac.upper()
            if iface.mtu is not None:
                entry["mtu"] = iface.mtu
        elif isinstance(iface, BondSpec):
            options: dict[str, Any] = {"miimon": iface.miimon}
            if iface.primary is not None:
                options["primary"] = iface.primary
            entry["link-aggregation"] = {"mode": iface.mode, "options": options,
                                         "port": list(iface.interfaces)}
        elif isinstance(iface, Vlan):
            entry["vlan"] = {"base-iface": iface.parent, "id": iface.id}
        elif isinstance(iface, Bridge):
            entry["bridge"] = {"options": {"stp": {"enabled": iface.stp}},
                               "port": [{"name": p} for p in iface.ports]}
        elif isinstance(iface, OvsBridge):
            ports = [{"name": p} for p in iface.ports]
            if link.addresses:
                ports.append({"name": iface.name})
            entry["bridge"] = {"port": ports}
        on = entry
        if isinstance(iface, OvsBridge) and link.addresses:
            on = {"name": iface.name, "type": "ovs-interface", "state": "up"}
        interfaces.append(entry)
        if link.master_kind is None and not (isinstance(iface, OvsBridge)
                                             and not link.addresses):
            on["ipv4"] = _ipv4(link.addresses)
            on["ipv6"] = {"enabled": False}
        if on is not entry:
            interfaces.append(on)
        if link.gateway is not None:
            routes.append({"destination": "0.0.0.0/0", "next-hop-address": str(link.gateway),
                           "next-hop-interface": iface.name})
        dns.extend(str(d) for d in link.dns if str(d) not in dns)
    state: dict[str, Any] = {"interfaces": interfaces}
    if routes:
        state["routes"] = {"config": routes}
    if dns:
        state["dns-resolver"] = {"config": {"server": dns}}
    return state


def render_nmstate(layout: NicLayout) -> str:
    return yaml.safe_dump(nmstate_state(layout), sort_keys=False, default_flow_style=False)
