"""HAProxy configuration for the clustered design: one frontend (the site's HTTP boot address)
over the real Kickstart/iPXE servers. DHCP and TFTP are UDP, which HAProxy does not balance;
DHCP has its failover pair instead."""

from __future__ import annotations

from virtfleet.boot.templating import render
from virtfleet.inventory.fleetfile import Site


def render_haproxy(site: Site) -> str | None:
    """The configuration, or None when the site's topology has no load balancer."""
    boot = site.boot
    if boot is None or boot.topology != "clustered" or boot.frontend is None:
        return None
    return render("haproxy.cfg.j2", site=site.name, frontend=boot.frontend,
                  real_servers=boot.real_servers)
