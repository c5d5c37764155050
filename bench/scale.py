"""bench/scale: the reference estate over 1, 2 and 3 controllers on one PostgreSQL store, and
how long a site takes to move after kill -9 of its controller.

On a simulated reference fleet (1,500 hypervisors x 10 VMs, libvirt's test driver served over
real RPC by lab daemons through test+tcp://), in one run:

- full sync: N = 1, 2, 3 `virtfleet serve` started at once, pinned so the three sites split
  over them (1: all; 2: oregon+texas | virginia; 3: one each); per controller, the seconds from
  its start to "serving" (process start-up, its leases, and the first full sync of its
  sites' hypervisors) and its RSS then. The baseline is N = 1, today's single controller.
- event lag: with each N, one probe hypervisor per site has its VM stopped and started 10
  times; per controller, the seconds from the `virsh destroy|start` call to the controller's
  `vm.state` event on its events stream (`/api/v1/events`), beside libvirt's own delivery of
  the same change to `virsh event` (the baseline, same run, same change). The probe is
  `test+tcp://DAEMON/default`: a node file's hypervisor is private to each connection, but
  the test driver's default one is shared by every client of its daemon, so a change made by
  virsh is an event for the controller too.
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
import queue
import re
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from record import record  # bench/record.py: the script's own directory is on sys.path
from virtfleet.controller.eventstream import read_events
from virtfleet.errors import VirtfleetError
from virtfleet.inventory.store import Store

ROOT = Path(__file__).resolve().parent.parent
VF = str(ROOT / ".venv" / "bin" / "virtfleet")
LAB = "scale-bench"
SITES = ("oregon", "texas", "virginia")
SPLITS: dict[int, list[tuple[str, ...]]] = {1: [()], 2: [("oregon", "texas"), ("virginia",)],
          3: [("oregon",), ("texas",), ("virginia",)]}
SERVING = re.compile(r"serving \S+: (\d+) hosts")
PROBE_VM = "test"  # the one domain of the test driver's default hypervisor
TOGGLES = 10  # state changes per probe, per N
STATES = {"destroy": "shutoff", "start": "running"}


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


def add_probes(fleet_file: Path) -> dict[str, str]:
    """One probe hypervisor per site, each on a daemon its site's hosts use and no other
    probe does: {site: its URI}. Added to the fleet file before `apply`."""
    data = yaml.safe_load(fleet_file.read_text())
    probes: dict[str, str] = {}
    for site in data["sites"]:
        netlocs = sorted({urlsplit(hv["uri"]).netloc for p in site["pods"]
                          for hv in p["hypervisors"]})
        free = [n for n in netlocs if f"test+tcp://{n}/default" not in probes.values()]
        uri = f"test+tcp://{(free or netlocs)[0]}/default"
        site["pods"][0]["hypervisors"].append({"name": f"{site['name']}-probe", "uri": uri})
        probes[site["name"]] = uri
    fleet_file.write_text(yaml.safe_dump(data))
    return probes


Arrival = tuple[float, str, str]  # (perf_counter, host or "", state)


def watch_controller(store: Store, pid: int, out: queue.Queue[Arrival]) -> None:
    """Every vm.state event of controller `pid`'s stream, timed as it arrives, until the
    controller stops (a daemon thread)."""
    rec = next(m.record for m in store.members() if m.record.pid == pid)

    def follow() -> None:
        try:
            for msg in read_events(rec, wait=30.0, kinds=("vm.state",)):
                data = msg.body.get("data") or {}
                out.put((time.perf_counter(), str(msg.body.get("host", "")),
                         str(data.get("state", "")).replace(" ", "")))  # "shut off"
        except VirtfleetError as exc:  # the controller stopped: the stream ends with it
            out.put((time.perf_counter(), "", f"stream ended: {exc}"))

    threading.Thread(target=follow, daemon=True).start()


def watch_virsh(uri: str, out: queue.Queue[Arrival]) -> subprocess.Popen[str]:
    """The baseline: `virsh event` on the probe, each lifecycle line timed as it arrives
    (stdbuf: virsh's stdout is a pipe here, and would be block-buffered)."""
    proc = subprocess.Popen(["stdbuf", "-oL", "virsh", "-c", uri, "event", "--loop",
                             "--event", "lifecycle"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)

    def follow() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "lifecycle" in line:
                state = "shutoff" if "Stopped" in line else "running" if "Started" in line \
                    else ""
                out.put((time.perf_counter(), "", state))

    threading.Thread(target=follow, daemon=True).start()
    return proc


def arrival(q: queue.Queue[Arrival], host: str, state: str, timeout: float = 60) -> float:
    deadline = time.monotonic() + timeout
    seen: list[tuple[str, str]] = []
    while True:
        try:
            at, h, st = q.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise SystemExit(f"no {state} event for {host or 'virsh event'} within "
                             f"{timeout:g}s (saw {seen[-5:]})") from None
        seen.append((h, st))
        if h == host and st == state:
            return at


def event_lags(store: Store, started: list[Started],
               probes: dict[str, str]) -> list[tuple[tuple[str, ...], list[float], list[float]]]:
    """Per controller: (its sites, lags through it, libvirt's own lags for the same changes),
    seconds from asking for each change."""
    out = []
    for s in started:
        mine: queue.Queue[Arrival] = queue.Queue()
        watch_controller(store, s.proc.pid, mine)
        time.sleep(0.5)  # the stream is open before the first change
        via, own = [], []
        for site in s.sites or SITES:
            base: queue.Queue[Arrival] = queue.Queue()
            watcher = watch_virsh(probes[site], base)
            time.sleep(0.5)
            try:
                state_now = run(["virsh", "-c", probes[site], "domstate", PROBE_VM]).strip()
                verbs = ["destroy", "start"] if state_now == "running" else ["start", "destroy"]
                for i in range(TOGGLES):
                    verb = verbs[i % 2]
                    for q in (base, mine):  # nothing from before this change counts
                        while not q.empty():
                            q.get_nowait()
                    asked = time.perf_counter()
                    run(["virsh", "-c", probes[site], verb, PROBE_VM])
                    own.append(arrival(base, "", STATES[verb]) - asked)
                    via.append(arrival(mine, f"{site}-probe", STATES[verb]) - asked)
                    time.sleep(0.2)
            finally:
                watcher.terminate()
                watcher.wait()
        out.append((s.sites, via, own))
    return out


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} / {max(values) * 1000:.0f}"


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
    sim_args = ["--hypervisors", "150", "--daemons", "3"] if args.quick else []
    procs: list[subprocess.Popen[str]] = []
    syncs: dict[int, list[tuple[tuple[str, ...], float, int, float]]] = {}
    lags: dict[int, list[tuple[tuple[str, ...], list[float], list[float]]]] = {}
    takeovers: list[float] = []
    try:
        print(f"simulating the fleet in {work} ...", flush=True)
        out = run([VF, "lab", "simulate", "--name", LAB, "--out", str(work / "sim"),
                   *sim_args])
        fleet_file = Path(out.strip().splitlines()[-1])
        if args.quick:
            three_sites(fleet_file)
        probes = add_probes(fleet_file)
        run([VF, "apply", "-f", str(fleet_file)], env)
        with Store(url) as store:
            for n, split in SPLITS.items():
                print(f"{n} controller(s): first full sync ...", flush=True)
                started = [start(env, work, i, sites) for i, sites in enumerate(split)]
                procs = [s.proc for s in started]
                syncs[n] = [(s.sites, *serving(s)) for s in started]
                print(f"{n} controller(s): event lag ...", flush=True)
                lags[n] = event_lags(store, started, probes)
                stop(procs)
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
    table += ["", "| controllers | sites | event lag through the controller, median / worst ms "
              "| `virsh event` on the same changes (baseline), median / worst ms | "
              "added by the controller, median ms |",
              "| ---: | --- | ---: | ---: | ---: |"]
    for n, per in lags.items():
        for sites, via, own in per:
            added = statistics.median(v - o for v, o in zip(via, own, strict=True)) * 1000
            table.append(f"| {n} | {','.join(sites) or 'all'} | {ms(via)} | {ms(own)} | "
                         f"{added:.0f} |")
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
        f"daemons, plus one probe hypervisor per site for the event lag) on one PostgreSQL store. "
        f"Load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after: other people's work ran on the same two cores, so the "
        "seconds are noisy. Controllers started at the same time share those two cores, so "
        "their syncs are not truly parallel here; on separate machines each would take about "
        "its share of one controller's time. Event lag: a probe VM per site stopped and started "
        f"{TOGGLES} times per controller set, timed from the `virsh` call to the event's "
        "arrival.")
    record("scale", preamble, text_out)


if __name__ == "__main__":
    main()
