"""bench/fence: how long fencing takes through a lab hypervisor's simulated BMC (ipmi_sim).

One lab hypervisor running one tiny guest, its BMC, and for each of N rounds:

- virtfleet (ha/fence.py): power status; power off (the agent's off, then the status call that
  confirms it); power on (on, then the confirming status); and from power on until the
  hypervisor's libvirtd answers again.
- the baseline, in the same rounds: `fence_ipmilan` run by hand as its man page shows, options
  (and the password) on the command line, `--power-wait=0` like the lab's fleet file, no
  confirming status call; and raw `ipmitool -E ... chassis power status`.

The difference is what virtfleet adds (stdin options, the ipmitool shim, the confirming status
call). The guest is booted again before each off, outside the timings, so every off kills a
QEMU. Prints the figures and records them in docs/benchmarks.md (not with --quick).
Usage: .venv/bin/python bench/fence.py [--rounds N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from record import ROOT, record, stamp  # bench/record.py: the script's own directory is on sys.path
from virtfleet.config import Timeouts
from virtfleet.ha.fence import FenceDevice, Power, power_off, power_on, power_status
from virtfleet.inventory.fleetfile import load_fleet
from virtfleet.lab import guest
from virtfleet.lab.bmc import LabBmcs
from virtfleet.lab.guests import outer_log
from virtfleet.lab.lab import Lab
from virtfleet.lab.state import LabHost
from virtfleet.virt.host import Host

sys.path.insert(0, str(ROOT))  # the lab tests' wait for a hypervisor to answer
from tests.integration.ticking import wait_answering  # noqa: E402

LAB = "vfbench-fence"
GUEST = "bench-fence-guest"
T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    t = time.monotonic()
    out = fn()
    return time.monotonic() - t, out


def sh(argv: list[str], env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,)) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if p.returncode not in ok:
        raise SystemExit(f"bench: {' '.join(argv[:2])} exited {p.returncode}: "
                         f"{(p.stderr or p.stdout).strip()[-300:]}")
    return p.stdout


def boot_guest(host: LabHost, images: guest.GuestImages) -> None:
    log = outer_log(host, GUEST)
    with Host.open(host.uri, Timeouts(connect=10.0), label=host.name) as h:
        if not h.has_domain(GUEST):
            h.define_domain(guest.domain_xml(GUEST, images))
        if not any(d.name == GUEST and d.state == "running" for d in h.list_domains()):
            log.unlink(missing_ok=True)
            h.start_domain(GUEST)
    deadline = time.monotonic() + 120
    while not guest.seen_marker(log):
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {GUEST} did not boot; see {log}")
        time.sleep(0.1)


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f}"


def spread(xs: list[float]) -> str:
    return f"{min(xs):.2f}-{max(xs):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="2 rounds, not recorded")
    args = ap.parse_args()
    rounds = 2 if args.quick else args.rounds
    lab = Lab(LAB)
    try:
        st = lab.up(hosts=1)
        [bmc] = LabBmcs(lab).start()
        assert st.fleet_file is not None
        [(_, _, hv)] = list(load_fleet(st.fleet_file).hypervisors())
        dev = FenceDevice.of(hv)
        host = st.hosts[0]
        images = guest.ensure_images()
        password = Path(bmc.password_file).read_text().strip()
        by_hand = ["fence_ipmilan", f"--ip={bmc.address}", f"--ipport={bmc.port}",
                   f"--username={bmc.username}", f"--password={password}", "--lanplus",
                   "--cipher=3", "--power-wait=0"]
        ipmitool = ["ipmitool", "-I", "lanplus", "-H", bmc.address, "-p", str(bmc.port),
                    "-U", bmc.username, "-E", "-C", "3", "chassis", "power", "status"]
        quiet = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning",
                 "IPMITOOL_PASSWORD": password}
        f: dict[str, list[float]] = {k: [] for k in (
            "status", "off", "on", "back", "hand_status", "hand_off", "hand_on", "hand_back",
            "ipmitool")}
        for r in range(rounds):
            boot_guest(host, images)
            s, res = timed(lambda: power_status(dev))
            assert res.power is Power.ON, res
            f["status"].append(s)
            s, res = timed(lambda: power_off(dev))
            assert res.power is Power.OFF, res
            f["off"].append(s)
            t0 = time.monotonic()
            on = power_on(dev)
            f["on"].append(time.monotonic() - t0)
            assert on.power is Power.ON, on
            wait_answering(host, every=0.05)
            f["back"].append(time.monotonic() - t0)

            boot_guest(host, images)
            f["hand_status"].append(timed(lambda: sh([*by_hand, "-o", "status"], quiet))[0])
            f["ipmitool"].append(timed(lambda: sh(ipmitool, quiet))[0])
            f["hand_off"].append(timed(lambda: sh([*by_hand, "-o", "off"], quiet))[0])
            t0 = time.monotonic()
            sh([*by_hand, "-o", "on"], quiet)
            f["hand_on"].append(time.monotonic() - t0)
            wait_answering(host, every=0.05)
            f["hand_back"].append(time.monotonic() - t0)
            print(f"round {r + 1}: virtfleet status {f['status'][-1]:.2f} s, off "
                  f"{f['off'][-1]:.2f} s, on {f['on'][-1]:.2f} s, answering "
                  f"{f['back'][-1]:.2f} s | by hand status {f['hand_status'][-1]:.2f} s, off "
                  f"{f['hand_off'][-1]:.2f} s, on {f['hand_on'][-1]:.2f} s | ipmitool "
                  f"{f['ipmitool'][-1]:.2f} s")
        if args.quick:
            return
        rows = [
            ("power status", "status", "hand_status", "agent's status"),
            ("power off (guest's QEMU killed)", "off", "hand_off",
             "virtfleet: off + confirming status"),
            ("power on", "on", "hand_on", "virtfleet: on + confirming status"),
            ("power on until libvirtd answers", "back", "hand_back", "the lab host's boot"),
        ]
        table = ("| work | virtfleet (ha/fence.py) median | range | `fence_ipmilan` by hand "
                 "median | range | note |\n|---|---:|---:|---:|---:|---|\n")
        for label, ours, theirs, note in rows:
            table += (f"| {label} | {med(f[ours])} | {spread(f[ours])} | {med(f[theirs])} | "
                      f"{spread(f[theirs])} | {note} |\n")
        table += (f"| raw `ipmitool -E chassis power status` | | | {med(f['ipmitool'])} | "
                  f"{spread(f['ipmitool'])} | no agent |\n")
        record("fence", (
            f"`bench/fence.py`, {stamp()}, on {platform.node()} "
            f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end), "
            f"{rounds} rounds; one lab hypervisor running one tiny "
            "TCG guest, its simulated BMC (OpenIPMI `ipmi_sim` on loopback, cipher suite 3, "
            "power_wait 0); seconds, all from the same run, virtfleet and the hand-run agent "
            "alternating on the same BMC."),
            table + "\nvirtfleet passes the options on stdin, keeps the password off every "
            "command line (ipmitool gets it through IPMITOOL_PASSWORD via "
            "`virtfleet-ipmitool`), and confirms off and on with a second status call; the "
            "hand-run agent puts the password on its command line and reports without a "
            "confirming call.")
    finally:
        LabBmcs(lab).stop()
        lab.down()


if __name__ == "__main__":
    main()
