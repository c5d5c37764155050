"""`virtfleet serve`, with every running simulated VM answering the stats pass as a real QEMU
guest does: for bench/metrics.py only.

libvirt's test driver answers getAllDomainStats with each domain's state and nothing else, so a
scrape of the simulated fleet lacks the CPU, memory, disk and network series that make most of
a real scrape. Here the stats pass still makes its real bulk call to every simulated hypervisor
(over the controller's held connections, as ever), and then each domain that is not shut off
gets the figures a real QEMU domain returned (tests/unit/fixtures/stats/qemu-domain.json,
captured on a lab hypervisor) with its disk and its interface doubled: 2 disks and 2 NICs per
VM, more series than the capture, so the scrape measured is no lighter than a real one.

Usage: python bench/qemu_figures_serve.py [serve options]   (VIRTFLEET_DB as for virtfleet)
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from virtfleet.controller import stats as controller_stats
from virtfleet.virt.stats import HostStats, host_stats, parse_domain

ROOT = Path(__file__).resolve().parent.parent
CAPTURE = ROOT / "tests" / "unit" / "fixtures" / "stats" / "qemu-domain.json"


def widened() -> dict[str, Any]:
    """The captured record with block.0 and net.0 copied to block.1 (vda) and net.1."""
    raw: dict[str, Any] = dict(json.loads(CAPTURE.read_text())["stats"])
    for family, second in (("block", "vda"), ("net", "vnet1")):
        for key, value in list(raw.items()):
            if key.startswith(f"{family}.0."):
                raw[key.replace(f"{family}.0.", f"{family}.1.", 1)] = value
        raw[f"{family}.1.name"] = second
        raw[f"{family}.count"] = 2
    return raw


RAW = widened()

def qemu_like(host: Any) -> HostStats:
    got = host_stats(host)  # the real bulk call: one per hypervisor
    return replace(got, domains=tuple(
        d if d.state == "shut off" else parse_domain(d.name, d.uuid, RAW)
        for d in got.domains))


# StatsCache.collect looks host_stats up in its module at each pass.
vars(controller_stats)["host_stats"] = qemu_like

if __name__ == "__main__":
    from virtfleet.cli.main import main

    sys.argv = ["virtfleet", "serve", *sys.argv[1:]]
    main()
