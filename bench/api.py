"""bench/api: `GET /api/v1/vms` from the controller's view, 20 clients at once, against the cold
CLI (`virtfleet list --json` with no controller: every hypervisor asked) in the same run.

On the simulated reference fleet (1,500 hypervisors x 10 VMs, libvirt's test driver served over
real RPC by lab daemons through test+tcp://). The API is asked over `serve --listen` on
loopback with a viewer's token (the grant check and the token lookup in the store are paid on
every request, as for any caller). Two reads are timed:

- a page: `GET /api/v1/vms` (the default page, 500 VMs, and the total);
- everything: the 15,000 VMs, page after page of 5,000 (what the cold CLI returns).

Each of the 20 clients is a thread with its own connection per request, on the same 2-core
machine as the controller. Prints the figures and records them in docs/benchmarks.md. Needs root
(the lab daemons live in network namespaces). Usage: .venv/bin/python bench/api.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

# bench/common.py and bench/record.py: the script's own directory is on sys.path
from common import VF, bench_token, free_port, lab_down, simulate, stop_controller, timed
from record import report, stamp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.unit.apiclient import Api  # noqa: E402 - after the repository is on the path

LAB = "api-bench"
CLIENTS = 20


def whole_list(api: Api) -> int:
    """Every VM, page after page; how many."""
    offset, seen = 0, 0
    while True:
        got = api.get(f"/api/v1/vms?limit=5000&offset={offset}")
        if got.status != 200:
            raise SystemExit(f"GET /api/v1/vms: {got.status} {got.body}")
        seen += len(got.body["items"])
        if got.body["next"] is None:
            return seen
        offset = got.body["next"]


def first_page(api: Api) -> int:
    got = api.get("/api/v1/vms")
    if got.status != 200:
        raise SystemExit(f"GET /api/v1/vms: {got.status} {got.body}")
    return int(got.body["total"])


def concurrent(api: Api, call: Callable[[Api], int], per_client: int) -> tuple[list[float], int]:
    """`call(api)` per_client times in each of CLIENTS threads at once: every latency, and
    what the last call answered."""
    latencies: list[float] = []
    answers: list[int] = []
    lock = threading.Lock()
    go = threading.Event()

    def client() -> None:
        go.wait()
        for _ in range(per_client):
            t0 = time.perf_counter()
            n = call(api)
            took = time.perf_counter() - t0
            with lock:
                latencies.append(took)
                answers.append(n)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join()
    return latencies, answers[-1]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true",
                    help="150 hypervisors instead of 1,500 (a smoke run; not recorded)")
    ap.add_argument("--cold-runs", type=int, default=3)
    ap.add_argument("--requests", type=int, default=10, help="per client, per read")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/api needs root: the lab daemons run in namespaces")

    work = Path(tempfile.mkdtemp(prefix="vf-bench-api-"))
    db = work / "bench.db"
    env = {"VIRTFLEET_DB": str(db), "VIRTFLEET_RUN_DIR": str(work / "run")}
    fleet_file = simulate(LAB, work, args.quick, env)
    controller: subprocess.Popen[bytes] | None = None
    try:
        timed([VF, "apply", "-f", str(fleet_file)], env)
        token = bench_token(env, "viewer")

        print("cold: virtfleet list --json, no controller ...", flush=True)
        cold = [timed([VF, "list", "--json"], env)[0] for _ in range(args.cold_runs)]

        port = free_port()
        controller = subprocess.Popen([VF, "serve", "--listen", f"127.0.0.1:{port}"],
                                      env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE)
        api = Api("127.0.0.1", port, token, timeout=300)
        deadline = time.monotonic() + 600
        while True:  # up once its view holds a full pass over the fleet
            try:
                if api.get("/api/v1/health").body.get("healthy") and first_page(api) > 0:
                    break
            except (OSError, AttributeError):
                pass
            if controller.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("controller did not come up: " + (
                    controller.stderr.read().decode()[-2000:] if controller.stderr else ""))
            time.sleep(1)
        whole_list(api)  # the view derived once, as any first caller would find it
        print(f"API: {CLIENTS} clients x {args.requests} requests, a page ...", flush=True)
        page_lat, total = concurrent(api, first_page, args.requests)
        print(f"API: {CLIENTS} clients x {args.requests} requests, everything ...", flush=True)
        all_lat, seen = concurrent(api, whole_list, args.requests)
        load = os.getloadavg()[0]
    finally:
        stop_controller(controller)
        lab_down(LAB)

    cold_s = statistics.median(cold)
    rows = [
        ("`virtfleet list --json`, cold (no controller), one at a time", cold_s, None,
         max(cold), "-"),
        (f"`GET /api/v1/vms` (first page of 500), {CLIENTS} clients at once",
         pct(page_lat, 0.5), pct(page_lat, 0.95), max(page_lat), total),
        (f"`GET /api/v1/vms`, all {seen} VMs in pages of 5,000, {CLIENTS} clients at once",
         pct(all_lat, 0.5), pct(all_lat, 0.95), max(all_lat), seen),
    ]
    table = ["| read | p50 s | p95 s | max s | VMs |", "| --- | ---: | ---: | ---: | ---: |"]
    table += [f"| {r[0]} | {r[1]:.3f} | {'-' if r[2] is None else f'{r[2]:.3f}'} | "
              f"{r[3]:.3f} | {r[4]} |" for r in rows]
    p50 = pct(page_lat, 0.5)
    verdict = [
        f"- a page under 200 ms at p50 with {CLIENTS} clients: "
        f"{'yes' if p50 < 0.2 else 'NO'} ({p50 * 1000:.0f} ms); "
        f"{cold_s / p50:.0f}x faster than the cold CLI",
        f"- the whole list at p50: {pct(all_lat, 0.5) * 1000:.0f} ms "
        f"({cold_s / pct(all_lat, 0.5):.0f}x faster than the cold CLI)",
        f"- load average (1 min) at the end: {load:.1f} on {os.cpu_count()} cores, shared "
        "with other work on this machine: figures are noisy",
    ]
    text = "\n".join(table + [""] + verdict)
    report("api", f"`bench/api.py`, {stamp()}, {os.cpu_count()} cores, Python "
           f"{platform.python_version()}; {total} VMs on the simulated hypervisors (test "
           f"driver over test+tcp through lab daemons); {CLIENTS} client threads x "
           f"{args.requests} requests per read, over loopback TCP with a viewer's token, on "
           f"the controller's machine; the cold CLI median of {args.cold_runs}.", text,
           quick=args.quick)


if __name__ == "__main__":
    main()
