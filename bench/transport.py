"""bench/transport: the fleet's VM list over qemu+ssh on many lab hypervisors, virtfleet against
the chapter's ssh loop, in one run.

A lab of N real hypervisors (default 100), each running its own libvirtd and sshd in its
namespace, two shut-off tiny guests defined on each, the host keys pinned with
`apply --accept-new`. Then:

- baseline: the chapter's hv.sh, bash looping over the hosts running
  `virsh -c qemu+ssh://root@HOST/system list --all` one after another (one ssh each; it uses
  virtfleet's ssh wrapper, so the same key, known_hosts and ssh options: the cost measured is
  ssh's and virsh's, not a different configuration);
- cold: `virtfleet list --json` with no controller, at several VIRTFLEET_SSH_CONCURRENCY
  values (each host is an ssh process and an sshd session while it is asked);
- warm: `virtfleet serve` holding one ssh connection per host, then `virtfleet list --json`.

Also what the lab's hypervisors cost in memory (libvirtd, virtlogd, sshd per host).
Usage: .venv/bin/python bench/transport.py [--hosts N] [--runs R] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

# bench/common.py and bench/record.py: the script's own directory is on sys.path
from common import VF, lab_down, stop_controller
from record import report, stamp

ROOT = Path(__file__).resolve().parent.parent
LAB = "vfbench-ssh"
GUESTS = 2


def sh(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run argv; (seconds, stdout). Fails loudly."""
    secs, _cpu, out = sh_cpu(argv, env)
    return secs, out


def sh_cpu(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run argv; (seconds, CPU seconds of it and the children it reaped, stdout): the CPU the
    management host pays (the ssh clients are virsh's or virtfleet's children)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, text=True,
                                env={**os.environ, **(env or {})})
        _pid, status, usage = os.wait4(proc.pid, 0)
        secs = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(argv[:4])}... failed: {err.read()[-2000:]}")
        out.seek(0)
        return secs, usage.ru_utime + usage.ru_stime, out.read()


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def lab_processes(state: dict[str, object]) -> dict[str, list[int]]:
    """The lab's processes by program, from every hypervisor's namespace."""
    out: dict[str, list[int]] = {}
    for h in state["hosts"]:  # type: ignore[attr-defined]
        pids = subprocess.run(["ip", "netns", "pids", h["netns"]], capture_output=True,
                              text=True, check=True).stdout.split()
        for pid in pids:
            try:
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            out.setdefault(name, []).append(int(pid))
    return out


def define_guests(state: dict[str, object]) -> int:
    """GUESTS shut-off tiny guests on every hypervisor, through its own Unix socket."""
    from virtfleet.lab import guest
    from virtfleet.lab.state import LabState
    from virtfleet.virt.host import Host

    images = guest.ensure_images()
    st = LabState.from_json(state)
    n = 0
    for h in st.hosts:
        with Host.open(h.admin_uri, label=h.name) as conn:
            for i in range(1, GUESTS + 1):
                conn.define_domain(guest.domain_xml(f"bench-{h.index}-{i}", images))
                n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--limits", default="8,16,32,64",
                    help="VIRTFLEET_SSH_CONCURRENCY values for the cold runs")
    ap.add_argument("--quick", action="store_true", help="10 hosts, one run; not recorded")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/transport needs root: the lab runs in network namespaces")
    hosts = 10 if args.quick else args.hosts
    runs = 1 if args.quick else args.runs
    limits = [int(x) for x in args.limits.split(",")]

    work = Path(tempfile.mkdtemp(prefix="vf-bench-ssh-"))
    print(f"lab: {hosts} qemu+ssh hypervisors ...", flush=True)
    t_start = time.monotonic()
    up_s, out = sh([VF, "lab", "up", "--hosts", str(hosts), "--transport", "ssh",
                    "--name", LAB])
    controller: subprocess.Popen[bytes] | None = None
    try:
        _s, status = sh([VF, "lab", "status", "--name", LAB, "--json"])
        state = json.loads(status)
        client = state["client_dir"]
        lab_json = json.loads(Path(state["state_dir"], "lab.json").read_text())
        env = {"VIRTFLEET_DB": str(work / "bench.db"), "VIRTFLEET_TRANSPORT_DIR": client}
        # The bench's fleet file: the lab's, without the per-host NAT network (a dnsmasq each).
        fleet = yaml.safe_load(Path(out.strip().splitlines()[-1]).read_text())
        for site in fleet["sites"]:
            site.pop("libvirt_networks", None)
        fleet_file = work / "fleet.yaml"
        fleet_file.write_text(yaml.safe_dump(fleet))
        print(f"lab up in {up_s:.1f} s; pinning keys ...", flush=True)
        apply_s, _ = sh([VF, "apply", "-f", str(fleet_file), "--accept-new"], env)
        print(f"apply --accept-new in {apply_s:.1f} s; defining guests ...", flush=True)
        t_define = time.monotonic()
        vms = define_guests(lab_json)
        print(f"{vms} guests defined in {time.monotonic() - t_define:.1f} s; ready after "
              f"{time.monotonic() - t_start:.1f} s", flush=True)
        addresses = [h["address"] for h in lab_json["hosts"]]
        procs = lab_processes(lab_json)
        mem = {name: rss_mib(procs.get(name, [])) for name in ("libvirtd", "virtlogd", "sshd")}

        # One list first: it writes virtfleet's ssh wrapper and config (the loop uses them too)
        # and leaves both sides' files in the page cache.
        sh([VF, "list", "--json"], env)
        wrapper = Path(client) / "ssh"
        loop = ('for h in "$@"; do echo "== $h"; virsh -c "qemu+ssh://root@$h/system?command='
                f'{wrapper}&no_tty=1" list --all; done')
        print(f"baseline: bash + virsh over {hosts} hypervisors, one ssh each ...", flush=True)
        base_s, base_cpu, base_out = sh_cpu(["bash", "-c", loop, "bash", *addresses])
        base_vms = base_out.count("bench-")

        load_at = os.getloadavg()[0]
        # What one ssh login costs the client, by key exchange: OpenSSH 9's default
        # (sntrup761x25519, post-quantum hybrid; virtfleet keeps it) and curve25519 alone.
        kex = {}
        for name, opts in (("default", []), ("curve25519-sha256",
                                             ["-o", "KexAlgorithms=curve25519-sha256"])):
            logins = [str(wrapper), *opts, f"root@{addresses[0]}", "true"]
            secs, cpu, _ = sh_cpu(["bash", "-c", 'for i in $(seq 20); do "$@"; done', "bash",
                                   *logins])
            kex[name] = (secs / 20, cpu / 20)
        cold: dict[int, list[float]] = {}
        cold_cpu: dict[int, list[float]] = {}
        cold_vms = 0
        for limit in limits:
            print(f"cold: virtfleet list --json, VIRTFLEET_SSH_CONCURRENCY={limit} ...",
                  flush=True)
            cold[limit], cold_cpu[limit] = [], []
            for _ in range(runs):
                secs, cpu, text = sh_cpu([VF, "list", "--json"],
                                         {**env, "VIRTFLEET_SSH_CONCURRENCY": str(limit)})
                cold[limit].append(secs)
                cold_cpu[limit].append(cpu)
                cold_vms = len(json.loads(text))

        print("warm: virtfleet serve + virtfleet list --json ...", flush=True)
        controller = subprocess.Popen([VF, "serve"], env={**os.environ, **env},
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        connect_s = 0.0
        t0 = time.monotonic()
        while True:
            # The table form says where its answer came from (--json does not).
            probe = subprocess.run([VF, "list"], env={**os.environ, **env},
                                   capture_output=True, text=True, check=False)
            if f"{vms} VMs on {hosts} hypervisors, from the controller" in probe.stderr:
                connect_s = time.monotonic() - t0
                break
            if controller.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("controller did not come up")
            time.sleep(0.5)
        warm, warm_cpu = [], []
        for _ in range(max(runs, 5)):
            secs, cpu, text = sh_cpu([VF, "list", "--json"], env)
            warm.append(secs)
            warm_cpu.append(cpu)
        warm_vms = len(json.loads(text))
        ssh_held = sum(1 for p in Path("/proc").iterdir() if p.name.isdigit()
                       and _ppid(p) == controller.pid and _argv0(p) == "ssh")
    finally:
        stop_controller(controller)
        lab_down(LAB)

    rows = [f"| chapter loop (bash + virsh -c qemu+ssh://... list --all, one host after "
            f"another) | {base_s:.2f} | one run | 1.0 | {base_cpu:.1f} | {base_vms} |"]
    for limit, times in cold.items():
        med = statistics.median(times)
        rows.append(f"| virtfleet list --json, cold, VIRTFLEET_SSH_CONCURRENCY={limit} | "
                    f"{med:.2f} | {min(times):.2f}-{max(times):.2f} | {base_s / med:.1f} | "
                    f"{statistics.median(cold_cpu[limit]):.1f} | {cold_vms} |")
    wmed = statistics.median(warm)
    rows.append(f"| virtfleet list --json, warm (controller holds {ssh_held} ssh "
                f"connections) | {wmed:.2f} | {min(warm):.2f}-{max(warm):.2f} | "
                f"{base_s / wmed:.0f} | {statistics.median(warm_cpu):.1f} | {warm_vms} |")
    table = ["| run | median s | range s | x faster than loop | client CPU s | VMs seen |",
             "| --- | ---: | ---: | ---: | ---: | ---: |", *rows]
    notes = [
        f"- every run saw all {vms} VMs: "
        f"{'yes' if base_vms == cold_vms == warm_vms == vms else 'NO'}",
        f"- the controller held one ssh process per host: "
        f"{'yes' if ssh_held == hosts else 'NO'} ({ssh_held} for {hosts}); it was serving "
        f"{connect_s:.1f} s after it started",
        f"- the lab: {hosts} hypervisors up in {up_s:.1f} s; resident memory "
        f"libvirtd {mem['libvirtd']:.0f} MiB, virtlogd {mem['virtlogd']:.0f} MiB, "
        f"sshd {mem['sshd']:.0f} MiB in all ({sum(mem.values()) / hosts:.1f} MiB a host)",
        "- one ssh login (20 in a row to one host): OpenSSH's default key exchange "
        f"{kex['default'][0] * 1000:.0f} ms, {kex['default'][1] * 1000:.0f} ms client CPU; "
        f"curve25519-sha256 {kex['curve25519-sha256'][0] * 1000:.0f} ms, "
        f"{kex['curve25519-sha256'][1] * 1000:.0f} ms client CPU",
        f"- load average when the cold runs began: {load_at:.1f} on {os.cpu_count()} cores "
        "(both ends of every ssh connection run on this machine: each login's sshd, shell and "
        "virt-ssh-helper cost CPU here that a real estate spreads over its hypervisors)",
    ]
    text = "\n".join(table + [""] + notes)
    report("transport_ssh",
           f"`bench/transport.py`, {stamp()}, {os.cpu_count()} cores, Python "
           f"{platform.python_version()}; {hosts} lab hypervisors over qemu+ssh (each its own "
           f"libvirtd and sshd in a network namespace), {GUESTS} shut-off guests each; median "
           f"of {runs} cold runs per concurrency and {max(runs, 5)} warm runs, baseline once.",
           text, quick=args.quick)


def _ppid(p: Path) -> int:
    try:
        return int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _argv0(p: Path) -> str:
    try:
        return Path((p / "cmdline").read_bytes().split(b"\0")[0].decode()).name
    except OSError:
        return ""


if __name__ == "__main__":
    main()
