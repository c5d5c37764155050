"""The installer's kernel command line, the same whichever loader (PXELINUX, iPXE, GRUB)."""

from __future__ import annotations

import re

from virtfleet.boot.scopes import BootHost

_ETH = re.compile(r"^eth[0-9]+$")


def eth_names_args(host: BootHost) -> list[str]:
    """Kernel arguments that keep the kernel's ethN names, when the host's bond is written with
    them: EL7 and later name NICs predictably (eno1, ens3f0) and EL6 on some hardware by
    biosdevname (em1), so a bond of eth0,eth1 would find no such interfaces."""
    if host.bond is None or not any(_ETH.match(name) for name in host.bond.interfaces):
        return []
    return ["net.ifnames=0", "biosdevname=0"]


def installer_args(host: BootHost) -> list[str]:
    """Profile arguments, BOOTIF (so the installer uses the NIC that booted), the kickstart."""
    return [*host.profile.kernel_args, *eth_names_args(host), f"BOOTIF=01-{host.mac_hyphen}",
            f"{host.profile.ks_arg}={host.ks_url}"]
