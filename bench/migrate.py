"""bench/migrate: emptying a hypervisor of 10 tiny guests, virtfleet against a virsh loop.

A lab of two hypervisors in one pod; 10 tiny TCG guests (96 MiB, no disk) running on the
first. Each round, on the same guests:

1. `virtfleet host maintenance HV1` moves them all to HV2 (the CLI process timed whole: store,
   checks on every target, placement and claims, journal, 2 migrations at a time by default);
   `host activate HV1` follows, untimed;
2. the baseline moves them back: a bash loop of plain `virsh migrate --live --persistent
   --undefinesource VM qemu+tcp://HV1/system --migrateuri tcp://HV1_ADDRESS`, one VM after
   another (what an operator types; the same end state: persistent on the target, undefined
   on the source);
3. `virtfleet host maintenance HV1 --max-outgoing 1` (one at a time, as the loop does), then
   the loop again.

So "virtfleet, 1 at a time" against the loop is what virtfleet's checks and bookkeeping cost,
and "virtfleet, 2 at a time" is what bounded concurrency buys. Prints the figures and records
them in docs/benchmarks.md (not with --quick).
Usage: .venv/bin/python bench/migrate.py [--rounds N] [--guests N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import record, stamp  # bench/record.py: the script's own directory is on sys.path
from virtfleet.config import Timeouts
from virtfleet.lab import guest
from virtfleet.lab.guests import outer_log
from virtfleet.lab.lab import Lab
from virtfleet.lab.state import LabHost
from virtfleet.virt.host import Host

LAB = "vfbench-migrate"
VF = [sys.executable, "-m", "virtfleet.cli.main"]


def sh(argv: list[str], env: dict[str, str] | None = None) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if p.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv[:4])} exited {p.returncode}: "
                         f"{(p.stderr or p.stdout).strip()[-400:]}")
    return p.stdout


def boot(host: LabHost, names: list[str]) -> None:
    images = guest.ensure_images()
    with Host.open(host.uri, Timeouts(connect=10.0), label=host.name) as h:
        for name in names:
            h.define_domain(guest.domain_xml(name, images))
            outer_log(host, name).unlink(missing_ok=True)
            h.start_domain(name)
    deadline = time.monotonic() + 300
    while not all(guest.seen_marker(outer_log(host, n)) for n in names):
        if time.monotonic() > deadline:
            raise SystemExit("bench: the guests did not boot within 300 s")
        time.sleep(0.2)


def on(host: LabHost) -> set[str]:
    with Host.open(host.uri, Timeouts(connect=10.0), label=host.name) as h:
        return {d.name for d in h.list_domains() if d.state == "running"}


def virtfleet_drain(env: dict[str, str], src: LabHost, names: list[str],
                    max_out: int) -> float:
    t = time.monotonic()
    sh([*VF, "host", "maintenance", src.name, "--max-outgoing", str(max_out),
        "--cpu-ratio", "32", "--json"], env)
    took = time.monotonic() - t
    sh([*VF, "host", "activate", src.name], env)
    return took


def virsh_loop(src: LabHost, dst: LabHost, names: list[str]) -> float:
    script = """set -e
src=$1; dst=$2; addr=$3; shift 3
for vm in "$@"; do
  virsh -q -c "$src" migrate --live --persistent --undefinesource "$vm" "$dst" \\
    --migrateuri "tcp://$addr"
done
"""
    t = time.monotonic()
    sh(["bash", "-c", script, "loop", src.uri, dst.uri, dst.address, *names])
    return time.monotonic() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--guests", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="1 round of 4 guests, not recorded")
    args = ap.parse_args()
    rounds, count = (1, 4) if args.quick else (args.rounds, args.guests)
    lab = Lab(LAB)
    work = Path(tempfile.mkdtemp(prefix="vfbench-migrate-"))
    try:
        state = lab.up(hosts=2, pods=1)
        hv1, hv2 = state.hosts
        assert state.fleet_file is not None
        env = {**os.environ, "VIRTFLEET_DB": str(work / "store.db")}
        sh([*VF, "apply", "-f", state.fleet_file], env)
        names = [f"bench-mig-{i}" for i in range(1, count + 1)]
        boot(hv1, names)
        figures: dict[str, list[float]] = {"vf2": [], "vf1": [], "loop": []}
        for r in range(1, rounds + 1):
            for key, max_out in (("vf2", 2), ("vf1", 1)):
                assert on(hv1) >= set(names)
                figures[key].append(virtfleet_drain(env, hv1, names, max_out))
                assert on(hv2) >= set(names) and not on(hv1) & set(names)
                figures["loop"].append(virsh_loop(hv2, hv1, names))
                assert on(hv1) >= set(names)
                print(f"round {r}: virtfleet ({max_out} at a time) "
                      f"{figures[key][-1]:.2f} s, virsh loop {figures['loop'][-1]:.2f} s",
                      flush=True)
        med = {k: statistics.median(v) for k, v in figures.items()}
        rng = {k: f"{min(v):.2f}-{max(v):.2f}" for k, v in figures.items()}
        table = (
            "| how | median s | range s | per guest s | speed vs the loop |\n"
            "| --- | ---: | ---: | ---: | ---: |\n"
            f"| `virtfleet host maintenance` (2 at a time) | {med['vf2']:.2f} | {rng['vf2']} | "
            f"{med['vf2'] / count:.2f} | {med['loop'] / med['vf2']:.2f}x |\n"
            f"| `virtfleet host maintenance --max-outgoing 1` | {med['vf1']:.2f} | "
            f"{rng['vf1']} | {med['vf1'] / count:.2f} | {med['loop'] / med['vf1']:.2f}x |\n"
            f"| bash loop of `virsh migrate --live` | {med['loop']:.2f} | {rng['loop']} | "
            f"{med['loop'] / count:.2f} | 1.00x |\n")
        print("\n" + table)
        if not args.quick:
            record("migrate", (
                f"`bench/migrate.py`, {stamp()}, on "
                f"{platform.node()} ({os.cpu_count()} CPUs, load average "
                f"{os.getloadavg()[0]:.1f} at the end), {rounds} rounds; a lab pod of two "
                f"hypervisors, {count} tiny TCG guests (96 MiB, no disk) emptied from the "
                "first to the second by virtfleet, and moved back by the loop, the same "
                "guests in the same run. virtfleet's figures are the whole CLI process "
                "(store, checks on the target, placement and claims, journal); the loop's "
                "are its `virsh` processes one after another."),
                table + "\nThe loop needs `--migrateuri` (else the target is reached by this "
                "machine's host name) and ends in the same state as virtfleet (`--persistent "
                "--undefinesource`); it checks nothing first and has no limit, no claim, no "
                "journal and no way back but the operator's.")
    finally:
        lab.down()


if __name__ == "__main__":
    main()
