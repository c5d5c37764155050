"""Kea DHCPv4 configurations, the successor to ISC dhcpd, built as a dict and dumped as JSON.

A failover pair becomes a Kea HA pair in load-balancing mode (the HA hook plus lease_cmds, which
it needs); each peer gets the same configuration except `this-server-name`.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from virtfleet.boot.scopes import DhcpScope

Role = Literal["primary", "secondary"]
# Debian/Ubuntu path; Kea 2.2 wants hook libraries by absolute path.
DEFAULT_HOOKS_DIR = "/usr/lib/x86_64-linux-gnu/kea/hooks"

KEA_MAX_UNACKED_CLIENTS = 10  # Kea's default
_IPXE = "option[77].hex == 'iPXE'"
_PXE = "substring(option[60].hex,0,9) == 'PXEClient'"
_UEFI = "(option[93].hex == 0x0007 or option[93].hex == 0x0009)"


def _classes(scope: DhcpScope) -> list[dict[str, Any]]:
    nxt = str(scope.servers.next_server)
    return [
        # iPXE fetches a script over HTTP; boot.ipxe chains to the host's own by MAC.
        {"name": "ipxe", "test": _IPXE,
         "boot-file-name": f"{scope.servers.http_base}ipxe/boot.ipxe"},
        {"name": "pxe-uefi", "test": f"{_PXE} and not member('ipxe') and {_UEFI}",
         "next-server": nxt, "boot-file-name": "grubx64.efi"},
        {"name": "pxe-bios",
         "test": f"{_PXE} and not member('ipxe') and not member('pxe-uefi')",
         "next-server": nxt, "boot-file-name": "pxelinux.0"},
    ]


def _subnets(scope: DhcpScope) -> list[dict[str, Any]]:
    out = []
    for index, net in enumerate(scope.networks, start=1):
        options = [{"name": "routers", "data": str(net.gateway)}]
        if net.dns:
            options.append({"name": "domain-name-servers",
                            "data": ", ".join(str(a) for a in net.dns)})
        subnet: dict[str, Any] = {
            "id": index,
            "subnet": str(net.subnet),
            "option-data": options,
            "reservations": [
                {"hw-address": h.mac, "ip-address": str(h.ip), "hostname": h.name}
                for h in scope.hosts if h.network.name == net.name
            ],
        }
        if net.pool is not None:
            subnet["pools"] = [{"pool": f"{net.pool.start} - {net.pool.end}"}]
        out.append(subnet)
    return out


def _ha_hooks(scope: DhcpScope, role: Role, hooks_dir: str) -> list[dict[str, Any]]:
    pair = scope.servers.dhcp
    assert pair is not None and pair.primary is not None and pair.secondary is not None
    peers = [{"name": name, "url": f"http://{peer.address}:{pair.ha_port}/", "role": name,
              "auto-failover": True}
             for name, peer in (("primary", pair.primary), ("secondary", pair.secondary))]
    ha = {
        "this-server-name": role,
        "mode": "load-balancing",
        "heartbeat-delay": 10000,
        # dhcpd's max-response-delay is in seconds, Kea's in milliseconds.
        "max-response-delay": pair.max_response_delay * 1000,
        "max-ack-delay": 5000,
        # Kea's own knob (clients the partner failed to answer before it is declared down);
        # dhcpd's max-unacked-updates has no Kea equivalent.
        "max-unacked-clients": KEA_MAX_UNACKED_CLIENTS,
        "peers": peers,
    }
    return [
        {"library": f"{hooks_dir}/libdhcp_lease_cmds.so"},
        {"library": f"{hooks_dir}/libdhcp_ha.so",
         "parameters": {"high-availability": [ha]}},
    ]


def kea_config(scope: DhcpScope, role: Role | None,
               hooks_dir: str = DEFAULT_HOOKS_DIR) -> dict[str, Any]:
    if (scope.servers.dhcp is None) != (role is None):
        raise ValueError("a role is needed exactly when the scope has a failover pair")
    dhcp4: dict[str, Any] = {
        "interfaces-config": {"interfaces": ["*"]},
        "control-socket": {"socket-type": "unix",
                           "socket-name": "/run/kea/kea4-ctrl-socket"},
        "lease-database": {"type": "memfile", "persist": True, "lfc-interval": 3600},
        "valid-lifetime": 7200,
        "authoritative": True,
        "client-classes": _classes(scope),
        "subnet4": _subnets(scope),
    }
    if role is not None:
        dhcp4["hooks-libraries"] = _ha_hooks(scope, role, hooks_dir)
    return {"Dhcp4": dhcp4}


def render_kea(scope: DhcpScope, role: Role | None, hooks_dir: str = DEFAULT_HOOKS_DIR) -> str:
    return json.dumps(kea_config(scope, role, hooks_dir), indent=2) + "\n"
