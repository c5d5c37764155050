"""bench/clone: clones from one template on one real lab hypervisor, virtfleet against the
ways an operator would otherwise do it, in the same run on the same template and filesystem.

1. Linked clones: `virtfleet vm clone TPL NAME --count N --host H` (one command: placement,
   name and MAC checks, claims, journal, overlays, defines), against a bash loop of
   `qemu-img create -b TPL -F qcow2` plus `virsh define` (no checks at all), against
   `virt-clone` full copies of the same image (what the chapter's listing does).
2. A full clone of a 1 GiB image: virtfleet's clone (in process, and the CLI with its start-up)
   against `cp --reflink=auto` of the same file on the same filesystem, median of 3.

Targets (issue 3): linked clones under 100 ms each on average and N=100 in under 15 s; the
full clone within 1.5x of cp. Prints the figures and records them in docs/benchmarks.md.
Usage: .venv/bin/python bench/clone.py [--count N] [--quick] (--quick: N=10, not recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import record, stamp  # bench/record.py: the script's own directory is on sys.path
from virtfleet.inventory.store import Store
from virtfleet.lab import guest
from virtfleet.lab.lab import Lab
from virtfleet.placement.policy import Policy, Ratios
from virtfleet.provision.clone import CloneRequest, clone
from virtfleet.virt import storage
from virtfleet.virt.fanout import ConnectionPool
from virtfleet.virt.guest import Guest, Removal
from virtfleet.virt.host import Host
from virtfleet.xml.domain import TEMPLATE_ROLE, Disk, Domain, FleetFacts, Interface
from virtfleet.xml.storage import Pool

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "virtfleet.cli.main"]
LAB = "vfbench"
POOL = "bench"
# On the root filesystem, like /var/lib/libvirt/images (not /tmp, which may be a tmpfs).
POOL_DIR = Path("/var/tmp/virtfleet-bench-clone")
# libvirt's client logs each RPC it sends (remote program 0x20008086) at info level: the
# ground truth for how many calls a run made, whoever made them.
RPC_SENT = re.compile(r"RPC_CLIENT_MSG_TX_QUEUE: .* prog=536903814 .*proc=(\d+)")


def rpc_env(log: Path) -> dict[str, str]:
    """Environment for a process whose libvirt calls are counted afterwards (rpc_calls)."""
    return {"LIBVIRT_LOG_FILTERS": "1:rpc.netclient 4:*",
            "LIBVIRT_LOG_OUTPUTS": f"1:file:{log}"}


def rpc_calls(log: Path) -> int:
    if not log.exists():
        return 0
    with log.open(errors="replace") as f:
        return sum(1 for line in f if RPC_SENT.search(line))


def sh(argv: list[str], env: dict[str, str] | None = None) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if p.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv[:4])} failed: {p.stderr.strip()[-500:]}")
    return p.stdout


def image(path: Path, size: str, data: str) -> None:
    sh(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size])
    sh(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a 0 {data}", str(path)])


def template_domain(name: str, disk: Path, images: guest.GuestImages, *, role: bool) -> str:
    """The lab's tiny guest with a disk and a NIC, marked as a template if `role`."""
    doc = Domain.parse(guest.domain_xml(name, images))
    d = Disk()
    d.type, d.device, d.driver_name, d.format = "file", "disk", "qemu", "qcow2"
    d.source_file, d.target_dev, d.target_bus = str(disk), "vda", "virtio"
    d.readonly = role
    doc.devices.disks.append(d)
    nic = Interface()
    nic.type, nic.source_network, nic.model = "network", "default", "virtio"
    doc.devices.interfaces.append(nic)
    if role:
        facts = FleetFacts()
        facts.role = TEMPLATE_ROLE
        doc.set_facts(facts)
    return doc.to_xml()


def by_hand(uri: str, tpl: Path, count: int, work: Path,
            env: dict[str, str] | None = None) -> float:
    """The bash loop an operator writes: overlay, then a copy of the XML with sed, define."""
    xml = work / "hand.xml"
    xml.write_text(Path(work / "hand.in").read_text())
    script = f"""set -e
for i in $(seq 1 {count}); do
  qemu-img create -q -f qcow2 -b {tpl} -F qcow2 {POOL_DIR}/hand-$i.qcow2
  sed "s/handxname/hand-$i/g; s#@DISK@#{POOL_DIR}/hand-$i.qcow2#" {xml} > {work}/hand-$i.xml
  virsh -q -c {uri} define {work}/hand-$i.xml >/dev/null
done
"""
    t = time.monotonic()
    sh(["bash", "-c", script], env=env)
    return time.monotonic() - t


def virt_clone(uri: str, count: int) -> float:
    t = time.monotonic()
    for i in range(1, count + 1):
        sh(["virt-clone", "--connect", uri, "-o", "vcsrc", "-n", f"vc-{i}", "-f",
            str(POOL_DIR / f"vc-{i}.qcow2"), "--check", "all=off"])
    return time.monotonic() - t


def remove_all(h: Host, keep: set[str]) -> None:
    for d in h.list_domains():
        if d.name not in keep:
            g = Guest.lookup(h, d.name)
            if g.is_active():
                g.destroy()
            g.undefine(Removal())
    for v in storage.volumes(h, POOL):
        if Path(v.path).name not in {"tpl.qcow2", "tpl1g.qcow2"}:
            storage.delete_volume(h, v.path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--linked-only", action="store_true",
                    help="only the linked clones and their loop (not recorded)")
    ap.add_argument("--runs", type=int, default=3, help="rounds of linked clones and loop")
    ap.add_argument("--profile", type=Path, help="cProfile the first virtfleet run into FILE")
    args = ap.parse_args()
    count = 10 if args.quick else args.count
    images = guest.ensure_images()
    lab = Lab(LAB)
    state = lab.up(hosts=1)
    shutil.rmtree(POOL_DIR, ignore_errors=True)
    POOL_DIR.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="virtfleet-bench-clone-"))
    env = {**os.environ, "VIRTFLEET_DB": str(work / "store.db"), "VIRTFLEET_VIRT_TYPE": "qemu"}
    try:
        hv = state.hosts[0]
        assert state.fleet_file is not None
        # `apply` as an operator runs it: the store, and the declared `default` network made
        # on the hypervisor (the template's NIC is on it)
        sh([*CLI, "apply", "-f", state.fleet_file], env=env)
        store = Store(f"sqlite:///{work / 'store.db'}")
        tpl, tpl1g = POOL_DIR / "tpl.qcow2", POOL_DIR / "tpl1g.qcow2"
        image(tpl, "256M", "64M")
        image(tpl1g, "1G", "1G")
        sh(["sync"])
        p = Pool()
        p.type, p.name, p.target_path = "dir", POOL, str(POOL_DIR)
        with Host.open(hv.uri) as h:
            h.conn.storagePoolCreateXML(p.to_xml(), 0)
            h.define_domain(template_domain("tpl", tpl, images, role=True))
            h.define_domain(template_domain("tpl1g", tpl1g, images, role=True))
            h.define_domain(template_domain("vcsrc", tpl, images, role=False))
            hand = template_domain("handxname", POOL_DIR / "x", images, role=False)
            (work / "hand.in").write_text(hand.replace(str(POOL_DIR / "x"), "@DISK@"))

        print(f"{count} linked clones on {hv.name} ({platform.node()}, {os.cpu_count()} CPUs,"
              f" load average {os.getloadavg()[0]:.1f})")
        vf_s, hand_s, vf_rpc, hand_rpc = [], [], [], []

        def vf_run(prefix: str, log: Path, prof: list[str]) -> float:
            t = time.monotonic()
            out = subprocess.run([sys.executable, *prof, "-m", "virtfleet.cli.main", "vm",
                                  "clone", "tpl", prefix, "--count", str(count), "--host",
                                  hv.name, "--cpu-ratio", "64", "--json"],
                                 env={**env, **rpc_env(log)}, capture_output=True, text=True,
                                 check=False)
            secs = time.monotonic() - t
            made = json.loads(out.stdout) if out.returncode == 0 and out.stdout else []
            if len([c for c in made if c.get("ok")]) != count:  # cProfile exits 0 on errors
                raise SystemExit(f"bench: virtfleet vm clone failed: {out.stderr.strip()}")
            return secs

        def clear() -> None:
            """The clones gone, and the store told so (its observations count as used room)."""
            with Host.open(hv.uri) as h:
                remove_all(h, {"tpl", "tpl1g", "vcsrc"})
            sh([*CLI, "sync"], env=env)

        if args.profile:  # one more run, profiled, not counted
            vf_run("vfprof", work / "prof.log", ["-m", "cProfile", "-o", str(args.profile)])
            clear()
        for k in range(args.runs):  # alternated, so load drifts hit both alike
            log = work / f"vf-{k}.log"
            vf_s.append(vf_run(f"vf{k}x", log, []))
            vf_rpc.append(rpc_calls(log))
            log = work / f"hand-{k}.log"
            hand_s.append(by_hand(hv.uri, tpl, count, work, {**os.environ, **rpc_env(log)}))
            hand_rpc.append(rpc_calls(log))
            clear()
            print(f"  round {k + 1}: virtfleet {vf_s[-1]:.2f} s ({vf_rpc[-1] / count:.1f} "
                  f"libvirt calls per clone), loop {hand_s[-1]:.2f} s "
                  f"({hand_rpc[-1] / count:.1f} per clone)", flush=True)
        vf_t, hand_t = statistics.median(vf_s), statistics.median(hand_s)
        vf_calls = statistics.median(vf_rpc) / count
        hand_calls = statistics.median(hand_rpc) / count
        print(f"  virtfleet vm clone --count {count}: {vf_t:.2f} s ({vf_t / count * 1000:.0f} ms "
              f"each, CLI start-up included; {vf_calls:.1f} libvirt calls per clone)")
        print(f"  qemu-img create -b + virsh define loop: {hand_t:.2f} s "
              f"({hand_t / count * 1000:.0f} ms each; {hand_calls:.1f} libvirt calls per clone)")
        print(f"  virtfleet / loop: {vf_t / hand_t:.2f}x (target 1.1x)")
        if args.linked_only:
            return
        vc = virt_clone(hv.uri, count)
        print(f"  virt-clone (full copies of the 64 MiB image): {vc:.2f} s "
              f"({vc / count * 1000:.0f} ms each)")
        with Host.open(hv.uri) as h:
            remove_all(h, {"tpl", "tpl1g", "vcsrc"})

        print("full clone of a 1 GiB image (median of 3)")
        policy = Policy(default=Ratios(cpu=64))
        cp_s, lib_s, cli_s = [], [], []
        pool = ConnectionPool()
        for k in range(3):
            t = time.monotonic()
            sh(["cp", "--reflink=auto", str(tpl1g), str(POOL_DIR / f"cp-{k}.qcow2")])
            cp_s.append(time.monotonic() - t)
            t = time.monotonic()
            [c] = clone(store, pool, CloneRequest(template="tpl1g", name=f"full-{k}",
                                                  linked=False, host=hv.name), policy=policy)
            lib_s.append(time.monotonic() - t)
            assert c.ok, c.result
            t = time.monotonic()
            sh([*CLI, "vm", "clone", "tpl1g", f"fullcli-{k}", "--full", "--host", hv.name,
                "--cpu-ratio", "64"], env=env)
            cli_s.append(time.monotonic() - t)
            (POOL_DIR / f"cp-{k}.qcow2").unlink()
            with Host.open(hv.uri) as h:
                remove_all(h, {"tpl", "tpl1g", "vcsrc"})
        pool.close()
        store.close()
        cp_m, lib_m, cli_m = (statistics.median(x) for x in (cp_s, lib_s, cli_s))
        print(f"  cp --reflink=auto: {cp_m:.2f} s; virtfleet clone: {lib_m:.2f} s "
              f"({lib_m / cp_m:.2f}x); virtfleet CLI: {cli_m:.2f} s ({cli_m / cp_m:.2f}x)")
        fs = sh(["findmnt", "-n", "-o", "FSTYPE", "-T", str(POOL_DIR)]).strip()
        if args.quick:
            return
        record("clone", (
            f"`bench/clone.py`, {stamp()}, on {platform.node()} "
            f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end, shared "
            f"with other work), one lab hypervisor (real libvirtd, qemu driver), storage pool "
            f"on {fs} ({POOL_DIR}); all figures from the same run; linked clones and their "
            f"loop: median of {args.runs} alternated rounds (range in brackets); libvirt calls "
            "counted from libvirt's client RPC log."),
            "| work | run | seconds | per clone | libvirt calls per clone |\n"
            "|---|---|---|---|---|\n"
            f"| {count} linked clones | `virtfleet vm clone --count {count}` (CLI start-up, "
            f"placement, checks, claims and journal included) | {vf_t:.2f} "
            f"({min(vf_s):.2f}-{max(vf_s):.2f}) | {vf_t / count * 1000:.0f} ms | {vf_calls:.1f} |\n"
            f"| {count} linked clones | bash loop: `qemu-img create -b` + `virsh define` | "
            f"{hand_t:.2f} ({min(hand_s):.2f}-{max(hand_s):.2f}) | "
            f"{hand_t / count * 1000:.0f} ms | "
            f"{hand_calls:.1f} |\n"
            f"| | virtfleet / loop | {vf_t / hand_t:.2f}x (target 1.1x) | | |\n"
            f"| {count} clones | `virt-clone` full copies (64 MiB of data) | {vc:.2f} | "
            f"{vc / count * 1000:.0f} ms | |\n"
            f"| full clone, 1 GiB of data | `cp --reflink=auto` (median of 3) | {cp_m:.2f} | | "
            "|\n"
            f"| full clone, 1 GiB of data | virtfleet clone, in process | {lib_m:.2f} | "
            f"{lib_m / cp_m:.2f}x cp | |\n"
            f"| full clone, 1 GiB of data | `virtfleet vm clone --full` CLI | {cli_m:.2f} | "
            f"{cli_m / cp_m:.2f}x cp | |\n\n"
            "Targets: under 100 ms per linked clone and 100 in under 15 s; a full clone within "
            f"1.5x of cp. On {fs} there is no reflink: libvirt copies a qcow2 with "
            "`qemu-img convert`, cp with copy_file_range.")
    finally:
        lab.down()
        shutil.rmtree(POOL_DIR, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
