"""Fleet-wide questions, asked of every host at once: what runs where, and what each host is.

Each `*_of` function asks one open Host; `ask_fleet` runs one of them over many hosts through the
fan-out, so every query has per-host deadlines and per-host errors for free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from virtfleet.errors import HypervisorError
from virtfleet.fleet.scope import Progress, Step
from virtfleet.inventory.records import DomainRecord, FleetVM, HostFailure, HostRecord
from virtfleet.virt.fanout import ConnectionPool, HostResult, fan_out
from virtfleet.virt.host import Host
from virtfleet.xml.capabilities import parse_capabilities
from virtfleet.xml.sysinfo import SysInfo, parse_sysinfo

T = TypeVar("T")


@dataclass(frozen=True)
class NodeInfo:
    """`virsh nodeinfo`. Sockets are per NUMA cell, as libvirt and virsh count them."""

    cpu_model: str
    cpus: int
    mhz: int
    sockets: int
    cores_per_socket: int
    threads_per_core: int
    numa_cells: int
    memory_kib: int

    def as_json(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class HostCheck:
    """`host check`: can this hypervisor run VMs, and with what."""

    reachable: bool
    virt_types: tuple[str, ...]
    hw_virt: str | None  # vmx / svm, if the host CPU reports it
    iommu: bool | None
    kvm_usable: bool
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.reachable and not self.problems

    @classmethod
    def unreachable(cls, why: str) -> HostCheck:
        return cls(reachable=False, virt_types=(), hw_virt=None, iommu=None, kvm_usable=False,
                   problems=(why,) if why else ())

    def as_json(self) -> dict[str, object]:
        return {
            "reachable": self.reachable,
            "virt_types": list(self.virt_types),
            "hw_virt": self.hw_virt,
            "iommu": self.iommu,
            "kvm_usable": self.kvm_usable,
            "problems": list(self.problems),
            "ok": self.ok,
        }


def domains_of(host: Host) -> list[DomainRecord]:
    return host.list_domains()


def node_info_of(host: Host) -> NodeInfo:
    model, mem_mib, cpus, mhz, cells, sockets, cores, threads = host.node_info()
    return NodeInfo(
        cpu_model=str(model), cpus=int(cpus), mhz=int(mhz), sockets=int(sockets),
        cores_per_socket=int(cores), threads_per_core=int(threads), numa_cells=int(cells),
        memory_kib=int(mem_mib) * 1024,
    )


def sysinfo_of(host: Host) -> SysInfo:
    return parse_sysinfo(host.sysinfo_xml())


def version_of(host: Host) -> dict[str, object]:
    return host.versions()


def check_of(host: Host) -> HostCheck:
    caps = parse_capabilities(host.capabilities_xml())
    problems: list[str] = []
    kvm_usable = False
    if "kvm" in caps.virt_types:
        try:
            host.domain_capabilities_xml("kvm")
            kvm_usable = True
        except HypervisorError as exc:
            problems.append(f"kvm listed but not usable: {exc.message}")
    if not caps.virt_types:
        problems.append("no guest types offered (is the QEMU driver installed?)")
    elif not kvm_usable and "qemu" in caps.virt_types:
        problems.append("no KVM: guests would run under TCG emulation (slow)")
    from virtfleet.fleet.declared_networks import network_problems  # pydantic: when checking

    problems.extend(network_problems(host))
    return HostCheck(
        reachable=True,
        virt_types=caps.virt_types,
        hw_virt=caps.hw_virt,
        iommu=caps.iommu,
        kvm_usable=kvm_usable,
        problems=tuple(problems),
    )


def ask_fleet(
    hosts: Sequence[HostRecord],
    work: Callable[[Host], T],
    pool: ConnectionPool | None = None,
    *,
    progress: Callable[[HostResult[T]], None] | None = None,
) -> list[HostResult[T]]:
    """Run `work` on every host (one pool per call unless given one to reuse)."""
    own = pool is None
    p = pool or ConnectionPool(one_shot=True)
    try:
        return fan_out(hosts, work, p, progress=progress)
    finally:
        if own:
            p.close()


def counting(progress: Progress | None, what: str, total: int) -> Callable[[object], None]:
    """A callback for each finished item (a host's answer, a clone) that tells `progress` how
    many of `total` are done."""
    done = 0

    def tick(_item: object) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(Step(what, done, total))

    return tick


def fleet_vms(results: Sequence[HostResult[list[DomainRecord]]]) -> list[FleetVM]:
    """Flatten per-host domain lists into fleet VMs, sorted like the store sorts them."""
    vms = [
        FleetVM(host=r.host.name, site=r.host.site, pod=r.host.pod, domain=d)
        for r in results if r.value is not None for d in r.value
    ]
    vms.sort(key=lambda v: (v.site, v.pod, v.host, v.domain.name))
    return vms


def failures(results: Sequence[HostResult[Any]]) -> list[HostFailure]:
    out = []
    for r in results:
        if r.error is not None:
            text = r.error.in_row(r.host.name)
            out.append(HostFailure(r.host.name, r.error.kind, text))
    return out
