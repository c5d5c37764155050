"""PXELINUX menus for BIOS clients: per host, install KVM or boot the first disk.

PXELINUX looks for `pxelinux.cfg/01-<mac>` before `pxelinux.cfg/default`, so a known machine
gets its install entry first and an unknown one only the local-disk entry.
"""

from __future__ import annotations

from virtfleet.boot.cmdline import installer_args
from virtfleet.boot.scopes import BootHost
from virtfleet.boot.templating import render

HOST_TIMEOUT = 5  # tenths of a second: a host planned for install starts it at once
DEFAULT_TIMEOUT = 50


def host_file_name(host: BootHost) -> str:
    return f"pxelinux.cfg/01-{host.mac_hyphen}"


def host_menu(host: BootHost) -> str:
    return render("pxelinux.cfg.j2", host=host, args=installer_args(host), timeout=HOST_TIMEOUT)


def default_menu() -> str:
    return render("pxelinux.cfg.j2", host=None, args=[], timeout=DEFAULT_TIMEOUT)
