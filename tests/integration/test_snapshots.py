"""Listing 3-13 on a real QEMU VM with a qcow2 disk: a snapshot before a code deployment, a
revert when it goes wrong, and the disk really back as it was."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import LabFixture
from tests.unit.cli import run
from virtfleet.errors import VirtfleetError
from virtfleet.lab import guest
from virtfleet.virt.host import Host
from virtfleet.xml.domain import Disk, Domain, FleetFacts

pytestmark = pytest.mark.integration


def disk_domain(name: str, image: Path, template: bool = False) -> str:
    """The lab's tiny guest's definition with one qcow2 disk, `image`; marked a template if
    asked (the web console's lab test uses it too)."""
    d = Domain.parse(guest.domain_xml(name, guest.ensure_images()))
    disk = Disk()
    disk.type, disk.device = "file", "disk"
    disk.driver_name, disk.format = "qemu", "qcow2"
    disk.source_file = str(image)
    disk.target_dev, disk.target_bus = "vda", "virtio"
    d.devices.disks.append(disk)
    if template:
        facts = FleetFacts()
        facts.role = "template"
        d.set_facts(facts)
    return d.to_xml()


def qemu_io(image: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, str(image)],
                          capture_output=True, text=True, check=False)


def test_revert_restores_disk_content_and_running_state(lab: LabFixture,
                                                        tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    assert run(db, "apply", "-f", str(lab.fleet_file)).code == 0
    image = tmp_path / "app.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
    name = f"itest-snap-{os.getpid()}"
    h = lab.hosts[0]
    with Host.open(h.uri) as conn:
        conn.define_domain(disk_domain(name, image))
        try:
            # Shut off: the snapshot is taken inside the qcow2 image.
            r = run(db, "snapshot", "create", name, "--name", "before-deploy",
                    "--description", "release 41 going out")
            assert r.code == 0, r.err
            # "the deployment": data written after the snapshot
            assert qemu_io(image, "write -P 0xab 0 1M").returncode == 0
            assert qemu_io(image, "read -P 0xab 0 1M").returncode == 0
            r = run(db, "snapshot", "revert", name, "--current")
            assert r.code == 0, r.err
            # the write is gone: the first MiB reads back as zeros again
            back = qemu_io(image, "read -P 0 0 1M")
            assert back.returncode == 0 and "Pattern verification failed" not in back.stdout
            info = run(db, "snapshot", "info", name, "--current", "--json").json()
            assert (info["name"], info["state"], info["location"], info["description"]) == (
                "before-deploy", "shutoff", "internal", "release 41 going out")

            # Running: memory and disk together; revert brings the VM back running.
            assert run(db, "vm", "start", name).code == 0
            r = run(db, "snapshot", "create", name, "--name", "live")
            assert r.code == 0, r.err
            assert run(db, "vm", "destroy", name).code == 0
            assert run(db, "snapshot", "revert", name, "live").code == 0
            assert run(db, "vm", "dominfo", name, "--json").json()["state"] == "running"
            tree = run(db, "snapshot", "list", name, "--json").json()
            assert [(s["name"], s["parent"]) for s in tree] == [
                ("before-deploy", None), ("live", "before-deploy")]
            assert "live *" in run(db, "snapshot", "list", name).out

            # undefine refuses while snapshots exist; naming them lets it go
            assert run(db, "vm", "destroy", name).code == 0
            r = run(db, "vm", "undefine", name)
            assert r.code == 4 and "--remove-snapshots" in r.err
            assert run(db, "snapshot", "delete", name, "before-deploy", "--children").code == 0
            assert run(db, "snapshot", "list", name, "--json").json() == []
        finally:
            if conn.has_domain(name):
                with contextlib.suppress(VirtfleetError):
                    conn.destroy_domain(name)
                conn.conn.lookupByName(name).undefineFlags(1 << 1)  # + snapshot metadata
