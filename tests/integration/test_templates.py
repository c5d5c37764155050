"""Templates and clones on the lab: a debootstrapped image sealed by virt-sysprep and inspected
with libguestfs, ten linked clones booted with their own hostnames, a template that its clones
protect, and a full clone that boots after its template is gone."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from tests.integration.conftest import REQUIRE_ENV, LabFixture
from tests.unit.cli import Result, run
from virtfleet.errors import VirtfleetError
from virtfleet.lab import guest
from virtfleet.lab.state import LabHost
from virtfleet.virt import storage
from virtfleet.virt.guest import Guest, Removal
from virtfleet.virt.host import Host
from virtfleet.xml.storage import Pool

pytestmark = pytest.mark.integration

IMAGE = Path(os.environ.get("VIRTFLEET_IMAGE_CACHE", "/var/cache/virtfleet/images")) / \
    "debian-minbase.qcow2"
POOL = "vftpl"
GUESTFS_ENV = {"LIBGUESTFS_BACKEND": "direct", "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}


@dataclass
class PodPool:
    hosts: list[LabHost]  # two hypervisors of one pod, sharing the pod's directory
    directory: Path
    db: Path

    def cli(self, *args: str, timeout: float = 600) -> Result:
        return run(self.db, *args, env={"VIRTFLEET_VIRT_TYPE": "qemu"}, timeout=timeout)


@pytest.fixture
def pod_pool(lab: LabFixture, tmp_path: Path) -> Iterator[PodPool]:
    """A transient dir pool on the pod's shared directory on both hypervisors of one pod, and
    each one's `default` network started; everything made is removed afterwards."""
    if not IMAGE.is_file() or shutil.which("guestfish") is None:
        why = f"{IMAGE} or libguestfs is missing (run `make images`)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    by_pod: dict[str, list[LabHost]] = {}
    for h in lab.hosts:
        by_pod.setdefault(h.pod, []).append(h)
    pod, hosts = next((p, hs) for p, hs in sorted(by_pod.items()) if len(hs) >= 2)
    directory = Path(lab.state.pods[pod]) / f"templates-{os.getpid()}"
    directory.mkdir()
    db = tmp_path / "store.db"
    assert run(db, "apply", "-f", str(lab.fleet_file)).code == 0
    p = Pool()
    p.type, p.name, p.target_path = "dir", POOL, str(directory)
    started = []
    for h in hosts[:2]:
        with Host.open(h.uri) as c:
            c.conn.storagePoolCreateXML(p.to_xml(), 0)
            net = c.conn.networkLookupByName("default")
            if not net.isActive():
                net.create()
                started.append(h)
    try:
        yield PodPool(hosts[:2], directory, db)
    finally:
        for h in hosts[:2]:
            with Host.open(h.uri) as c:
                for d in c.list_domains():
                    if any(src.startswith(str(directory)) for src in
                           Guest.lookup(c, d.name).disk_sources()):
                        g = Guest.lookup(c, d.name)
                        with contextlib.suppress(VirtfleetError):
                            if g.is_active():
                                g.destroy()
                            g.undefine(Removal())
                with contextlib.suppress(libvirt.libvirtError):
                    c.conn.storagePoolLookupByName(POOL).destroy()
                if h in started:
                    with contextlib.suppress(libvirt.libvirtError):
                        c.conn.networkLookupByName("default").destroy()
        shutil.rmtree(directory, ignore_errors=True)


def guestfish(image: Path, *commands: str) -> list[str]:
    """Run guestfish commands read-only on an image; one output line per command's output."""
    p = subprocess.run(["guestfish", "--ro", "-a", str(image), "-i"],
                       input="\n".join(commands) + "\n", capture_output=True, text=True,
                       env={**os.environ, **GUESTFS_ENV}, timeout=600, check=False)
    assert p.returncode == 0, p.stderr
    return p.stdout.splitlines()


def boots_as(env: PodPool, name: str) -> None:
    """Start `name` with its console attached and see the tiny guest set the hostname it was
    handed through SMBIOS, then reach its marker."""
    r = env.cli("vm", "start", name, "--console", "--until", guest.MARKER, "--timeout", "180")
    assert r.code == 0, r.err
    assert f"{guest.HOSTNAME_LINE}{name}" in r.out, r.out[-2000:]


def test_template_seal_linked_and_full_clones(pod_pool: PodPool) -> None:
    env = pod_pool
    images = guest.ensure_images()
    a, b = env.hosts
    src = env.directory / "src.qcow2"
    shutil.copyfile(IMAGE, src)

    r = env.cli("vm", "create", "tsrc", "--host", a.name, "--memory", "96M", "--vcpus", "1",
                "--disk", f"path={src}", "--kernel", str(images.kernel), "--initrd",
                str(images.initrd), "--cmdline", "console=ttyS0", "--network",
                "network=default", "--no-start", "--virt-type", "qemu")
    assert r.code == 0, r.err

    # Listing 3-9: virt-sysprep a shut-off VM into a template (here with the chapter's tuning).
    r = env.cli("template", "create", "ttpl", "--from", "tsrc", "--profile", "optimize",
                "--json", timeout=1200)
    assert r.code == 0, r.err
    [image] = [Path(d["path"]) for d in r.json()["disks"]]
    assert image == env.directory / "ttpl.qcow2"
    assert image.stat().st_mode & 0o777 == 0o444  # the base image is read-only

    machine_id, ssh, sysctl, history = guestfish(
        image, "filesize /etc/machine-id", "glob-expand /etc/ssh/ssh_host_* | wc -l",
        "exists /etc/sysctl.d/90-virtfleet-guest.conf", "exists /root/.bash_history")
    assert (machine_id, ssh, sysctl, history) == ("0", "0", "true", "false")
    # The VM it came from is untouched (nothing lost): it keeps its identity and keys.
    src_id, src_keys = guestfish(src, "filesize /etc/machine-id",
                                 "glob-expand /etc/ssh/ssh_host_* | wc -l")
    assert int(src_id) > 1 and int(src_keys) > 0

    r = env.cli("vm", "start", "ttpl")
    assert r.code == 4 and "templates are never started" in r.err

    # Listing 3-10's virt-clone, ten at a time, linked: each an overlay on the shared image.
    r = env.cli("vm", "clone", "ttpl", "tweb", "--count", "10", "--cpu-ratio", "16", "--json")
    assert r.code == 0, r.err
    made = r.json()
    assert [c["name"] for c in made] == [f"tweb-{i}" for i in range(1, 11)]
    assert {c["host"] for c in made} == {a.name, b.name}  # spread over the pod's two hosts
    assert len({c["macs"][0] for c in made}) == 10
    for c in made:
        info = subprocess.run(["qemu-img", "info", "-U", c["disks"][0]], capture_output=True,
                              text=True, check=True).stdout
        assert f"backing file: {image}" in info and "backing file format: qcow2" in info
        boots_as(env, c["name"])

    r = env.cli("template", "delete", "ttpl")
    assert r.code == 4 and "has 10 linked clone(s)" in r.err and "nothing was removed" in r.err
    assert image.exists()

    # A full clone on the other host, then the linked ones go, then the template.
    r = env.cli("vm", "clone", "ttpl", "tsolo", "--full", "--host", b.name, "--pool", POOL,
                "--cpu-ratio", "16", "--json")
    assert r.code == 0, r.err
    [solo] = r.json()
    assert "backing file" not in subprocess.run(
        ["qemu-img", "info", "-U", solo["disks"][0]], capture_output=True, text=True,
        check=True).stdout
    for c in made:
        host = a if c["host"] == a.name else b
        with Host.open(host.uri) as h:
            g = Guest.lookup(h, c["name"])
            g.destroy()
            g.undefine(Removal())
            storage.delete_volume(h, c["disks"][0])
    r = env.cli("template", "delete", "ttpl")
    assert r.code == 0, r.err
    assert not image.exists()
    boots_as(env, "tsolo")  # still boots: its disk never needed the template


def test_a_killed_clone_run_is_cleaned_up_from_the_journal(pod_pool: PodPool) -> None:
    """SIGKILL `vm clone --count 40` halfway: the journal keeps what the clone in flight had
    made and the room claimed for the clones not made yet; `ops cleanup --all` removes it and
    gives every claim back (regression, issue 10 defect 2: those claims stayed), the finished
    clones stand, and running the same command again finishes the job."""
    import signal
    import sys
    import time

    from virtfleet.inventory.store import Store
    from virtfleet.xml.domain import TEMPLATE_ROLE, Disk, Domain, FleetFacts

    env = pod_pool
    a = env.hosts[0]
    base = env.directory / "kbase.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    doc = Domain.parse(guest.domain_xml("ktpl", guest.ensure_images()))
    d = Disk()
    d.type, d.device, d.format, d.source_file, d.target_dev, d.target_bus = (
        "file", "disk", "qcow2", str(base), "vda", "virtio")
    d.readonly = True
    doc.devices.disks.append(d)
    facts = FleetFacts()
    facts.role = TEMPLATE_ROLE
    doc.set_facts(facts)
    with Host.open(a.uri) as h:
        h.define_domain(doc.to_xml())

    proc = subprocess.Popen(
        [sys.executable, "-m", "virtfleet.cli.main", "vm", "clone", "ktpl", "kc", "--count",
         "40", "--host", a.name, "--cpu-ratio", "64"],
        env={**os.environ, "VIRTFLEET_DB": str(env.db)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    store = Store(f"sqlite:///{env.db}")
    try:
        deadline = time.monotonic() + 120
        while True:  # kill it while a clone has made its volume but is not done
            assert proc.poll() is None and time.monotonic() < deadline, "clone ended first"
            time.sleep(0.005)
            if not (env.directory / "kc-3.qcow2").exists():
                continue
            proc.send_signal(signal.SIGSTOP)  # hold still while the journal is read
            ops = store.operations()
            if any(m.kind == "poolvol" for o in ops for m in o.steps):
                break
            proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        batch, op = store.operations()  # the batch's claims, and the clone in flight
        assert batch.target == "kc-1..kc-40 from ktpl" and len(batch.steps) == 40
        assert store.placement_claims()  # the room of the clones not made yet
    finally:
        store.close()
    r = env.cli("ops", "list", "--json")
    assert [(o["id"], o["state"]) for o in r.json()] == [
        (batch.id, "interrupted"), (op.id, "interrupted")]
    r = env.cli("ops", "cleanup", "--all")
    assert r.code == 0 and "cleaned up" in r.out, r.err
    assert env.cli("ops", "list", "--json").json() == []
    store = Store(f"sqlite:///{env.db}")
    try:
        assert store.placement_claims() == []  # every claim of the killed run given back
    finally:
        store.close()
    victim = op.target.split("/")[1]
    assert not (env.directory / f"{victim}.qcow2").exists()
    with Host.open(a.uri) as h:
        assert not h.has_domain(victim)
        done = [n for n in (f"kc-{i}" for i in range(1, 41)) if h.has_domain(n)]
    assert "kc-1" in done and victim not in done  # the clones made before the kill stand

    # The same command again finishes the job: the clones made before the kill are reported,
    # the others are made, and nothing is left claimed or on the journal.
    r = env.cli("vm", "clone", "ktpl", "kc", "--count", "40", "--host", a.name,
                "--cpu-ratio", "64", "--json")
    assert r.code == 0, r.err
    rows = {c["name"]: c["result"] for c in r.json()}
    assert list(rows) == [f"kc-{i}" for i in range(1, 41)]
    assert all(rows[n] == "already cloned" for n in done)
    assert rows[victim] == "cloned (linked)"
    with Host.open(a.uri) as h:
        assert all(h.has_domain(f"kc-{i}") for i in range(1, 41))
    assert env.cli("ops", "list", "--json").json() == []
