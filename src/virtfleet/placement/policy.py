"""Placement policy: overcommit ratios per group, the hypervisor's own memory, spread or pack.

Memory overcommit above 1.0 is refused unless asked for explicitly: overcommit that looks fine
off-peak swaps every guest at peak hours, and memory, unlike CPU, cannot be time-shared.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from virtfleet.placement.models import HostState, Spread, Strict

DEFAULT_RESERVE_MIB = 16 * 1024  # host OS, libvirtd, QEMU per-VM overhead


class Ratios(Strict):
    cpu: float = Field(default=1.0, gt=0, le=64)
    memory: float = Field(default=1.0, gt=0, le=4)


class Policy(Strict):
    default: Ratios = Ratios()
    groups: dict[str, Ratios] = {}
    allow_memory_overcommit: bool = False
    # None: 16 GiB, or an eighth of the host if that is less (a lab host of 8 GiB keeps 1 GiB,
    # the reference 384 GB hypervisor its 16 GiB).
    reserve_memory_mib: int | None = Field(default=None, ge=0)
    weigh: Spread = Spread.spread

    @model_validator(mode="after")
    def _memory_overcommit_is_explicit(self) -> Policy:
        if self.allow_memory_overcommit:
            return self
        for where, r in [("default", self.default),
                         *((f"groups.{g}", r) for g, r in self.groups.items())]:
            if r.memory > 1.0:
                raise ValueError(
                    f"{where}.memory: ratio {r.memory} overcommits memory; "
                    "pass `allow_memory_overcommit` to accept it")
        return self

    def ratios(self, host: HostState) -> Ratios:
        """The host's ratios: its group's, the strictest if it is in several, else default."""
        mine = [self.groups[g] for g in host.groups if g in self.groups]
        if not mine:
            return self.default
        return Ratios(cpu=min(r.cpu for r in mine), memory=min(r.memory for r in mine))

    def limits(self, host: HostState) -> tuple[int, int]:
        """(vCPU limit, memory limit MiB) of the host under this policy."""
        r = self.ratios(host)
        return (int(host.cpus * r.cpu),
                int(max(0, host.memory_mib - self.reserve_for(host)) * r.memory))

    def reserve_for(self, host: HostState) -> int:
        """Memory (MiB) kept back for the hypervisor itself."""
        if self.reserve_memory_mib is not None:
            return self.reserve_memory_mib
        return min(DEFAULT_RESERVE_MIB, host.memory_mib // 8)
