"""bench/metrics: a `/metrics` scrape of the reference fleet, against the chapter's stats loop.

On a simulated reference fleet (1,500 hypervisors x 10 VMs, libvirt test driver served over
real RPC by lab daemons through test+tcp://), in one run:

- baseline: bash looping over the hypervisor URIs running `virsh -c URI domstats` one host
  after another (the chapter's hv.sh way of reading every VM's figures: already libvirt's bulk
  call, one per host, but one host at a time and a new connection each);
- the controller's stats pass: `virtfleet serve` reading every host's bulk stats over the
  connections it holds (virtfleet_controller_stats_pass_seconds, as the controller reports it);
- the scrape: GET /metrics on the controller's Unix socket, as Prometheus would, once the first
  stats pass has ended: the first scrape (renders the fleet view's series) and the following
  ones (from the cache), each parsed by prometheus-client's parser to count what came back.

Targets (issue 13): a scrape under 2 s, the controller under 1 GiB RSS. Prints the figures
beside the baseline and records them in docs/benchmarks.md. Needs root (the lab daemons live in
network namespaces). Usage: .venv/bin/python bench/metrics.py [--quick] [--runs N]
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

# bench/common.py and bench/record.py: the script's own directory is on sys.path
from common import (
    VF,
    hypervisor_uris,
    lab_down,
    proc_peak_mib,
    simulate,
    simulated_vms,
    stop_controller,
    timed,
)
from record import report, stamp
from virtfleet.inventory.store import Store

ROOT = Path(__file__).resolve().parent.parent
LAB = "obs-bench"
TARGET_S = 2.0
TARGET_MIB = 1024


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


def scrape(sock_path: str, token: str) -> tuple[float, bytes]:
    """(seconds, body) of one GET /metrics, connection included, as a scraper sees it."""
    start = time.perf_counter()
    conn = UnixHTTP(sock_path, 120)
    try:
        conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    secs = time.perf_counter() - start
    if resp.status != 200:
        raise SystemExit(f"/metrics answered {resp.status}: {body[:500]!r}")
    return secs, body


@dataclass
class Scrape:
    """What one scrape held, read through prometheus-client's own parser."""

    size: int
    samples: int
    cpu_vms: int  # VMs with a CPU series
    vms: int  # VMs in the fleet view (one virtfleet_vm_state series each)
    active: int  # of them neither shut off nor unknown: those QEMU would report figures for
    hosts_read: int
    pass_s: float | None
    host_errors: float


def parse(body: bytes) -> Scrape:
    n = cpu = vms = active = hosts = 0
    pass_s = None
    errors = 0.0
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            n += 1
            if s.name == "virtfleet_vm_cpu_seconds_total":
                cpu += 1
            elif s.name == "virtfleet_vm_state":
                vms += 1
                active += s.labels["state"] not in ("shut off", "unknown")
            elif s.name == "virtfleet_host_stats_up":
                hosts += int(s.value)
            elif s.name == "virtfleet_controller_stats_pass_seconds":
                pass_s = s.value
            elif s.name == "virtfleet_controller_stats_host_errors_total":
                errors = s.value
    return Scrape(len(body), n, cpu, vms, active, hosts, pass_s, errors)


@dataclass
class Figures:
    scrape: Scrape
    first_s: float
    runs: list[float]
    rss_before: float
    rss: float


def measure(controller: subprocess.Popen[bytes], db: Path, runs: int) -> Figures:
    """Wait for the controller's first stats pass, then scrape it 1 + `runs` times."""
    deadline = time.monotonic() + 900
    rec = None
    while rec is None:
        if controller.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("controller did not come up: " + (
                controller.stderr.read().decode()[-2000:] if controller.stderr else ""))
        time.sleep(1)
        with Store(f"sqlite:///{db}") as store:
            rec = store.controller()
    sock_path, token = rec.url.removeprefix("unix:"), rec.token
    # These only wait for the pass to end; the first scrape proper is timed below. The view
    # and the pass are rendered by then, so "first" is the first after a pass, as Prometheus's
    # next scrape would be.
    while parse(scrape(sock_path, token)[1]).pass_s is None:
        if controller.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("no stats pass ended in time")
        time.sleep(2)
    rss_before = proc_peak_mib(controller.pid)
    first_s, body = scrape(sock_path, token)
    timed = [scrape(sock_path, token)[0] for _ in range(runs)]
    return Figures(parse(body), first_s, timed, rss_before, proc_peak_mib(controller.pid))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true",
                    help="150 hypervisors instead of 1,500 (a smoke run; not recorded)")
    ap.add_argument("--runs", type=int, default=10, help="scrapes after the first")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/metrics needs root: the lab daemons run in namespaces")

    work = Path(tempfile.mkdtemp(prefix="vf-bench-metrics-"))
    db = work / "bench.db"
    env = {"VIRTFLEET_DB": str(db)}
    fleet_file = simulate(LAB, work, args.quick)
    controller: subprocess.Popen[bytes] | None = None
    try:
        timed([VF, "apply", "-f", str(fleet_file)], env)
        fleet = yaml.safe_load(fleet_file.read_text())
        uris = hypervisor_uris(fleet)
        hv_txt = work / "hv.txt"
        hv_txt.write_text("\n".join(uris) + "\n")
        expected_vms = simulated_vms(uris)

        loop = 'while read -r uri; do virsh -c "$uri" domstats; done < "$1"'
        print(f"baseline: bash + virsh domstats over {len(uris)} hypervisors ...", flush=True)
        base_s, base_out = timed(["bash", "-c", loop, "bash", str(hv_txt)])
        base_vms = len(re.findall(r"^Domain: ", base_out, re.M))

        figures: dict[str, Figures] = {}
        for label, argv in (
                ("state only (the test driver's answer)", [VF, "serve"]),
                ("QEMU figures, 2 disks + 2 NICs per running VM",
                 [str(ROOT / ".venv" / "bin" / "python"),
                  str(ROOT / "bench" / "qemu_figures_serve.py")])):
            print(f"controller, {label}: waiting for its first stats pass ...", flush=True)
            # A stats pass every 10 minutes: the scrapes below read the first one, and no
            # second pass competes with them for the machine's two cores.
            controller = subprocess.Popen([*argv, "--stats-interval", "600"],
                                          env={**os.environ, **env},
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            figures[label] = measure(controller, db, args.runs)
            controller.send_signal(signal.SIGTERM)
            controller.wait(timeout=120)
    finally:
        stop_controller(controller)
        lab_down(LAB)

    table = [
        "| run | seconds | range s | x faster than loop | samples | MiB | VMs with CPU "
        "figures | controller peak RSS MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| chapter loop (bash + virsh domstats), one pass | {base_s:.2f} | one run | 1.0 "
        f"| - | - | {base_vms} | - |",
    ]
    verdict = []
    for label, f in figures.items():
        sc = f.scrape
        pass_s = sc.pass_s or float("nan")
        warm = statistics.median(f.runs)
        slowest = max(f.first_s, *f.runs)
        cells = f"{sc.samples} | {sc.size / 2**20:.1f} | {sc.cpu_vms} | {f.rss:.0f}"
        table += [
            f"| {label}: stats pass (bulk stats, held connections) | {pass_s:.2f} | one pass "
            f"| {base_s / pass_s:.1f} | | | | |",
            f"| {label}: first scrape | {f.first_s:.3f} | one run | {base_s / f.first_s:.0f} "
            f"| {cells} |",
            f"| {label}: scrape, median of {len(f.runs)} | {warm:.3f} | "
            f"{min(f.runs):.3f}-{max(f.runs):.3f} | {base_s / warm:.0f} | {cells} |",
        ]
        wanted = sc.active if "QEMU" in label else 0  # the test driver gives no CPU time
        verdict += [
            f"- {label}: scrape under {TARGET_S:g} s: "
            f"{'yes' if slowest < TARGET_S else 'NO'} (slowest {slowest:.3f} s); "
            f"controller under 1 GiB: {'yes' if f.rss < TARGET_MIB else 'NO'} "
            f"({f.rss:.0f} MiB peak, {f.rss_before:.0f} MiB before the scrapes); "
            f"every VM in the scrape: "
            f"{'yes' if sc.vms == expected_vms and sc.cpu_vms == wanted else 'NO'} "
            f"({sc.vms} VMs of {expected_vms}, {sc.cpu_vms} with CPU figures of {wanted} "
            f"expected; hypervisors read {sc.hosts_read}/{len(uris)}, "
            f"{sc.host_errors:.0f} host errors)",
        ]
    verdict.append(f"- the baseline saw {base_vms} VMs of {expected_vms}")
    text = "\n".join(table + [""] + verdict)
    load = Path("/proc/loadavg").read_text().split()[:3]
    report("metrics",
           f"`bench/metrics.py`, {stamp()}, {os.cpu_count()} cores shared with other work "
           f"(load average {' '.join(load)} at the end), Python {platform.python_version()}; "
           f"{len(uris)} simulated hypervisors (test driver over test+tcp through lab "
           f"daemons), baseline once; per controller one stats pass, then "
           f"{args.runs + 1} scrapes.", text, quick=args.quick)


if __name__ == "__main__":
    main()
