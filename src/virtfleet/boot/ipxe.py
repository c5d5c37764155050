"""iPXE scripts: one per host (kernel, initrd and kickstart over HTTP), and boot.ipxe, which any
iPXE client is given by DHCP and which chains to the host's own script by MAC."""

from __future__ import annotations

from virtfleet.boot.cmdline import installer_args
from virtfleet.boot.scopes import BootHost
from virtfleet.boot.templating import render


def host_file_name(host: BootHost) -> str:
    return f"ipxe/hosts/{host.mac_hyphen}.ipxe"


def host_script(host: BootHost) -> str:
    return render("host.ipxe.j2", host=host, base=host.servers.http_base,
                  args=installer_args(host))


def chain_script() -> str:
    return render("boot.ipxe.j2")
