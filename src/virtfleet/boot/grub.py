"""GRUB configurations for UEFI clients (DHCP hands them grub/grubx64.efi over TFTP).

GRUB's network boot reads `grub.cfg-01-<mac>` before `grub.cfg`, like PXELINUX, in its prefix:
the directory its image was loaded from (a signed distribution grubx64.efi has no prefix of its
own). So the image is handed out from grub/, where the per-MAC files are. 'exit' hands the
machine back to the firmware, which then boots the disk.
"""

from __future__ import annotations

from virtfleet.boot.cmdline import installer_args
from virtfleet.boot.scopes import BootHost
from virtfleet.boot.templating import render

CONFIG_DIR = "grub"
BOOT_FILE = f"{CONFIG_DIR}/grubx64.efi"  # DHCP's filename for UEFI clients, under the TFTP root
HOST_TIMEOUT = 1  # seconds
DEFAULT_TIMEOUT = 5


def host_file_name(host: BootHost) -> str:
    return f"{CONFIG_DIR}/grub.cfg-01-{host.mac_hyphen}"


def host_config(host: BootHost) -> str:
    return render("grub.cfg.j2", host=host, args=installer_args(host), timeout=HOST_TIMEOUT)


def default_config() -> str:
    return render("grub.cfg.j2", host=None, args=[], timeout=DEFAULT_TIMEOUT)
