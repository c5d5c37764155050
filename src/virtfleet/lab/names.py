"""Everything a lab's name decides: its subnet, interface and namespace names, its directories.

Two labs must never touch each other's pieces, and nothing of the lab may collide with anything
else on the machine. So every kernel object the lab makes carries a name derived from the lab's
name (namespaces: `vf-<lab>-h<i>`; interfaces: `vf<K>...`, where K is the lab's subnet byte) and
interfaces additionally carry an ifalias `virtfleet-lab:<lab>` that says whose they are: a name
alone could be a coincidence, the alias is a claim.
"""

from __future__ import annotations

import ipaddress
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

from virtfleet.errors import InvalidInput

DEFAULT_LAB = "lab"
LAB_DIR_ENV = "VIRTFLEET_LAB_DIR"
DEFAULT_LAB_ROOT = Path("/var/lib/virtfleet/lab")
LIBVIRT_PORT = 16509
MAX_HOSTS = 200  # hypervisor i (1..200) is .(10+i): .11 .. .210 of the lab's /24
SIM_BASE = 1000  # simulation daemon j (1..40) has index SIM_BASE+j and address .(210+j)
MAX_SIMS = 40

# Short and plain so that derived names stay valid netns names and file names.
_LAB_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,22}[a-z0-9]$|^[a-z]$")

# Directories the lab's daemons get private copies of (bind mounts inside their mount namespace).
PRIVATE_DIRS: dict[str, str] = {
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "etc": "/etc/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
}


def sim_index(j: int) -> int:
    """The slot index of simulation daemon `j` (1-based)."""
    return SIM_BASE + j


def is_sim(index: int) -> bool:
    return index > SIM_BASE


def check_lab_name(name: str) -> str:
    if not _LAB_NAME_RE.match(name):
        raise InvalidInput(
            "lab name",
            f"{name!r} must be 1-24 lowercase letters, digits or '-', starting with a letter",
        )
    return name


def lab_root() -> Path:
    """Where labs keep their state: $VIRTFLEET_LAB_DIR or /var/lib/virtfleet/lab."""
    raw = os.environ.get(LAB_DIR_ENV, "")
    root = Path(raw).expanduser() if raw else DEFAULT_LAB_ROOT
    if not root.is_absolute():
        root = Path.cwd() / root
    return root


def shadowed_by(path: Path) -> str | None:
    """The private directory that would hide `path` from the lab's daemons, if any."""
    for target in PRIVATE_DIRS.values():
        if path == Path(target) or Path(target) in path.parents:
            return target
    return None


@dataclass(frozen=True)
class LabNames:
    """The names and addresses one lab uses; pure arithmetic, no side effects."""

    name: str
    state_dir: Path

    @classmethod
    def for_lab(cls, name: str = DEFAULT_LAB, root: Path | None = None) -> LabNames:
        check_lab_name(name)
        state_dir = (root or lab_root()) / name
        hidden = shadowed_by(state_dir)
        if hidden:
            raise InvalidInput(
                LAB_DIR_ENV, f"{str(state_dir)!r} is inside {hidden}, which lab daemons cannot see"
            )
        return cls(name=name, state_dir=state_dir)

    # -- network ------------------------------------------------------------------------------

    @property
    def octet(self) -> int:
        """K in 10.250.K.0/24: a stable function of the name, 1..254."""
        return zlib.crc32(self.name.encode()) % 254 + 1

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.250.{self.octet}.0/24")

    @property
    def gateway(self) -> str:
        """The host side: the lab bridge's address."""
        return f"10.250.{self.octet}.1"

    def address(self, index: int) -> str:
        """Hypervisor `index` (1-based) is .(10+index); simulation daemon j is .(210+j)."""
        last = 210 + index - SIM_BASE if is_sim(index) else 10 + index
        return f"10.250.{self.octet}.{last}"

    @property
    def alias(self) -> str:
        """The ifalias every interface of this lab carries."""
        return f"virtfleet-lab:{self.name}"

    @property
    def bridge(self) -> str:
        return f"vf{self.octet}br"

    @staticmethod
    def _slot(index: int) -> str:
        return f"sim{index - SIM_BASE}" if is_sim(index) else f"h{index}"

    def veth(self, index: int) -> str:
        """Host-side end of hypervisor `index`'s veth (at most 15 characters)."""
        return f"vf{self.octet}{self._slot(index)}"

    def netns(self, index: int) -> str:
        return f"vf-{self.name}-{self._slot(index)}"

    def netns_pattern(self) -> re.Pattern[str]:
        """Matches this lab's namespaces and nothing else's (the name is anchored both ends)."""
        return re.compile(rf"^vf-{re.escape(self.name)}-(h|sim)[0-9]+$")

    # -- names and files ----------------------------------------------------------------------

    def host_name(self, index: int) -> str:
        if is_sim(index):
            return f"{self.name}-sim{index - SIM_BASE}"
        return f"{self.name}-hv{index}"

    def pod_name(self, pod: int) -> str:
        return f"{self.name}-pod{pod}"

    @property
    def site_name(self) -> str:
        return self.name

    def host_dir(self, index: int) -> Path:
        return self.state_dir / "hosts" / self._slot(index)

    def pod_dir(self, pod: int) -> Path:
        return self.state_dir / "pods" / self.pod_name(pod)

    @property
    def state_file(self) -> Path:
        return self.state_dir / "lab.json"

    @property
    def fleet_file(self) -> Path:
        return self.state_dir / "fleet.yaml"

    @property
    def sim_dir(self) -> Path:
        return self.state_dir / "sim"

    def uri(self, index: int, transport: str = "tcp") -> str:
        if transport == "ssh":
            return f"qemu+ssh://root@{self.address(index)}/system"
        return f"qemu+{transport}://{self.address(index)}/system"
