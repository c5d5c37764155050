"""bench/controller_failover: what a dead or hung controller costs a CLI, and a quick restart.

On 20 test-driver hypervisors (tests/unit/fixtures/nodes/two-vms.xml, in process), in one run,
each figure the median of --rounds:

- baseline: `virtfleet list --json --live`, asking the hypervisors with no controller involved;
- warm: `list --json` through a healthy `virtfleet serve`;
- stopped: `list --json` while that controller is SIGSTOPped (the bounded wait, then live);
- killed: `list --json` right after `kill -9` of it (its pid is gone: not asked at all);
- restart: from `kill -9` of a controller to a new `serve` registered in its place (the new
  process's start-up and first sync included), beside a first start on an empty registration.

Before issue 12 the stopped case waited 30 s and the restart was refused for 10-15 s.
Prints the figures and records them in docs/benchmarks.md. Usage:
  .venv/bin/python bench/controller_failover.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from record import record, stamp  # bench/record.py: the script's own directory is on sys.path

ROOT = Path(__file__).resolve().parent.parent
VF = str(ROOT / ".venv" / "bin" / "virtfleet")
NODE = ROOT / "tests" / "unit" / "fixtures" / "nodes" / "two-vms.xml"
HOSTS = 20


def fleet(work: Path) -> Path:
    hvs = []
    for i in range(HOSTS):
        node = work / f"hv{i}.xml"
        shutil.copy(NODE, node)
        hvs.append({"name": f"hv{i}", "uri": f"test://{node}"})
    path = work / "fleet.yaml"
    path.write_text(yaml.safe_dump({"sites": [{"name": "oregon", "pods": [
        {"name": "or-pod1", "hypervisors": hvs}]}]}))
    return path


def registered_pid(db: Path) -> int | None:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT pid FROM controller WHERE id = 1").fetchone()
    return int(row[0]) if row else None


def start(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], float]:
    """A `serve`, and the seconds until it registered."""
    began = time.perf_counter()
    with log.open("ab") as out:
        proc = subprocess.Popen([VF, "serve", "--interval", "1"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    db = Path(env["VIRTFLEET_DB"])
    while registered_pid(db) != proc.pid:
        if proc.poll() is not None:
            raise SystemExit(f"serve exited {proc.returncode}: {log.read_text()[-2000:]}")
        time.sleep(0.02)
    return proc, time.perf_counter() - began


def list_seconds(env: dict[str, str], *extra: str, expect: str = "") -> float:
    began = time.perf_counter()
    p = subprocess.run([VF, "list", "--json", *extra], env=env, capture_output=True,
                       text=True, check=False)
    took = time.perf_counter() - began
    if p.returncode != 0 or expect not in p.stderr:
        raise SystemExit(f"list {extra} exited {p.returncode}, wanted {expect!r}: {p.stderr}")
    return took


def stop(proc: subprocess.Popen[bytes], sig: int) -> None:
    proc.send_signal(sig)
    if sig == signal.SIGKILL:
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vf-bench-ctl-"))
    db = work / "store.db"
    log = work / "serve.log"
    run_dir = work / "run"
    env = {**os.environ, "VIRTFLEET_DB": str(db), "VIRTFLEET_RUN_DIR": str(run_dir)}
    subprocess.run([VF, "apply", "-f", str(fleet(work))], env=env, check=True,
                   capture_output=True)
    figures: dict[str, list[float]] = {k: [] for k in (
        "baseline", "warm", "stopped", "killed", "first start", "restart")}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", flush=True)
            figures["baseline"].append(list_seconds(env, "--live"))
            proc, first = start(env, log)
            procs.append(proc)
            figures["first start"].append(first)
            figures["warm"].append(list_seconds(env))
            stop(proc, signal.SIGSTOP)
            figures["stopped"].append(list_seconds(env, expect="did not answer"))
            proc.send_signal(signal.SIGCONT)
            stop(proc, signal.SIGKILL)
            figures["killed"].append(list_seconds(env, expect="is gone"))
            proc, again = start(env, log)  # the registration is fresh, its process gone
            procs.append(proc)
            figures["restart"].append(again)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=60)
        shutil.rmtree(work)

    med = {k: statistics.median(v) for k, v in figures.items()}
    rows = [
        ("`list --live` (baseline: no controller)", med["baseline"], "-"),
        ("`list` through a healthy controller", med["warm"], "-"),
        ("`list` with the controller SIGSTOPped", med["stopped"], "30 s wait + live"),
        ("`list` right after `kill -9` of it", med["killed"], "connection refused + live"),
        ("`serve` first start to registered", med["first start"], "-"),
        ("`serve` right after `kill -9`, to registered", med["restart"],
         "refused for 10-15 s"),
    ]
    table = ["| case | seconds (median) | before issue 12 |", "| --- | --- | --- |"]
    table += [f"| {name} | {secs:.2f} | {before} |" for name, secs, before in rows]
    load = os.getloadavg()[0]
    preamble = (f"`bench/controller_failover.py`, {stamp()}, on "
                f"{platform.node()} ({os.cpu_count()} CPUs, load average {load:.1f} at the "
                f"end), {args.rounds} rounds; {HOSTS} test-driver hypervisors in process, a "
                "fresh SQLite store, each `list` a new CLI process (Python start-up included). "
                "The stopped case is the CLI's bounded wait (VIRTFLEET_CONTROLLER_TIMEOUT, "
                "2.5 s) plus the baseline.")
    text = "\n".join(table)
    print("\n" + text)
    record("controller_failover", preamble, text)


if __name__ == "__main__":
    main()
