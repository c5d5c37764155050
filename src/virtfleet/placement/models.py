"""Typed inputs of the scheduler: host state, VM shape, placement request, and input checking.

Requests and policies come from users (flags, files), so they are pydantic models whose errors
become one InvalidInput naming the field. HostState is built by code in bulk and mutated while a
batch is placed, so it is a plain slotted class.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from virtfleet.errors import InvalidInput
from virtfleet.placement.kinds import Scope, Spread
from virtfleet.pydantic_errors import rule
from virtfleet.validate import check_name

__all__ = ["Scope", "Spread"]  # and the models below; Scope/Spread live in kinds.py

M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: dict[str, Any], prefix: str = "") -> M:
    """Validate `data` as `model`; the first problem becomes InvalidInput naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = rule(err)
        if not loc:  # a whole-model rule: its message starts with the field it is about
            loc, _, msg = msg.partition(": ") if ": " in msg else (model.__name__, "", msg)
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        raise InvalidInput(prefix + loc, msg) from None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VMShape(Strict):
    vcpus: int = Field(gt=0, le=4096)
    memory_mib: int = Field(gt=0, le=64 * 2**20)
    disk_gib: int = Field(default=0, ge=0)


class PlacementRequest(Strict):
    """`count` VMs of one shape for one application group.

    anti_affinity puts each member on a different host (or pod); affinity puts them all on one
    host (or pod). `names` defaults to name-1 .. name-N.
    """

    name: str
    shape: VMShape
    count: int = Field(default=1, gt=0, le=100_000)
    group: str | None = None
    site: str | None = None
    pod: str | None = None
    anti_affinity: Scope | None = None
    affinity: Scope | None = None
    names: tuple[str, ...] | None = None  # the members' names, if not name-1 .. name-N

    @field_validator("name", "group", "site", "pod")
    @classmethod
    def _names(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else check_name(str(info.field_name), value)

    @field_validator("names")
    @classmethod
    def _member_names(cls, value: tuple[str, ...] | None, info: ValidationInfo
                      ) -> tuple[str, ...] | None:
        if value is None:
            return None
        if len(value) != info.data.get("count", 1):
            raise ValueError("names: one per member (count)")
        if len(set(value)) != len(value):
            raise ValueError("names: each member's name once")
        return tuple(check_name("names", n) for n in value)

    def member_names(self) -> list[str]:
        if self.names is not None:
            return list(self.names)
        if self.count == 1:
            return [self.name]
        return [f"{self.name}-{i}" for i in range(1, self.count + 1)]


class HostState:
    """A hypervisor as the scheduler sees it: capacity, what is already used, where it is."""

    __slots__ = ("cpus", "disk_gib", "group_key", "groups", "maintenance", "memory_mib", "name",
                 "pod", "site", "unreachable", "used_disk_gib", "used_memory_mib", "used_vcpus")

    def __init__(self, name: str, *, site: str, pod: str, cpus: int, memory_mib: int,
                 groups: tuple[str, ...] = (), disk_gib: int | None = None, used_vcpus: int = 0,
                 used_memory_mib: int = 0, used_disk_gib: int = 0, maintenance: bool = False,
                 unreachable: bool = False) -> None:
        if cpus <= 0 or memory_mib <= 0:
            raise InvalidInput(f"host {name}", "cpus and memory must be positive")
        self.name = name
        self.site = site
        self.pod = pod
        self.groups = groups
        # Hosts are indexed by their exact group set: isolation means a VM of group G may only
        # land on hosts whose groups include G, and an ungrouped VM only on ungrouped hosts.
        self.group_key = frozenset(groups)
        self.cpus = cpus
        self.memory_mib = memory_mib
        self.disk_gib = disk_gib
        self.used_vcpus = used_vcpus
        self.used_memory_mib = used_memory_mib
        self.used_disk_gib = used_disk_gib
        self.maintenance = maintenance
        self.unreachable = unreachable

    def copy(self) -> HostState:
        return HostState(self.name, site=self.site, pod=self.pod, cpus=self.cpus,
                         memory_mib=self.memory_mib, groups=self.groups, disk_gib=self.disk_gib,
                         used_vcpus=self.used_vcpus, used_memory_mib=self.used_memory_mib,
                         used_disk_gib=self.used_disk_gib, maintenance=self.maintenance,
                         unreachable=self.unreachable)

    def __repr__(self) -> str:
        return (f"HostState({self.name!r}, {self.used_vcpus}/{self.cpus} vcpus, "
                f"{self.used_memory_mib}/{self.memory_mib} MiB)")
