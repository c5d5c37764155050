"""Kea DHCPv4 configurations, the successor to ISC dhcpd, built as a dict and dumped as JSON.

A failover pair becomes a Kea HA pair (the HA hook plus lease_cmds, which it needs); each peer
gets the same configuration except `this-server-name`. Each dhcpd failover setting maps to the
HA hook's, or is refused where Kea has none:

    split 128            mode load-balancing; each pool split between the HA_primary and
                         HA_secondary classes (Kea needs that, or both peers lease one address)
    split 256 / 0        mode hot-standby, the primary (256) or the secondary (0) serving
    any other split      refused: Kea balances 50/50 or not at all
    max_response_delay   max-response-delay (seconds -> ms); heartbeat-delay a sixth of it
    load_balance_max_seconds
                         max-ack-delay: how long a client may have tried (its 'secs') before
                         its server counts as not answering
    mclt, max_unacked_updates
                         nothing to set: Kea sends each lease update to its partner and waits
                         for the acknowledgement before answering the client (no lazy updates),
                         so no lease outruns what the partner knows and no updates go unacked
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from typing import Any, Literal

from virtfleet.boot import grub
from virtfleet.boot.scopes import DhcpScope
from virtfleet.errors import InvalidInput
from virtfleet.inventory.fleetfile import DhcpFailover, DhcpPeer, PoolRange

Role = Literal["primary", "secondary"]
# Debian/Ubuntu path; Kea 2.2 wants hook libraries by absolute path.
DEFAULT_HOOKS_DIR = "/usr/lib/x86_64-linux-gnu/kea/hooks"

MAX_HEARTBEAT_MS = 10_000  # Kea's default heartbeat-delay
_IPXE = "option[77].hex == 'iPXE'"
_PXE = "substring(option[60].hex,0,9) == 'PXEClient'"
_UEFI = "(option[93].hex == 0x0007 or option[93].hex == 0x0009)"


def ha_mode(pair: DhcpFailover, field: str) -> tuple[str, dict[Role, str]]:
    """Kea's HA mode for dhcpd's split, and the Kea role of each fleet peer."""
    if pair.split == 128:
        return "load-balancing", {"primary": "primary", "secondary": "secondary"}
    if pair.split == 256:
        return "hot-standby", {"primary": "primary", "secondary": "standby"}
    if pair.split == 0:
        return "hot-standby", {"primary": "standby", "secondary": "primary"}
    raise InvalidInput(f"{field}.split", f"{pair.split} has no Kea equivalent: Kea's HA hook "
                       "balances 50/50 (split 128) or serves from one peer (256: the primary, "
                       "0: the secondary)")


def _classes(scope: DhcpScope) -> list[dict[str, Any]]:
    nxt = str(scope.servers.next_server)
    return [
        # iPXE fetches a script over HTTP; boot.ipxe chains to the host's own by MAC.
        {"name": "ipxe", "test": _IPXE,
         "boot-file-name": f"{scope.servers.http_base}ipxe/boot.ipxe"},
        {"name": "pxe-uefi", "test": f"{_PXE} and not member('ipxe') and {_UEFI}",
         "next-server": nxt, "boot-file-name": grub.BOOT_FILE},
        {"name": "pxe-bios",
         "test": f"{_PXE} and not member('ipxe') and not member('pxe-uefi')",
         "next-server": nxt, "boot-file-name": "pxelinux.0"},
    ]


def _pools(pool: PoolRange, split: bool) -> list[dict[str, Any]]:
    if not split:
        return [{"pool": f"{pool.start} - {pool.end}"}]
    # Load balancing: each peer leases only from its own half (the HA hook puts each client
    # in HA_primary or HA_secondary by the RFC 3074 hash of its MAC).
    size = int(pool.end) - int(pool.start) + 1
    first_end = IPv4Address(int(pool.start) + (size + 1) // 2 - 1)
    halves = [{"pool": f"{pool.start} - {first_end}", "client-class": "HA_primary"}]
    if size > 1:
        halves.append({"pool": f"{first_end + 1} - {pool.end}", "client-class": "HA_secondary"})
    return halves


def _subnets(scope: DhcpScope, split_pools: bool) -> list[dict[str, Any]]:
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
            subnet["pools"] = _pools(net.pool, split_pools)
        out.append(subnet)
    return out


def _ha_hooks(scope: DhcpScope, role: Role, hooks_dir: str) -> list[dict[str, Any]]:
    pair = scope.servers.dhcp
    assert pair is not None and pair.primary is not None and pair.secondary is not None
    mode, kea_roles = ha_mode(pair, scope.dhcp_field)
    named: tuple[tuple[Role, DhcpPeer], ...] = (("primary", pair.primary),
                                                ("secondary", pair.secondary))
    peers = [{"name": name, "url": f"http://{peer.address}:{pair.ha_port}/",
              "role": kea_roles[name], "auto-failover": True} for name, peer in named]
    response_ms = pair.max_response_delay * 1000  # dhcpd counts seconds, Kea milliseconds
    ha = {
        "this-server-name": role,
        "mode": mode,
        # Several heartbeats fit in the response delay, or one late heartbeat is an outage.
        "heartbeat-delay": min(MAX_HEARTBEAT_MS, response_ms // 6),
        "max-response-delay": response_ms,
        "max-ack-delay": pair.load_balance_max_seconds * 1000,
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
        "subnet4": _subnets(scope, split_pools=False),
    }
    if role is not None:
        dhcp4["hooks-libraries"] = _ha_hooks(scope, role, hooks_dir)
        pair = scope.servers.dhcp
        assert pair is not None
        if ha_mode(pair, scope.dhcp_field)[0] == "load-balancing":
            dhcp4["subnet4"] = _subnets(scope, split_pools=True)
    return {"Dhcp4": dhcp4}


def render_kea(scope: DhcpScope, role: Role | None, hooks_dir: str = DEFAULT_HOOKS_DIR) -> str:
    return json.dumps(kea_config(scope, role, hooks_dir), indent=2) + "\n"
