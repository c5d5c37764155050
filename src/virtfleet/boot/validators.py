"""The real tools that judge generated files: `dhcpd -t`, `kea-dhcp4 -t`, `haproxy -c`.

Kickstarts are judged in process by pykickstart (see kickstart.py); PXELINUX, iPXE and GRUB
have no checker that runs without booting, so their templates are covered by golden files.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from virtfleet.errors import VirtfleetError

# kind -> (binary, arguments before the file name)
COMMANDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "dhcpd": ("dhcpd", ("-t", "-cf")),
    "kea": ("kea-dhcp4", ("-t",)),
    "haproxy": ("haproxy", ("-c", "-f")),
}
TIMEOUT = 60.0


class ValidatorMissing(VirtfleetError):
    """The checker for a kind of file is not installed here."""


@dataclass(frozen=True)
class Verdict:
    kind: str
    path: Path
    ok: bool
    output: str


def binary(kind: str) -> str | None:
    """The checker's full path, or None if it is not installed."""
    name = COMMANDS[kind][0]
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def check(kind: str, path: Path) -> Verdict:
    exe = binary(kind)
    if exe is None:
        raise ValidatorMissing(f"{COMMANDS[kind][0]} is not installed; it checks {kind} files "
                               "(scripts/install-deps.sh installs it)")
    proc = subprocess.run([exe, *COMMANDS[kind][1], str(path)], capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)
    return Verdict(kind, path, proc.returncode == 0, (proc.stdout + proc.stderr).strip())
