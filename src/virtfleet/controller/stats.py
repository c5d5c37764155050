"""Every hypervisor's resource figures, read in bulk once per interval and kept ready to serve.

One pass asks each connected host for its bulk stats (virt/stats.py: one getAllDomainStats
call for all its domains, three for the node) over the controller's own connections, with the
fan-out's per-host deadline, and renders each host's series at once. A scrape is then served
from the last pass's text and never waits on a hypervisor; a host that did not answer this pass
has no resource series until it does (`virtfleet_host_stats_up` says 0), rather than last
pass's figures passed off as current.

Only connections the controller already holds are used (fan_out(connect=False)): a connection
opened here would carry none of the controller's event subscriptions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from virtfleet.controller.exposition import (
    Family,
    Lines,
    assemble,
    escape,
    host_labels,
    vm_labels,
)
from virtfleet.controller.samples import SampleRing
from virtfleet.inventory.records import HostRecord
from virtfleet.virt.fanout import ConnectionPool, fan_out
from virtfleet.virt.stats import HostStats, host_stats


def _g(name: str, text: str) -> Family:
    return Family(name, "gauge", text)


def _c(name: str, text: str) -> Family:
    return Family(name, "counter", text)


HOST_STATS_UP = _g("virtfleet_host_stats_up",
                   "1 if the last stats pass read this hypervisor, else 0")
HOST_STATS_SECONDS = _g("virtfleet_host_stats_duration_seconds",
                        "How long this hypervisor took to answer the last stats pass")
HOST_STATS_TIME = _g("virtfleet_host_stats_timestamp_seconds",
                     "When this hypervisor's figures were read (Unix time)")
HOST_CPUS = _g("virtfleet_host_cpus", "Logical CPUs of the hypervisor")
HOST_MEMORY = _g("virtfleet_host_memory_bytes", "Memory of the hypervisor")
HOST_MEMORY_FREE = _g("virtfleet_host_memory_free_bytes",
                      "Free memory of the hypervisor, page cache and buffers included")
HOST_CPU_SECONDS = _c("virtfleet_host_cpu_seconds_total",
                      "CPU time of the hypervisor by mode (user, kernel, idle, iowait)")
VM_CPU = _c("virtfleet_vm_cpu_seconds_total", "CPU time of the VM (its vCPUs and QEMU)")
VM_BALLOON = _g("virtfleet_vm_memory_balloon_bytes",
                "Memory the VM may use now (balloon current)")
VM_RSS = _g("virtfleet_vm_memory_rss_bytes", "Memory QEMU holds on the hypervisor (RSS)")
VM_USABLE = _g("virtfleet_vm_memory_usable_bytes",
               "Memory the guest could still use (needs the balloon driver's statistics)")
BLOCK = (
    _c("virtfleet_vm_block_read_bytes_total", "Bytes read by the VM from a disk"),
    _c("virtfleet_vm_block_write_bytes_total", "Bytes written by the VM to a disk"),
    _c("virtfleet_vm_block_read_requests_total", "Read requests of the VM on a disk"),
    _c("virtfleet_vm_block_write_requests_total", "Write requests of the VM on a disk"),
)
NET = (
    _c("virtfleet_vm_network_receive_bytes_total", "Bytes received by the VM on an interface"),
    _c("virtfleet_vm_network_transmit_bytes_total", "Bytes sent by the VM on an interface"),
    _c("virtfleet_vm_network_receive_packets_total", "Packets received on an interface"),
    _c("virtfleet_vm_network_transmit_packets_total", "Packets sent on an interface"),
    _c("virtfleet_vm_network_receive_errors_total", "Receive errors on an interface"),
    _c("virtfleet_vm_network_transmit_errors_total", "Transmit errors on an interface"),
    _c("virtfleet_vm_network_receive_drops_total", "Received packets dropped on an interface"),
    _c("virtfleet_vm_network_transmit_drops_total", "Sent packets dropped on an interface"),
)
FAMILIES = (HOST_STATS_UP, HOST_STATS_SECONDS, HOST_STATS_TIME, HOST_CPUS, HOST_MEMORY,
            HOST_MEMORY_FREE, HOST_CPU_SECONDS, VM_CPU, VM_BALLOON, VM_RSS, VM_USABLE,
            *BLOCK, *NET)


def render_host(rec: HostRecord, stats: HostStats | None, seconds: float) -> dict[str, str]:
    """One host's series, by family; without `stats` (it did not answer) only that it did not."""
    out = Lines()
    hl = host_labels(rec)
    out.add(HOST_STATS_UP, hl, 1 if stats is not None else 0)
    if stats is None:
        return out.joined()
    node = stats.node
    out.add(HOST_STATS_SECONDS, hl, round(seconds, 6))
    out.add(HOST_STATS_TIME, hl, round(stats.at.timestamp(), 3))
    out.add(HOST_CPUS, hl, node.cpus)
    out.add(HOST_MEMORY, hl, node.memory_bytes)
    out.add(HOST_MEMORY_FREE, hl, node.memory_free_bytes)
    for mode, secs in sorted(node.cpu_seconds.items()):
        out.add(HOST_CPU_SECONDS, f'{hl},mode="{escape(mode)}"', secs)
    for d in stats.domains:
        vl = vm_labels(hl, d.name)
        out.add(VM_CPU, vl, d.cpu_seconds)
        out.add(VM_BALLOON, vl, d.balloon_bytes)
        out.add(VM_RSS, vl, d.rss_bytes)
        out.add(VM_USABLE, vl, d.usable_bytes)
        for b in d.blocks:
            bl = f'{vl},device="{escape(b.device)}"'
            for fam, value in zip(BLOCK, (b.read_bytes, b.write_bytes, b.read_requests,
                                          b.write_requests), strict=True):
                out.add(fam, bl, value)
        for n in d.nets:
            nl = f'{vl},interface="{escape(n.interface)}"'
            for fam, value in zip(NET, (n.rx_bytes, n.tx_bytes, n.rx_packets, n.tx_packets,
                                        n.rx_errors, n.tx_errors, n.rx_drops, n.tx_drops),
                                  strict=True):
                out.add(fam, nl, value)
    return out.joined()


@dataclass
class Pass:
    """What one collection pass read and rendered."""

    text: bytes = b""
    hosts: int = 0
    failed: int = 0
    vms: int = 0
    seconds: float = 0.0
    finished_at: float = 0.0  # time.time(); 0 before the first pass
    failures: dict[str, str] = field(default_factory=dict)  # host -> why
    # host -> (logical CPUs, memory bytes): what the web console's estate map draws against
    capacity: dict[str, tuple[int, int]] = field(default_factory=dict)


class StatsCache:
    """The last pass, swapped in whole when the next one is done. Thread-safe."""

    def __init__(self, pool: ConnectionPool, hosts: Callable[[], list[HostRecord]]) -> None:
        self.pool = pool
        self.hosts = hosts
        self._lock = threading.Lock()
        self._last = Pass()
        self.passes = 0
        self.host_errors = 0  # host answers missed, over all passes
        # each VM's last passes, for the web console's sparklines (samples.py)
        self.samples = SampleRing()

    def collect(self) -> Pass:
        """One pass over every host in the inventory; returns it (and keeps it for scrapes)."""
        began = time.monotonic()
        records = self.hosts()
        results = fan_out(records, host_stats, self.pool, connect=False)
        parts = []
        failures = {}
        vms = 0
        for r in results:
            if r.value is not None:
                vms += len(r.value.domains)
            else:
                failures[r.host.name] = r.error.in_row(r.host.name) if r.error else "no answer"
            parts.append(render_host(r.host, r.value, r.seconds))
        self.samples.record((r.host.name, r.value) for r in results)
        done = Pass(text=assemble(FAMILIES, parts).encode(), hosts=len(records),
                    failed=len(failures), vms=vms, seconds=time.monotonic() - began,
                    finished_at=time.time(), failures=failures,
                    capacity={r.host.name: (r.value.node.cpus, r.value.node.memory_bytes)
                              for r in results if r.value is not None})
        with self._lock:
            self._last = done
            self.passes += 1
            self.host_errors += len(failures)
        return done

    @property
    def last(self) -> Pass:
        with self._lock:
            return self._last
