"""One hypervisor's resource figures in a few RPCs: libvirt's bulk domain stats and the node's.

`host_stats` asks for every domain's state, CPU time, balloon, block and interface counters in
one getAllDomainStats call (virsh domstats), never a call per domain: at ten VMs a host that is
one round trip instead of fifty. NOWAIT makes libvirt skip a figure it cannot read at once (a
domain busy with a migration job) instead of waiting for the job, so one busy VM never holds up
its host's answer. The node itself costs three more calls (info, CPU times, memory).

`parse_domain` turns libvirt's flat typed-parameter dict ("block.0.rd.bytes") into records; it is
pure, so the collectors can be tested on the stats a real QEMU domain returned. A driver without
some group (the test driver reports state only) gives None or no entries for it: a figure that
was not read is absent, never 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import libvirt

from virtfleet.virt.errors import libvirt_errors
from virtfleet.virt.host import STATE_WORDS, Host

KIB = 1024

STATS_GROUPS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_INTERFACE
    | libvirt.VIR_DOMAIN_STATS_BLOCK
)
STATS_FLAGS = getattr(libvirt, "VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT", 0)


@dataclass(frozen=True)
class BlockStats:
    device: str  # the guest's target (vda)
    read_bytes: int | None
    write_bytes: int | None
    read_requests: int | None
    write_requests: int | None


@dataclass(frozen=True)
class NetStats:
    interface: str  # the host side's device (vnet0)
    rx_bytes: int | None
    tx_bytes: int | None
    rx_packets: int | None
    tx_packets: int | None
    rx_errors: int | None
    tx_errors: int | None
    rx_drops: int | None
    tx_drops: int | None


@dataclass(frozen=True)
class DomainStats:
    name: str
    uuid: str
    state: str  # virsh's word
    cpu_seconds: float | None  # cpu.time: guest and QEMU threads together
    balloon_bytes: int | None  # balloon.current: what the guest may use now
    maximum_bytes: int | None  # balloon.maximum
    rss_bytes: int | None  # balloon.rss: what QEMU holds on the host
    usable_bytes: int | None  # balloon.usable: what the guest could still use (needs stats)
    blocks: tuple[BlockStats, ...] = ()
    nets: tuple[NetStats, ...] = ()


@dataclass(frozen=True)
class NodeStats:
    cpus: int
    memory_bytes: int
    cpu_seconds: dict[str, float]  # mode (user, kernel, idle, iowait) -> seconds since boot
    memory_free_bytes: int | None  # None where the driver cannot say (the test driver)


@dataclass(frozen=True)
class HostStats:
    node: NodeStats
    domains: tuple[DomainStats, ...]
    at: datetime  # when the answer was read


def _int(raw: dict[str, Any], key: str) -> int | None:
    value = raw.get(key)
    return int(value) if value is not None else None


def _kib(raw: dict[str, Any], key: str) -> int | None:
    value = raw.get(key)
    return int(value) * KIB if value is not None else None


def parse_domain(name: str, uuid: str, raw: dict[str, Any]) -> DomainStats:
    """One domain's record from the flat dict getAllDomainStats returned for it."""
    cpu_ns = raw.get("cpu.time")
    blocks = tuple(
        BlockStats(
            device=str(raw.get(f"block.{i}.name", f"block{i}")),
            read_bytes=_int(raw, f"block.{i}.rd.bytes"),
            write_bytes=_int(raw, f"block.{i}.wr.bytes"),
            read_requests=_int(raw, f"block.{i}.rd.reqs"),
            write_requests=_int(raw, f"block.{i}.wr.reqs"),
        )
        for i in range(int(raw.get("block.count", 0))))
    nets = tuple(
        NetStats(
            interface=str(raw.get(f"net.{i}.name", f"net{i}")),
            rx_bytes=_int(raw, f"net.{i}.rx.bytes"), tx_bytes=_int(raw, f"net.{i}.tx.bytes"),
            rx_packets=_int(raw, f"net.{i}.rx.pkts"), tx_packets=_int(raw, f"net.{i}.tx.pkts"),
            rx_errors=_int(raw, f"net.{i}.rx.errs"), tx_errors=_int(raw, f"net.{i}.tx.errs"),
            rx_drops=_int(raw, f"net.{i}.rx.drop"), tx_drops=_int(raw, f"net.{i}.tx.drop"),
        )
        for i in range(int(raw.get("net.count", 0))))
    return DomainStats(
        name=name, uuid=uuid,
        state=STATE_WORDS.get(int(raw.get("state.state", 0)), "no state"),
        cpu_seconds=int(cpu_ns) / 1e9 if cpu_ns is not None else None,
        balloon_bytes=_kib(raw, "balloon.current"),
        maximum_bytes=_kib(raw, "balloon.maximum"),
        rss_bytes=_kib(raw, "balloon.rss"),
        usable_bytes=_kib(raw, "balloon.usable"),
        blocks=blocks, nets=nets)


def raw_domain_stats(host: Host) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, uuid, libvirt's dict) for every domain, from one getAllDomainStats call."""
    with libvirt_errors(host.label):
        found = host.conn.getAllDomainStats(STATS_GROUPS, STATS_FLAGS)
        # name() and UUIDString() read the handle the answer came with: no further RPC.
        return [(str(dom.name()), str(dom.UUIDString()), dict(raw)) for dom, raw in found]


def node_stats(host: Host) -> NodeStats:
    conn = host.conn
    with libvirt_errors(host.label):
        info = conn.getInfo()
        cpu = conn.getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS, 0)
        try:
            mem: dict[str, int] | None = conn.getMemoryStats(
                libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                raise
            mem = None
    free = None
    total = int(info[1]) * KIB * KIB  # getInfo says MiB
    if mem is not None and "free" in mem:
        # Page cache and buffers can be given back at once: free as `free -m`'s available.
        free = sum(int(mem.get(k, 0)) for k in ("free", "buffers", "cached")) * KIB
        total = int(mem.get("total", total // KIB)) * KIB  # the kernel's MemTotal, as free's
    return NodeStats(cpus=int(info[2]), memory_bytes=total,
                     cpu_seconds={str(k): int(v) / 1e9 for k, v in cpu.items()},
                     memory_free_bytes=free)


def host_stats(host: Host) -> HostStats:
    """The node's figures and every domain's, as read now."""
    node = node_stats(host)
    domains = tuple(parse_domain(n, u, raw) for n, u, raw in raw_domain_stats(host))
    return HostStats(node=node, domains=domains, at=datetime.now(UTC))
