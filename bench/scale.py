"""bench/scale: the reference estate over 1, 2 and 3 controllers on one PostgreSQL store, and
how long a site takes to move after kill -9 of its controller.

On a simulated reference fleet (1,500 hypervisors x 10 VMs, libvirt's test driver served over
real RPC by lab daemons through test+tcp://), in one run:

- full sync: N = 1, 2, 3 `virtfleet serve` started at once, pinned so the three sites split
  over them (1: all; 2: oregon+texas | virginia; 3: one each); per controller, the seconds from
  its start to "serving" (process start-up, its leases, and the first full sync of its
  sites' hypervisors) and its RSS then. The baseline is N = 1, today's single controller.
- takeover: three unpinned controllers (the default 6 s lease), one site's controller killed
  with SIGKILL, the time until another live controller holds that site's lease (polled every
  50 ms); a new controller is started and the three rebalanced before the next round.

Prints the figures and records them in docs/benchmarks.md with the machine's load. Needs root
(the lab daemons live in namespaces) and $VIRTFLEET_TEST_PG_URL (`. ./.test-env`).
Usage: .venv/bin/python bench/scale.py [--quick] [--rounds 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from record import record  # bench/record.py: the script's own directory is on sys.path
from virtfleet.inventory.store import Store

ROOT = Path(__file__).resolve().parent.parent
VF = str(ROOT / ".venv" / "bin" / "virtfleet")
LAB = "scale-bench"
SITES = ("oregon", "texas", "virginia")
SPLITS: dict[int, list[tuple[str, ...]]] = {1: [()], 2: [("oregon", "texas"), ("virginia",)],
          3: [("oregon",), ("texas",), ("virginia",)]}
SERVING = re.compile(r"serving \S+: (\d+) hosts")


@dataclass
class Started:
    proc: subprocess.Popen[str]
    log: Path
    began: float
    sites: tuple[str, ...]


def run(argv: list[str], env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... failed ({proc.returncode}): "
                         f"{proc.stderr[-2000:]}")
    return proc.stdout


def start(env: dict[str, str], work: Path, i: int, sites: tuple[str, ...]) -> Started:
    log = work / f"serve-{i}-{time.monotonic_ns()}.log"
    pins = [a for s in sites for a in ("--site", s)]
    with log.open("w") as out:
        proc = subprocess.Popen([VF, "serve", "--stats-interval", "600", *pins],
                                env={**os.environ, **env,
                                     "VIRTFLEET_RUN_DIR": str(work / f"run-{i}")},
                                stdout=out, stderr=subprocess.STDOUT, text=True)
    return Started(proc, log, time.perf_counter(), sites)


def serving(s: Started, timeout: float = 900) -> tuple[float, int, float]:
    """(seconds to "serving", hosts it serves, RSS MiB then)."""
    deadline = time.monotonic() + timeout
    while (m := SERVING.search(s.log.read_text())) is None:
        if s.proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"controller did not start:\n{s.log.read_text()[-2000:]}")
        time.sleep(0.05)
    took = time.perf_counter() - s.began
    return took, int(m.group(1)), rss_mib(s.proc.pid)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def holders(store: Store) -> dict[str, int]:
    return {s: m.record.pid for s, m in store.holders(alive_within=6.0).items()}


def balanced(store: Store, live: list[int]) -> bool:
    held = holders(store)
    return set(held) == set(SITES) and set(held.values()) == set(live)


def wait(what: str, check: object, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    assert callable(check)
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def database(base: str) -> tuple[str, str]:
    url = make_url(base)
    name = f"vf_bench_scale_{os.getpid()}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False), name


def drop(base: str, name: str) -> None:
    admin = create_engine(make_url(base), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def three_sites(fleet_file: Path) -> None:
    """A smaller simulated fleet is one site: split its hypervisors over the three."""
    data = yaml.safe_load(fleet_file.read_text())
    hvs = [hv for s in data["sites"] for p in s["pods"] for hv in p["hypervisors"]]
    data["sites"] = [{"name": site, "pods": [{"name": f"{site}-pod1", "insecure_transport": True,
                                              "hypervisors": hvs[i::3]}]}
                     for i, site in enumerate(SITES)]
    fleet_file.write_text(yaml.safe_dump(data))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true",
                    help="150 hypervisors instead of 1,500 (a smoke run; not recorded)")
    ap.add_argument("--rounds", type=int, default=10, help="kill -9 takeovers")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/scale needs root: the lab daemons run in namespaces")
    base = os.environ.get("VIRTFLEET_TEST_PG_URL")
    if not base:
        raise SystemExit("bench/scale needs $VIRTFLEET_TEST_PG_URL (. ./.test-env)")
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="vf-bench-scale-"))
    url, dbname = database(base)
    env = {"VIRTFLEET_DB": url}
    sim_args = ["--hypervisors", "150"] if args.quick else []
    procs: list[subprocess.Popen[str]] = []
    syncs: dict[int, list[tuple[tuple[str, ...], float, int, float]]] = {}
    takeovers: list[float] = []
    try:
        print(f"simulating the fleet in {work} ...", flush=True)
        out = run([VF, "lab", "simulate", "--name", LAB, "--out", str(work / "sim"),
                   *sim_args])
        fleet_file = Path(out.strip().splitlines()[-1])
        if args.quick:
            three_sites(fleet_file)
        run([VF, "apply", "-f", str(fleet_file)], env)
        for n, split in SPLITS.items():
            print(f"{n} controller(s): first full sync ...", flush=True)
            started = [start(env, work, i, sites) for i, sites in enumerate(split)]
            procs = [s.proc for s in started]
            syncs[n] = [(s.sites, *serving(s)) for s in started]
            stop(procs)
        with Store(url) as store:
            print(f"takeover after kill -9, {args.rounds} rounds ...", flush=True)
            started = [start(env, work, i, ()) for i in range(3)]
            procs = [s.proc for s in started]
            for s in started:
                serving(s)
            wait("three balanced controllers", lambda: balanced(
                store, [p.pid for p in procs if p.poll() is None]))
            for r in range(args.rounds):
                site = SITES[r % 3]
                victim = next(p for p in procs if p.pid == holders(store)[site])
                victim.kill()
                killed = time.perf_counter()
                victim.wait()
                wait(f"{site} to move", lambda site=site, pid=victim.pid:
                     holders(store).get(site) not in (None, pid))
                takeovers.append(time.perf_counter() - killed)
                print(f"  round {r + 1}: {site} moved in {takeovers[-1]:.2f}s", flush=True)
                fresh = start(env, work, 10 + r, ())
                procs.append(fresh.proc)
                serving(fresh)
                wait("three balanced controllers again", lambda: balanced(
                    store, [p.pid for p in procs if p.poll() is None]))
    finally:
        stop(procs)
        subprocess.run([VF, "lab", "down", "--name", LAB], check=False,
                       stdout=subprocess.DEVNULL)
        drop(base, dbname)
    load_after = os.getloadavg()

    one = syncs[1][0]
    table = ["| controllers | sites (pinned) | hosts each | seconds to serving, each | "
             "slowest | x vs one controller | RSS MiB each |",
             "| ---: | --- | --- | --- | ---: | ---: | --- |"]
    for n, rows in syncs.items():
        slowest = max(r[1] for r in rows)
        table.append(
            f"| {n} | {' / '.join(','.join(r[0]) or 'all' for r in rows)} | "
            f"{' / '.join(str(r[2]) for r in rows)} | "
            f"{' / '.join(f'{r[1]:.1f}' for r in rows)} | {slowest:.1f} | "
            f"{one[1] / slowest:.2f} | {' / '.join(f'{r[3]:.0f}' for r in rows)} |")
    table += ["", "| takeover after kill -9 (6 s lease) | median s | worst s | rounds |",
              "| --- | ---: | ---: | ---: |",
              f"| a site to a live controller | {statistics.median(takeovers):.2f} | "
              f"{max(takeovers):.2f} | {len(takeovers)} |"]
    text_out = "\n".join(table)
    print("\n" + text_out)
    if args.quick:
        print("\n(--quick: not recorded)")
        return
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    preamble = (
        f"`bench/scale.py`, {when}, {platform.node()} ({os.cpu_count()} cores, shared): "
        f"the simulated reference estate (1,500 hypervisors x 10 VMs, test+tcp through lab "
        f"daemons) on one PostgreSQL store. Load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after: other people's work ran on the same two cores, so the "
        "seconds are noisy. Controllers started at the same time share those two cores, so "
        "their syncs are not truly parallel here; on separate machines each would take about "
        "its share of one controller's time. Event lag per controller is not measured yet.")
    record("scale", preamble, text_out)


if __name__ == "__main__":
    main()
