"""HAProxy configuration for the clustered design: one frontend (the site's HTTP boot address)
over the real Kickstart/iPXE servers (`boot serve`). DHCP and TFTP are UDP, which HAProxy does
not balance; DHCP has its failover pair instead.

What `boot serve` needs from it: health checks on /healthz (its other paths answer 404 or 403
to a bare GET), the client's address in X-Forwarded-For (set, never appended, so a client cannot
forge it), an access log without query strings (kickstart URLs carry install tokens), and a
dead server's requests sent again to another (every boot serve request is safe to replay).

maxconn is sized to the site: HAProxy reserves two descriptors per connection and refuses to
start (while `haproxy -c` passes) when its descriptor limit is lower than that.
"""

from __future__ import annotations

import os
import re

from virtfleet.boot.templating import render
from virtfleet.inventory.fleetfile import Site

# iPXE fetches one file at a time; the installer fetches its tree with a few in parallel.
CONNECTIONS_PER_HOST = 8
BASE_CONNECTIONS = 256  # health checks, retries, people
HEALTH_PATH = "/healthz"
# Measured on HAProxy 2.6: 2 x maxconn, one per server and listener, 3 per thread and about a
# dozen more; the margin covers other versions.
FD_MARGIN = 32
MAX_THREADS = 64  # HAProxy's default nbthread: the CPUs it may run on, up to 64


def maxconn(hosts: int) -> int:
    return BASE_CONNECTIONS + CONNECTIONS_PER_HOST * hosts


def render_haproxy(site: Site) -> str | None:
    """The configuration, or None when the site's topology has no load balancer."""
    boot = site.boot
    if boot is None or boot.topology != "clustered" or boot.frontend is None:
        return None
    hosts = sum(hv.provision is not None for pod in site.pods for hv in pod.hypervisors)
    return render("haproxy.cfg.j2", site=site.name, frontend=boot.frontend,
                  real_servers=boot.real_servers, hosts=hosts, per_host=CONNECTIONS_PER_HOST,
                  base=BASE_CONNECTIONS, maxconn=maxconn(hosts), health=HEALTH_PATH)


def threads() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return min(MAX_THREADS, cpus)


def fds_needed(text: str, nbthread: int | None = None) -> int:
    """File descriptors `haproxy -f` will ask for with this configuration (on a machine with
    `nbthread` CPUs; default: this one)."""
    found = re.search(r"^\s*maxconn\s+(\d+)\s*$", text, re.M)
    conns = int(found.group(1)) if found else 0
    sockets = len(re.findall(r"^\s*(?:server|bind)\s", text, re.M))
    return 2 * conns + sockets + 3 * (nbthread or threads()) + FD_MARGIN
