"""bench/cli_startup: what a `virtfleet` command costs before and around its work.

Beside `python -c pass` (the same interpreter, in the same run), each a fresh process:

- `virtfleet --help`;
- `virtfleet boot status --json` on a store with 1,500 planned installs;
- `virtfleet list --json` of 15,000 VMs served by a running controller (`virtfleet serve` on a
  simulated reference fleet of 1,500 test-driver hypervisors in process): the warm path;
- the same `list --json` made to go through typer (`quick.run` switched off), which is what
  every command paid before the quick paths and the lazy root.

Prints median and range of N runs and records them in docs/benchmarks.md with the machine's
load. Usage: .venv/bin/python bench/cli_startup.py [--runs N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import yaml

# bench/common.py and bench/record.py: the script's own directory is on sys.path
from common import VF, timed, wait_for_controller
from record import report, stamp

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")
THROUGH_TYPER = ("import sys\nsys.argv[0] = 'virtfleet'\nfrom virtfleet.cli import quick\n"
                 "from virtfleet.cli.main import main\nquick.run = lambda argv: None\nmain()\n")
TARGETS = {"help": 0.2, "boot": 0.2, "list": 0.15}


def plan_installs(db: Path, fleet_file: Path) -> int:
    """One planned network install per hypervisor of the fleet file, written to the store."""
    from virtfleet.inventory.records import InstallPlan
    from virtfleet.inventory.store import Store

    fleet = yaml.safe_load(fleet_file.read_text())
    plans = [InstallPlan(hv["name"], f"52:54:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:"
                         f"{i & 255:02x}", s["name"], p["name"], "el9")
             for i, (s, p, hv) in enumerate((s, p, hv) for s in fleet["sites"]
                                            for p in s["pods"] for hv in p["hypervisors"])]
    with Store(f"sqlite:///{db}") as store:
        store.plan_installs(plans, datetime.now(UTC))
    return len(plans)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--quick", action="store_true",
                    help="150 hypervisors instead of 1,500 (a smoke run; not recorded)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vf-bench-cli-"))
    db = work / "bench.db"
    env = {"VIRTFLEET_DB": str(db)}
    sizes = ["--hypervisors", "150"] if args.quick else []
    print(f"simulating the fleet in {work} ...", flush=True)
    _s, out = timed([VF, "lab", "simulate", "--local", "--out", str(work / "sim"), *sizes],
                       env)
    fleet_file = Path(out.strip().splitlines()[-1])
    timed([VF, "apply", "-f", str(fleet_file)], env)
    installs = plan_installs(db, fleet_file)
    fleet = yaml.safe_load(fleet_file.read_text())
    first = fleet["sites"][0]["pods"][0]["hypervisors"][0]["name"]
    hosts = sum(len(p["hypervisors"]) for s in fleet["sites"] for p in s["pods"])

    load_before = os.getloadavg()[0]
    ctl = subprocess.Popen([VF, "serve"], env={**os.environ, **env},
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cases: dict[str, list[float]] = {}
    vms = 0
    try:
        print("waiting for the controller's first reading ...", flush=True)
        wait_for_controller(env, first, ctl, timeout=600)
        forms = {
            "pass": [PY, "-c", "pass"],
            "help": [VF, "--help"],
            "boot": [VF, "boot", "status", "--json"],
            "list": [VF, "list", "--json"],
            "list_typer": [PY, "-c", THROUGH_TYPER, "list", "--json"],
        }
        for _ in range(args.runs):  # interleaved, so load drifts hit every case alike
            for key, argv in forms.items():
                secs, text = timed(argv, env)
                cases.setdefault(key, []).append(secs)
                if key == "list":
                    vms = len(json.loads(text))
                elif key == "boot" and len(json.loads(text)) != installs:
                    raise SystemExit(f"boot status listed {len(json.loads(text))} installs")
    finally:
        if ctl.poll() is None:
            ctl.send_signal(signal.SIGTERM)
            ctl.wait(timeout=120)
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()[0]

    def med(key: str) -> float:
        return statistics.median(cases[key])

    base = med("pass")
    labels = {
        "pass": "`python -c pass` (baseline)",
        "help": "`virtfleet --help`",
        "boot": f"`virtfleet boot status --json`, {installs:,} installs",
        "list": f"`virtfleet list --json`, warm, {vms:,} VMs",
        "list_typer": "the same `list --json` through typer (quick path off)",
    }
    table = ["| command | median s | range s | over `python -c pass` s | target s |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for key, label in labels.items():
        runs = cases[key]
        target = TARGETS.get(key)
        table.append(f"| {label} | {med(key):.3f} | {min(runs):.3f}-{max(runs):.3f} | "
                     f"{med(key) - base:.3f} | {f'< {target}' if target else '-'} |")
    verdict = [f"- {labels[k]} under {t} s: {'yes' if med(k) < t else 'NO'} ({med(k):.3f} s)"
               for k, t in TARGETS.items()]
    text = "\n".join(table + [""] + verdict)
    report("cli_startup",
           f"`bench/cli_startup.py`, {stamp()}, on {platform.node()} ({os.cpu_count()} CPUs, "
           f"load average {load_before:.1f} before and {load_after:.1f} after, shared with "
           f"other work), Python {platform.python_version()}; median and range of "
           f"{args.runs} runs of each, interleaved, each a fresh process; the controller "
           f"serves {hosts:,} simulated hypervisors (test driver, in process).", text,
           quick=args.quick)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
