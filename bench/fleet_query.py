"""bench/fleet_query: the whole fleet's VM list, virtfleet against the chapter's hv.sh loop.

On a simulated reference fleet (1,500 hypervisors x 10 VMs, libvirt test driver served over
real RPC by lab daemons through test+tcp://), in one run:

- baseline: bash looping over the hypervisor URIs running `virsh -c URI list --all` one host
  after another (the chapter's hv.sh, with --all so it reports the same 15,000 VMs);
- cold: `virtfleet list --json` with no controller running (opens every connection itself);
- warm: `virtfleet list --json` with `virtfleet serve` running on the same store.

Prints each figure beside the baseline and records them in docs/benchmarks.md. Needs root (the
lab daemons live in network namespaces). Usage: .venv/bin/python bench/fleet_query.py [--quick]

`--transport ssh` asks real hypervisors over qemu+ssh instead (a lab of 100 by default, each
with its own sshd): that is bench/transport.py, run with the remaining options.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

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
    wait_for_controller,
)
from record import report, stamp

ROOT = Path(__file__).resolve().parent.parent
LAB = "vfbench"


def timed_rss(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run argv, returning (seconds, peak RSS MiB, stdout) using wait4 for this child's rusage."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE,
                                env={**os.environ, **env})
        _pid, status, usage = os.wait4(proc.pid, 0)
        secs = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode() if proc.stderr else ""
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {err[-2000:]}")
        out.seek(0)
        return secs, usage.ru_maxrss / 1024, out.read()


def count_vms(json_text: str) -> int:
    import json

    return len(json.loads(json_text))


def _ssh_args(args: argparse.Namespace, rest: list[str]) -> list[str]:
    """This bench's options as bench/transport.py takes them."""
    runs = ["--runs", str(args.runs)] if args.runs is not None else []
    return [*(["--quick"] if args.quick else []), *runs, *rest]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true",
                    help="150 hypervisors instead of 1,500 (a smoke run; not recorded)")
    ap.add_argument("--runs", type=int, help="cold runs (default 5; 3 for ssh)")
    ap.add_argument("--transport", choices=("test+tcp", "ssh"), default="test+tcp",
                    help="ssh: list over qemu+ssh on lab hypervisors (bench/transport.py)")
    ap.add_argument("--cold-only", action="store_true",
                    help="the loop and the cold runs only (not recorded)")
    ap.add_argument("--profile", type=Path,
                    help="cProfile one more cold run into FILE (not counted)")
    args, rest = ap.parse_known_args()
    if args.transport == "ssh":
        # A simulated fleet cannot speak ssh: real lab hypervisors can, so that bench is its own.
        script = Path(__file__).resolve().parent / "transport.py"
        os.execv(sys.executable, [sys.executable, str(script), *_ssh_args(args, rest)])
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    args.runs = 5 if args.runs is None else args.runs
    if os.geteuid() != 0:
        raise SystemExit("bench/fleet_query needs root: the lab daemons run in namespaces")

    work = Path(tempfile.mkdtemp(prefix="vf-bench-"))
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

        # Baseline: the chapter's loop, one virsh per hypervisor, one after another.
        loop = ('while read -r uri; do echo "$uri"; virsh -c "$uri" list --all; '
                'done < "$1"')
        print(f"baseline: bash + virsh over {len(uris)} hypervisors ...", flush=True)
        base_s, base_out = timed(["bash", "-c", loop, "bash", str(hv_txt)])
        base_vms = len(re.findall(r"^\s*(\d+|-)\s+\S+\s+(running|shut off|paused)", base_out,
                                  re.M))

        print("cold: virtfleet list --json, no controller ...", flush=True)
        if args.profile:
            timed([sys.executable, "-m", "cProfile", "-o", str(args.profile), "-m",
                   "virtfleet.cli.main", "list", "--json"], env)
        load_before = os.getloadavg()[0]
        cold = [timed_rss([VF, "list", "--json"], env) for _ in range(args.runs)]
        if args.cold_only:
            secs = sorted(c[0] for c in cold)
            print(f"loop {base_s:.2f} s; cold {statistics.median(secs):.2f} s "
                  f"({secs[0]:.2f}-{secs[-1]:.2f}), {base_s / statistics.median(secs):.1f}x; "
                  f"{count_vms(cold[-1][2])} VMs; load {load_before:.1f}")
            return
        cold_s = statistics.median(c[0] for c in cold)
        cold_rss = max(c[1] for c in cold)
        cold_vms = count_vms(cold[-1][2])

        print("warm: virtfleet serve + virtfleet list --json ...", flush=True)
        controller = subprocess.Popen([VF, "serve"], env={**os.environ, **env},
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        first = fleet["sites"][0]["pods"][0]["hypervisors"][0]["name"]
        wait_for_controller(env, first, controller, timeout=300)
        warm = [timed_rss([VF, "list", "--json"], env) for _ in range(max(args.runs, 5))]
        warm_s = statistics.median(w[0] for w in warm)
        warm_rss = max(w[1] for w in warm)
        warm_vms = count_vms(warm[-1][2])
        ctl_rss = proc_peak_mib(controller.pid)
    finally:
        stop_controller(controller)
        lab_down(LAB)

    def spread(runs: list[tuple[float, float, str]]) -> str:
        secs = [r[0] for r in runs]
        return f"{min(secs):.2f}-{max(secs):.2f}"

    rows = [
        ("chapter loop (bash + virsh list --all)", base_s, "one run", 1.0, "-", base_vms),
        ("virtfleet list --json, cold", cold_s, spread(cold), base_s / cold_s,
         f"{cold_rss:.0f}", cold_vms),
        ("virtfleet list --json, warm", warm_s, spread(warm), base_s / warm_s,
         f"{warm_rss:.0f}", warm_vms),
    ]
    table = ["| run | median s | range s | x faster than loop | peak RSS MiB | VMs seen |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    table += [f"| {r[0]} | {r[1]:.2f} | {r[2]} | {r[3]:.1f} | {r[4]} | {r[5]} |" for r in rows]
    table.append(f"| controller (`virtfleet serve`), peak RSS | | | | {ctl_rss:.0f} | |")
    verdict = [
        f"- warm under 1 s: {'yes' if warm_s < 1 else 'NO'} ({warm_s:.2f} s); "
        f"at least 30x the loop: {'yes' if base_s / warm_s >= 30 else 'NO'} "
        f"({base_s / warm_s:.0f}x)",
        f"- cold at least 7x the loop: {'yes' if base_s / cold_s >= 7 else 'NO'} "
        f"({base_s / cold_s:.1f}x; {min(c[0] for c in cold):.2f}-{max(c[0] for c in cold):.2f} s "
        f"over {len(cold)} runs, {base_s / max(c[0] for c in cold):.1f}-"
        f"{base_s / min(c[0] for c in cold):.1f}x)",
        f"- CLI under 500 MiB: {'yes' if max(cold_rss, warm_rss) < 500 else 'NO'}; "
        f"controller under 1 GiB: {'yes' if ctl_rss < 1024 else 'NO'}",
        f"- every run saw all VMs: "
        f"{'yes' if base_vms == cold_vms == warm_vms == expected_vms else 'NO'} "
        f"(expected {expected_vms})",
    ]
    text = "\n".join(table + [""] + verdict)
    report("fleet_query",
           f"`bench/fleet_query.py`, {stamp()}, {os.cpu_count()} cores (load average "
           f"{load_before:.1f} before the cold runs, {os.getloadavg()[0]:.1f} at the end, "
           "shared with other work), "
           f"Python {platform.python_version()}; {len(uris)} simulated hypervisors "
           f"(test driver over test+tcp through lab daemons), median of {args.runs} cold "
           f"and {max(args.runs, 5)} warm runs, baseline once.", text, quick=args.quick)


if __name__ == "__main__":
    main()
