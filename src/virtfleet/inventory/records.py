"""Plain typed records passed between the store, the libvirt layer, the controller and the CLI.

They carry no behaviour and import nothing heavy, so every layer can use them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

# virsh's words for domain states (virsh-domain-monitor.c); virt/host.py maps libvirt's numbers
# to exactly these.
STATES = ("running", "idle", "paused", "in shutdown", "shut off", "crashed", "pmsuspended",
          "no state")


@dataclass(frozen=True)
class HostFailure:
    """One hypervisor that did not answer a fleet operation, and why."""

    host: str
    kind: str  # VirtfleetError.kind: host-unavailable, operation-timeout, ...
    message: str  # without the host name in front

    def as_json(self) -> dict[str, str]:
        return {"host": self.host, "kind": self.kind, "error": self.message}


@dataclass(frozen=True)
class HostRecord:
    """A hypervisor as the inventory knows it."""

    name: str
    uri: str
    site: str
    pod: str
    groups: tuple[str, ...] = ()
    maintenance: bool = False


@dataclass(frozen=True)
class DomainRecord:
    """A VM as one hypervisor reported it (virsh list's facts, plus size)."""

    name: str
    uuid: str
    state: str  # virsh's words: running, idle, paused, in shutdown, shut off, crashed, pmsuspended
    id: int | None  # libvirt domain id while active, else None
    vcpus: int
    memory_mib: int
    # a sealed template (virtfleet's metadata says role=template): never started, only cloned.
    # None: not asked (a cold `list` does not; the controller does: Host.list_domains)
    template: bool | None = None


@dataclass(frozen=True)
class FleetVM:
    """A VM placed in the fleet: which host, pod and site it is on, and when it was seen."""

    host: str
    site: str
    pod: str
    domain: DomainRecord
    observed_at: datetime | None = None  # None: read live just now

    def as_json(self) -> dict[str, object]:
        d = self.domain
        return {
            "host": self.host,
            "site": self.site,
            "pod": self.pod,
            "name": d.name,
            "uuid": d.uuid,
            "state": d.state,
            "id": d.id,
            "vcpus": d.vcpus,
            "memory_mib": d.memory_mib,
            "template": d.template,
            "observed_at": self.observed_at.isoformat() if self.observed_at else None,
        }


@dataclass(frozen=True)
class HostStatus:
    """The last thing the controller or a sync learned about a hypervisor's reachability."""

    host: str
    reachable: bool
    error: str = ""
    observed_at: datetime | None = None


@dataclass(frozen=True)
class ControllerRecord:
    """A running `virtfleet serve`, registered in the store so CLIs can find it."""

    url: str
    token: str
    pid: int
    hostname: str
    started_at: datetime
    heartbeat_at: datetime


@dataclass
class ApplyPlan:
    """What `apply` would do: lists of (kind, name, detail) triples."""

    added: list[tuple[str, str, str]] = field(default_factory=list)
    changed: list[tuple[str, str, str]] = field(default_factory=list)
    removed: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed)


@dataclass(frozen=True)
class VMLock:
    """Who is operating on a VM right now."""

    vm: str
    operation: str
    hostname: str
    pid: int
    acquired_at: datetime


@dataclass(frozen=True)
class Made:
    """One thing a multi-step operation made, enough for any later process to undo it.

    kind: "claim" (ref = the VM's name), "volume" (ref = its path), "poolvol" (ref = "POOL/NAME",
    recorded before the volume is made), "vm" (ref = "NAME/UUID", recorded before the domain is
    defined, undone only if that UUID has that name), "domain" (ref = its name) or
    "migration" (ref = "NAME/UUID>TARGET>volumes[>autostart]", settled, not simply undone:
    provision/migrate.py), each on hypervisor `host`.
    """

    kind: str
    host: str
    ref: str

    def describe(self) -> str:
        return f"{self.kind} {self.ref} on {self.host}"


@dataclass(frozen=True)
class Owner:
    """Who runs (or undoes) a journaled operation: a process, and the controller it is, if it
    is one (its controller_members holder; None for a CLI). Every journal write of an operation
    names its owner and is refused once the row has another (it was claimed)."""

    hostname: str
    pid: int
    holder: str | None = None

    def describe(self) -> str:
        return f"pid {self.pid} on {self.hostname}" + (
            f" (controller {self.holder})" if self.holder else "")


@dataclass(frozen=True)
class OperationRecord:
    """A multi-step operation in the journal: running, or failed with steps left to undo."""

    id: str
    kind: str
    target: str
    hostname: str
    pid: int
    started_at: datetime
    state: str
    steps: tuple[Made, ...]
    error: str | None = None
    # The controller (member holder) running it; None: the process (hostname, pid) is its owner.
    owner: str | None = None
    claimed_at: datetime | None = None  # when it was claimed after its owner died

    @property
    def run_by(self) -> Owner:
        return Owner(self.hostname, self.pid, self.owner)


@dataclass(frozen=True)
class InstallPlan:
    """A hypervisor with a `provision` section: what `boot serve` may install."""

    host: str
    mac: str
    site: str
    pod: str
    profile: str


@dataclass(frozen=True)
class InstallRecord:
    host: str
    mac: str
    site: str
    pod: str
    profile: str
    state: str
    token_hash: str | None
    token_expires_at: datetime | None
    planned_at: datetime
    booting_at: datetime | None
    installing_at: datetime | None
    installed_at: datetime | None
    enrolled_at: datetime | None
    failed_at: datetime | None
    updated_at: datetime
    error: str
    check_ok: bool | None
    check_detail: str
    refused: int = 0  # requests naming this host that boot serve refused
    limited: int = 0  # ...and those it answered 429 (too many refusals)

    def as_json(self) -> dict[str, object]:
        """Everything but the token's hash: status output never carries secrets."""
        def iso(v: datetime | None) -> str | None:
            return v.isoformat() if v is not None else None
        return {
            "host": self.host, "mac": self.mac, "site": self.site, "pod": self.pod,
            "profile": self.profile, "state": self.state,
            "planned_at": iso(self.planned_at), "booting_at": iso(self.booting_at),
            "installing_at": iso(self.installing_at), "installed_at": iso(self.installed_at),
            "enrolled_at": iso(self.enrolled_at), "failed_at": iso(self.failed_at),
            "updated_at": iso(self.updated_at), "token_expires_at": iso(self.token_expires_at),
            "error": self.error, "check_ok": self.check_ok, "check_detail": self.check_detail,
            "refused": self.refused, "limited": self.limited,
        }
