"""The lab's state file (lab.json): what `up` made, so `status`, `guests` and `down` can find it.

It is a record, not the authority: `down` and the next `up` also search the machine for the
lab's pieces by name, so a lost or stale state file never leaves anything behind.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from virtfleet.errors import LabError


@dataclass
class LabHost:
    """One lab hypervisor (or a simulation daemon, whose pod is "")."""

    name: str
    index: int
    pod: str
    netns: str
    veth: str
    address: str
    uri: str
    dir: str  # its private directories live under here
    libvirtd_pid: int | None = None
    virtlogd_pid: int | None = None

    @property
    def log_dir(self) -> Path:
        """The host's /var/log/libvirt, as seen from outside its namespace."""
        return Path(self.dir) / "log"

    @property
    def admin_uri(self) -> str:
        """How the lab itself reaches this daemon: its qemu+tcp URI, or for a qemu+ssh or
        qemu+tls hypervisor its Unix socket (seen from here under the host's directory), so the
        lab's own checks need none of the pinned keys or certificates a client uses."""
        if "+tcp://" in self.uri:
            return self.uri
        return f"qemu+unix:///system?socket={self.dir}/run/libvirt-sock"


@dataclass
class LabState:
    name: str
    subnet: str
    bridge: str
    state_dir: str
    created_at: str
    fleet_file: str | None = None
    transport: str = "tcp"  # how the hypervisors (not the simulation daemons) are reached
    client_dir: str | None = None  # the lab's transport directory (ssh or tls)
    pods: dict[str, str] = field(default_factory=dict)  # pod name -> its shared directory
    hosts: list[LabHost] = field(default_factory=list)
    sims: list[LabHost] = field(default_factory=list)  # daemons serving simulated fleets
    leases: bool = False  # libvirt's lock manager (virtlockd) guards the pods' disks

    def host(self, name: str) -> LabHost:
        for h in self.hosts:
            if h.name == name:
                return h
        for h in self.sims:
            if h.name == name:
                return h
        raise LabError(f"lab {self.name}: no hypervisor named {name!r}")

    def all_hosts(self) -> list[LabHost]:
        return [*self.hosts, *self.sims]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabState:
        hosts = [LabHost(**h) for h in data.get("hosts", [])]
        sims = [LabHost(**h) for h in data.get("sims", [])]
        rest = {k: v for k, v in data.items() if k not in ("hosts", "sims")}
        return cls(hosts=hosts, sims=sims, **rest)


def save(state: LabState, path: Path) -> None:
    """Write atomically: a reader never sees half a file."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2) + "\n")
    os.replace(tmp, path)


def load(path: Path) -> LabState | None:
    """The recorded state, or None if there is none (or it is unreadable: discovery copes)."""
    try:
        data = json.loads(path.read_text())
        return LabState.from_json(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError):
        return None
