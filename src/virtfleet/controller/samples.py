"""The last passes of each VM's figures, for the web console's sparklines: a small bounded ring.

Each bulk-stats pass (stats.py) hands every host's answer here. Per VM the ring keeps the last
SLOTS passes of a few figures, already turned into what a chart draws: CPU % (cpu.time's growth
over the time between two answers), QEMU's RSS and the balloon, disk and network bytes per
second (read+written, received+sent, over all its disks and interfaces), and whether it was
running. Counters are kept only for the latest answer, to take the next difference from. A VM
that is not running has only its running strip: its figures are gaps.

Memory is bounded by the VMs the hosts report: one float32 array of SLOTS x len(SERIES) per VM
(1,440 bytes) plus the last counters, about 1.8 KiB per VM in all (docs/ui.md). A VM its host no
longer reports is dropped with that answer; a host that did not answer leaves a gap (NaN) in
each of its VMs; a host gone from the inventory is dropped with the next pass.
"""

from __future__ import annotations

import math
import threading
from array import array
from collections.abc import Iterable
from dataclasses import dataclass

from virtfleet.virt.stats import DomainStats, HostStats

SLOTS = 60
SERIES = ("cpu", "rss", "balloon", "disk", "net", "up")
ACTIVE = frozenset({"running", "idle", "paused", "in shutdown", "pmsuspended"})
NAN = math.nan


class _Ring:
    """One VM's samples, oldest overwritten first, and the counters of its latest answer."""

    __slots__ = ("at", "cpu", "disk", "head", "n", "net", "vals")

    def __init__(self) -> None:
        self.vals = array("f", [NAN]) * (SLOTS * len(SERIES))
        self.head = 0  # the slot the next sample goes to
        self.n = 0  # samples held, up to SLOTS
        self.at: float | None = None  # when the latest answer was read (Unix time)
        self.cpu: float | None = None
        self.disk: int | None = None
        self.net: int | None = None

    def push(self, row: tuple[float, ...]) -> None:
        base = self.head * len(SERIES)
        self.vals[base:base + len(SERIES)] = array("f", row)
        self.head = (self.head + 1) % SLOTS
        self.n = min(SLOTS, self.n + 1)

    def gap(self) -> None:
        self.push((NAN,) * len(SERIES))

    def column(self, i: int) -> list[float]:
        """Series `i`, oldest first."""
        first = (self.head - self.n) % SLOTS
        return [float(self.vals[((first + k) % SLOTS) * len(SERIES) + i])
                for k in range(self.n)]


def _rate(now: float | int | None, then: float | int | None, seconds: float) -> float:
    """A counter's growth per second; NaN when either end was not read, or it went back (the
    VM was restarted and its counters began again)."""
    if now is None or then is None or seconds <= 0 or now < then:
        return NAN
    return (now - then) / seconds


def _total(values: Iterable[int | None]) -> int | None:
    got = [v for v in values if v is not None]
    return sum(got) if got else None


def _num(value: int | None) -> float:
    return float(value) if value is not None else NAN


@dataclass(frozen=True)
class Series:
    """One VM's samples, oldest first, NaN where nothing was read; `at`: its latest answer."""

    values: dict[str, list[float]]
    samples: int
    at: float | None


class SampleRing:
    """host -> VM -> its ring. Written by the stats worker, read by pages. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hosts: dict[str, dict[str, _Ring]] = {}

    def record(self, answers: Iterable[tuple[str, HostStats | None]]) -> None:
        """One pass: each host in the inventory and its answer (None: it did not answer)."""
        seen = set()
        with self._lock:
            for host, stats in answers:
                seen.add(host)
                old = self._hosts.get(host, {})
                if stats is None:
                    for ring in old.values():
                        ring.gap()
                    continue
                at = stats.at.timestamp()
                self._hosts[host] = {d.name: self._sample(old.get(d.name) or _Ring(), d, at)
                                     for d in stats.domains}
            for gone in set(self._hosts) - seen:
                del self._hosts[gone]

    @staticmethod
    def _sample(ring: _Ring, d: DomainStats, at: float) -> _Ring:
        if d.state not in ACTIVE:
            # No QEMU process: what libvirt still reports (the defined balloon; the lab's page
            # drew 1.0 % CPU for a never-started VM) is not the VM's use.
            ring.push((NAN, NAN, NAN, NAN, NAN, 0.0))
            ring.at, ring.cpu, ring.disk, ring.net = at, None, None, None
            return ring
        seconds = at - ring.at if ring.at is not None else 0.0
        disk = _total(v for b in d.blocks for v in (b.read_bytes, b.write_bytes))
        net = _total(v for n in d.nets for v in (n.rx_bytes, n.tx_bytes))
        cpu = _rate(d.cpu_seconds, ring.cpu, seconds)
        ring.push((cpu * 100, _num(d.rss_bytes), _num(d.balloon_bytes),
                   _rate(disk, ring.disk, seconds), _rate(net, ring.net, seconds),
                   1.0 if d.state in ACTIVE else 0.0))
        ring.at, ring.cpu, ring.disk, ring.net = at, d.cpu_seconds, disk, net
        return ring

    def series(self, host: str, vm: str) -> Series | None:
        """A copy of one VM's samples; None if no pass has reported it."""
        with self._lock:
            ring = self._hosts.get(host, {}).get(vm)
            if ring is None or ring.n == 0:
                return None
            return Series({name: ring.column(i) for i, name in enumerate(SERIES)}, ring.n,
                          ring.at)

    def vms(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._hosts.values())
