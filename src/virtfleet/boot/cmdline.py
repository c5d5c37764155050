"""The installer's kernel command line, the same whichever loader (PXELINUX, iPXE, GRUB)."""

from __future__ import annotations

from virtfleet.boot.scopes import BootHost


def installer_args(host: BootHost) -> list[str]:
    """Profile arguments, BOOTIF (so the installer uses the NIC that booted), the kickstart."""
    return [*host.profile.kernel_args, f"BOOTIF=01-{host.mac_hyphen}",
            f"{host.profile.ks_arg}={host.ks_url}"]
