"""Capacity planning: from a workload, hardware and policy to hypervisors, pods, DIMMs, filers.

The sizing arithmetic, written down once: vCPUs are sockets x cores x threads; VMs per
hypervisor are what CPU and memory both allow under the ratios; DIMMs cover the VMs' memory plus
the hypervisor's own, in a count balanced over the sockets; a pod holds `pod_size` hypervisors
(N of them kept empty as spares for HA) and one filer cluster.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, Field, model_validator

from virtfleet.placement.models import Strict

GIB = 1024


class Workload(Strict):
    vms: int = Field(gt=0, le=10_000_000)
    vcpus: int = Field(gt=0, le=4096)
    memory_gib: int = Field(gt=0, le=65536)
    disk_gib: int = Field(default=0, ge=0)
    growth_pct: float = Field(default=0.0, ge=0, le=1000)


class Hardware(Strict):
    sockets: int = Field(gt=0, le=64)
    cores: int = Field(gt=0, le=1024)
    threads: int = Field(gt=0, le=8)
    dimm_slots: int = Field(gt=0, le=512)
    dimm_gib: int = Field(gt=0, le=4096)

    @property
    def vcpus(self) -> int:
        return self.sockets * self.cores * self.threads


class PlanPolicy(Strict):
    cpu_ratio: float = Field(default=1.0, gt=0, le=64)
    memory_ratio: float = Field(default=1.0, gt=0, le=4)
    allow_memory_overcommit: bool = False
    reserve_gib: int = Field(default=16, ge=0)
    spares_per_pod: int = Field(default=1, ge=0)
    pod_size: int = Field(default=100, gt=0, le=100_000)
    sites: int = Field(default=1, gt=0, le=1000)

    @model_validator(mode="after")
    def _checks(self) -> PlanPolicy:
        if self.memory_ratio > 1.0 and not self.allow_memory_overcommit:
            raise ValueError(f"memory_ratio: {self.memory_ratio} overcommits memory; pass "
                             "`allow_memory_overcommit` to accept it")
        if self.spares_per_pod >= self.pod_size:
            raise ValueError(f"spares_per_pod: {self.spares_per_pod} must be smaller than "
                             f"pod_size ({self.pod_size})")
        return self


class CapacityPlan(BaseModel):
    host_vcpus: int
    vms_per_host_by_cpu: int
    vms_per_host_by_memory: int
    vms_per_host: int
    runs_out_first: str  # cpu, memory, or cpu and memory
    vm_memory_per_host_gib: int
    host_memory_needed_gib: int
    dimms: int
    dimm_gib: int
    host_memory_gib: int
    total_vms: int
    vms_per_site: int
    active_hosts_per_site: int
    pods_per_site: int
    hosts_per_pod: int
    spares_per_pod: int
    hosts_per_site: int
    hosts_total: int
    filer_clusters_per_site: int
    filer_clusters_total: int
    filer_gib_per_pod: int
    free_vcpus_per_host: int
    free_memory_gib_per_host: int


def plan_capacity(w: Workload, hw: Hardware, p: PlanPolicy) -> CapacityPlan:
    """The estate `w` needs on `hw` under `p`. InvalidInput-worthy problems raise ValueError
    with the field first ("field: rule"), which the caller turns into InvalidInput."""
    host_vcpus = int(hw.vcpus * p.cpu_ratio)
    by_cpu = host_vcpus // w.vcpus
    max_mem = hw.dimm_slots * hw.dimm_gib
    by_mem = int((max_mem - p.reserve_gib) * p.memory_ratio) // w.memory_gib \
        if max_mem > p.reserve_gib else 0
    per_host = min(by_cpu, by_mem)
    if per_host == 0:
        short = "vcpus" if by_cpu == 0 else "memory_gib"
        raise ValueError(f"{short}: one VM of {w.vcpus} vCPUs/{w.memory_gib} GiB does not fit "
                         f"on a hypervisor of {host_vcpus} vCPUs and {max_mem} GiB "
                         f"(less {p.reserve_gib} GiB reserve)")
    first = ("cpu and memory" if by_cpu == by_mem else "cpu" if by_cpu < by_mem else "memory")
    vm_mem = per_host * w.memory_gib
    needed = math.ceil(vm_mem / p.memory_ratio) + p.reserve_gib
    dimms = math.ceil(needed / hw.dimm_gib)
    dimms += -dimms % hw.sockets  # the same memory on each socket (NUMA balance)
    dimms = min(dimms, hw.dimm_slots)
    host_mem = dimms * hw.dimm_gib
    total = math.ceil(w.vms * (1 + w.growth_pct / 100) - 1e-9)
    per_site = math.ceil(total / p.sites)
    active = math.ceil(per_site / per_host)
    usable = p.pod_size - p.spares_per_pod
    pods = math.ceil(active / usable)
    per_pod = math.ceil(active / pods) + p.spares_per_pod
    per_site_hosts = pods * per_pod
    return CapacityPlan(
        host_vcpus=host_vcpus, vms_per_host_by_cpu=by_cpu, vms_per_host_by_memory=by_mem,
        vms_per_host=per_host, runs_out_first=first, vm_memory_per_host_gib=vm_mem,
        host_memory_needed_gib=needed, dimms=dimms, dimm_gib=hw.dimm_gib,
        host_memory_gib=host_mem, total_vms=total, vms_per_site=per_site,
        active_hosts_per_site=active, pods_per_site=pods, hosts_per_pod=per_pod,
        spares_per_pod=p.spares_per_pod, hosts_per_site=per_site_hosts,
        hosts_total=per_site_hosts * p.sites, filer_clusters_per_site=pods,
        filer_clusters_total=pods * p.sites,
        filer_gib_per_pod=math.ceil(per_site / pods) * w.disk_gib,
        free_vcpus_per_host=host_vcpus - per_host * w.vcpus,
        free_memory_gib_per_host=int((host_mem - p.reserve_gib) * p.memory_ratio) - vm_mem,
    )


# --------------------------------------------------------------- the reference estate


def swap_gib(ram_gib: float) -> tuple[str, float]:
    """RHEL's recommended swap for a system with `ram_gib` of RAM: (rule, GiB)."""
    if ram_gib <= 0:
        raise ValueError("ram_gib: must be positive")
    if ram_gib <= 2:
        return "2x RAM", 2 * ram_gib
    if ram_gib <= 8:
        return "= RAM", ram_gib
    return "at least 4 GB", 4.0


SWAP_TABLE: tuple[tuple[str, str], ...] = (
    ("<= 2 GB", "2x RAM"),
    ("> 2 GB - 8 GB", "= RAM"),
    ("> 8 GB - 64 GB", "at least 4 GB"),
    ("> 64 GB", "at least 4 GB"),
)

# The reference estate (`plan reference`): 15,000 web VMs over three sites, as inputs to
# plan_capacity, so the sizing rules are checked against figures worked out by hand.
REFERENCE_WORKLOAD = Workload(vms=15_000, vcpus=4, memory_gib=32)
REFERENCE_HARDWARE = Hardware(sockets=2, cores=10, threads=2, dimm_slots=24, dimm_gib=32)
# The reference estate keeps no spare hypervisors; `plan capacity` defaults to N+1.
REFERENCE_POLICY = PlanPolicy(sites=3, pod_size=100, spares_per_pod=0)
SITES = ("oregon", "texas", "virginia")
APACHE_CHILDREN = 1200
APACHE_CHILD_MB = 20
VM_OS_GB = 8


def reference() -> dict[str, object]:
    """The reference estate's figures, computed, not typed in."""
    w, hw, p = REFERENCE_WORKLOAD, REFERENCE_HARDWARE, REFERENCE_POLICY
    plan = plan_capacity(w, hw, p)
    apache_gb = APACHE_CHILDREN * APACHE_CHILD_MB // 1000  # decimal GB, as hand-worked
    rule, swap = swap_gib(w.memory_gib)
    return {
        "sites": list(SITES),
        "hypervisor": {"sockets": hw.sockets, "cores_per_socket": hw.cores,
                       "threads_per_core": hw.threads, "vcpus": hw.vcpus,
                       "dimms": plan.dimms, "dimm_gb": plan.dimm_gib,
                       "memory_gb": plan.host_memory_gib},
        "vm": {"vcpus": w.vcpus, "memory_gb": w.memory_gib,
               "apache_children": APACHE_CHILDREN, "apache_child_mb": APACHE_CHILD_MB,
               "apache_gb": apache_gb, "os_gb": VM_OS_GB, "total_gb": apache_gb + VM_OS_GB,
               "swap_rule": rule, "swap_gb": swap},
        "vms_per_hypervisor": plan.vms_per_host,
        "vm_vcpus_per_hypervisor": plan.vms_per_host * w.vcpus,
        "vm_memory_per_hypervisor_gb": plan.vm_memory_per_host_gib,
        "hypervisor_reserve_gb": p.reserve_gib,
        "memory_needed_gb": plan.host_memory_needed_gib,
        "runs_out_first": plan.runs_out_first,
        "hypervisors_per_pod": plan.hosts_per_pod,
        "pods_per_site": plan.pods_per_site,
        "hypervisors_per_site": plan.hosts_per_site,
        "hypervisors_total": plan.hosts_total,
        "vms_per_pod": plan.hosts_per_pod * plan.vms_per_host,
        "vms_per_site": plan.vms_per_site,
        "vms_total": plan.total_vms,
        "filer_clusters_per_site": plan.filer_clusters_per_site,
        "filer_clusters_total": plan.filer_clusters_total,
        "swap_table": [{"ram": r, "swap": s} for r, s in SWAP_TABLE],
    }
