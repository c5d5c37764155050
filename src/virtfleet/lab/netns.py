"""The lab's network: one bridge on the host, and per hypervisor a namespace joined by a veth.

Nothing here routes anywhere: the namespaces get no default route and the bridge no NAT, so a
lab daemon can reach the host and its sibling daemons on the lab subnet and nothing else.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Any

from virtfleet.errors import LabError
from virtfleet.lab.names import LabNames
from virtfleet.lab.run import run

NETNS_DIR = Path("/run/netns")


def _ip(args: list[str], what: str, *, check: bool = True) -> str:
    return run(["ip", *args], what, timeout=30, check=check).stdout


def links() -> list[dict[str, Any]]:
    """Every interface of the root namespace, as `ip -j -d link show` describes it."""
    out = _ip(["-j", "-d", "link", "show"], "listing network interfaces")
    data = json.loads(out or "[]")
    return [d for d in data if isinstance(d, dict)]


def link_names() -> set[str]:
    return {str(d.get("ifname", "")) for d in links()}


def clear_virtual_links(ns: str) -> list[str]:
    """Delete every interface of namespace `ns` but lo and its eth0: the bridges, taps and
    veths its libvirtd made, which a real host loses when it loses power. A libvirtd started
    again after a simulated power loss would otherwise find its network's bridge still there
    and refuse to start the network ("already in use by interface virbr0")."""
    out = _ip(["-n", ns, "-j", "link", "show"], f"listing interfaces of {ns}")
    gone = [str(d.get("ifname", "")) for d in json.loads(out or "[]")
            if isinstance(d, dict) and d.get("ifname") not in ("lo", "eth0")]
    for ifname in gone:
        # A bridge's ports may go with it: a link already gone is what we wanted.
        _ip(["-n", ns, "link", "delete", ifname], f"deleting {ifname} in {ns}", check=False)
    return gone


def owned_links(names: LabNames) -> list[str]:
    """Interfaces in the root namespace whose ifalias says they belong to this lab."""
    return [str(d["ifname"]) for d in links() if d.get("ifalias") == names.alias]


def namespaces() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def owned_namespaces(names: LabNames) -> list[str]:
    pattern = names.netns_pattern()
    return [ns for ns in namespaces() if pattern.match(ns)]


def netns_pids(ns: str) -> list[int]:
    out = _ip(["netns", "pids", ns], f"listing processes in namespace {ns}", check=False)
    return [int(tok) for tok in out.split() if tok.isdigit()]


def netns_inode(ns: str) -> int:
    try:
        return (NETNS_DIR / ns).stat().st_ino
    except OSError:
        return 0


def check_free(names: LabNames, indexes: list[int]) -> None:
    """Refuse to build over interfaces or addresses that are not this lab's."""
    by_name = {str(d.get("ifname", "")): d for d in links()}
    for ifname in [names.bridge, *(names.veth(i) for i in indexes)]:
        other = by_name.get(ifname)
        if other is not None and other.get("ifalias") != names.alias:
            owner = other.get("ifalias") or "something else"
            raise LabError(f"lab {names.name}: interface {ifname} exists and belongs to {owner}")
    ours = {n for n, d in by_name.items() if d.get("ifalias") == names.alias}
    out = _ip(["-j", "addr", "show"], "listing addresses")
    for dev in json.loads(out or "[]"):
        if dev.get("ifname") in ours:
            continue
        for addr in dev.get("addr_info", []):
            if addr.get("family") != "inet":
                continue
            net = ipaddress.IPv4Network(f"{addr['local']}/{addr.get('prefixlen', 32)}",
                                        strict=False)
            if net.overlaps(names.subnet):
                raise LabError(f"lab {names.name}: subnet {names.subnet} is already used by "
                               f"{dev.get('ifname')} ({addr['local']}); pick another lab name")


def _no_ipv6(ifname: str) -> None:
    # No link-local addresses or router solicitations: the lab talks IPv4 on its subnet only.
    knob = Path("/proc/sys/net/ipv6/conf") / ifname / "disable_ipv6"
    if knob.exists():
        knob.write_text("1\n")


def create_bridge(names: LabNames) -> None:
    br = names.bridge
    if br not in link_names():
        _ip(["link", "add", br, "type", "bridge"], f"creating bridge {br}")
    _ip(["link", "set", "dev", br, "alias", names.alias], f"labelling bridge {br}")
    _no_ipv6(br)
    _ip(["addr", "replace", f"{names.gateway}/24", "dev", br], f"addressing bridge {br}")
    _ip(["link", "set", "dev", br, "up"], f"bringing up bridge {br}")


def create_host_net(names: LabNames, index: int) -> None:
    """Namespace `vf-<lab>-h<i>` whose eth0 is one end of a veth plugged into the lab bridge."""
    ns, veth = names.netns(index), names.veth(index)
    _ip(["netns", "add", ns], f"creating network namespace {ns}")
    _ip(["link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns],
        f"creating veth {veth}")
    _ip(["link", "set", "dev", veth, "alias", names.alias], f"labelling veth {veth}")
    _no_ipv6(veth)
    _ip(["link", "set", "dev", veth, "master", names.bridge, "up"], f"plugging {veth} in")
    inner = ["-n", ns]
    _ip([*inner, "link", "set", "dev", "lo", "up"], f"bringing up lo in {ns}")
    _ip([*inner, "addr", "add", f"{names.address(index)}/24", "dev", "eth0"],
        f"addressing eth0 in {ns}")
    _ip([*inner, "link", "set", "dev", "eth0", "up"], f"bringing up eth0 in {ns}")


def delete_netns(ns: str) -> None:
    # Deleting the namespace destroys its end of the veth, and with it the pair.
    _ip(["netns", "delete", ns], f"deleting network namespace {ns}", check=False)


def delete_link(ifname: str) -> None:
    _ip(["link", "delete", "dev", ifname], f"deleting interface {ifname}", check=False)
