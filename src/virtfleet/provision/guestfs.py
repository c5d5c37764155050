"""Sealing and customising disk images with libguestfs' tools (virt-sysprep, virt-customize).

They run on local image files: templates are sealed on a copy fetched over the libvirt
connection, so virtfleet needs no shell on the hypervisor. Where KVM cannot be used (the
VIRTFLEET_VIRT_TYPE setting says qemu), libguestfs' appliance is told to use TCG as well.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

from virtfleet.config import virt_type_setting
from virtfleet.errors import ToolFailed

# virt-sysprep's default operations (machine-id, ssh-hostkeys, logfiles, bash-history,
# net-hwaddr, udev-persistent-net, dhcp-client-state, tmp-files, ...) minus `customize`, whose
# defaults write a fresh /etc/machine-id: a template's must stay empty so each clone makes its own.
SEAL_OPERATIONS = "defaults,-customize"

# The `optimize` profile: a guest that idles quietly (no unused services polling), shuts down
# on ACPI, and shows its console on serial, as virt-customize steps. Each command checks that
# what it changes exists, so one profile serves RHEL-like and Debian-like images.
_SERVICES_OFF = ("ip6tables", "cups", "abrtd", "abrt-ccpp", "atd", "kdump", "mdmonitor",
                 "smartd")
OPTIMIZE_PROFILE: tuple[str, ...] = (
    # tuned's virtual-guest profile, applied when the tuned daemon first starts in a clone
    "--run-command", "if command -v tuned-adm >/dev/null 2>&1; then mkdir -p /etc/tuned && "
    "echo virtual-guest > /etc/tuned/active_profile && systemctl enable tuned; fi",
    # services a VM does not need
    "--run-command", "for s in " + " ".join(_SERVICES_OFF) + "; do "
    "systemctl disable \"$s\" >/dev/null 2>&1 || chkconfig \"$s\" off >/dev/null 2>&1 || :; "
    "done",
    # acpid, so an ACPI shutdown (virsh shutdown) powers the guest off
    "--run-command", "if command -v acpid >/dev/null 2>&1; then "
    "systemctl enable acpid >/dev/null 2>&1 || chkconfig acpid on; fi",
    # the serial console in the boot loader, so `virtfleet vm console` sees the boot
    "--run-command", "if [ -f /etc/default/grub ] && ! grep -q console=ttyS0 /etc/default/grub;"
    " then sed -i 's/^GRUB_CMDLINE_LINUX=\"/GRUB_CMDLINE_LINUX=\"console=tty0 "
    "console=ttyS0,115200 /' /etc/default/grub; fi",
    # IPv6 off
    "--write", "/etc/sysctl.d/90-virtfleet-guest.conf:net.ipv6.conf.all.disable_ipv6 = 1\n"
    "net.ipv6.conf.default.disable_ipv6 = 1\n",
)
PROFILES = {"optimize": OPTIMIZE_PROFILE}
TIMEOUT = 1800.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("LIBGUESTFS_BACKEND", "direct")
    if virt_type_setting() == "qemu":
        env.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
    return env


def _run(argv: list[str], what: str) -> None:
    if shutil.which(argv[0]) is None:
        raise ToolFailed(f"{what}: {argv[0]} is not installed (Debian: apt-get install "
                         "libguestfs-tools)")
    try:
        done = subprocess.run(argv, env=_env(), capture_output=True, text=True,
                              timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ToolFailed(f"{what}: {argv[0]} did not finish in {TIMEOUT:.0f}s") from exc
    if done.returncode != 0:
        lines = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()
        raise ToolFailed(f"{what}: {argv[0]} failed: {lines[-1]}")


def _disks(images: Sequence[tuple[str, str]]) -> list[str]:
    argv = []
    for path, fmt in images:
        argv += ["--format", fmt, "-a", path]
    return argv


def seal(images: Sequence[tuple[str, str]]) -> None:
    """virt-sysprep the guest whose disks are `images` ((path, format) pairs)."""
    _run(["virt-sysprep", "--quiet", "--operations", SEAL_OPERATIONS, *_disks(images)],
         "sealing the template")


def customize(images: Sequence[tuple[str, str]], profile: str) -> None:
    _run(["virt-customize", "--quiet", *_disks(images), *PROFILES[profile]],
         f"applying the {profile!r} profile")
