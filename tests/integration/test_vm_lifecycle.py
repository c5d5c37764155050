"""The chapter's virsh verbs on real QEMU guests (TCG) in the lab, by name, through the CLI."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest

from tests.integration.conftest import LabFixture
from tests.unit.cli import run
from virtfleet.errors import VirtfleetError
from virtfleet.lab import guest
from virtfleet.virt.host import Host
from virtfleet.xml.domain import Domain

pytestmark = pytest.mark.integration


def test_lifecycle_of_a_real_guest_by_name(lab: LabFixture, tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    assert run(db, "apply", "-f", str(lab.fleet_file)).code == 0
    try:
        results = lab.lab.guests(1, timeout=180)
        vm = results[0].name
        info = run(db, "vm", "dominfo", vm, "--json").json()
        assert info["state"] == "running" and info["host"] == results[0].host

        # The guest's kernel answers the ACPI power button: a clean shutdown.
        r = run(db, "vm", "shutdown", vm, "--timeout", "90")
        assert r.code == 0 and "is shut off" in r.out, r.err
        assert run(db, "vm", "dominfo", vm, "--json").json()["state"] == "shut off"

        # QEMU refuses to shut down a paused guest: said plainly, nothing changed.
        assert run(db, "vm", "start", vm).code == 0
        assert run(db, "vm", "suspend", vm).code == 0
        r = run(db, "vm", "shutdown", vm, "--timeout", "2")
        assert r.code == 4 and "not running" in r.err
        assert run(db, "vm", "dominfo", vm, "--json").json()["state"] == "paused"
        assert run(db, "vm", "resume", vm).code == 0
        stats = run(db, "vm", "domstats", vm, "--json").json()
        assert stats["state.state"] == 1 and stats["vcpu.current"] == 1

        # Fleet-wide: destroy everything in one pod, then start it all again.
        pod = lab.hosts[0].pod
        r = run(db, "vm", "destroy", "--all", "--pod", pod, "--json")
        assert r.code == 0
        in_pod = {h.name for h in lab.hosts if h.pod == pod}
        assert {o["host"] for o in r.json()} == in_pod
        r = run(db, "vm", "start", "--all", "--json")
        assert r.code == 0 and len(r.json()) == len(in_pod)
        listed = run(db, "list", "--live", "--json").json()
        assert {v["state"] for v in listed if v["name"].startswith("tiny-")} == {"running"}

        r = run(db, "vm", "autostart", vm)
        assert r.code == 0 and run(db, "vm", "dominfo", vm, "--json").json()["autostart"]
    finally:
        lab.lab.guests(0)


def test_a_guest_deaf_to_acpi_times_out_then_force_destroys(lab: LabFixture,
                                                             tmp_path: Path) -> None:
    """The chapter's reason for acpid: without it `virsh shutdown` does nothing. virtfleet
    waits --timeout, says so, leaves the guest running, and --force destroys it."""
    db = tmp_path / "store.db"
    assert run(db, "apply", "-f", str(lab.fleet_file)).code == 0
    h = lab.hosts[2]
    name = f"itest-deaf-{os.getpid()}"
    d = Domain.parse(guest.domain_xml(name, guest.ensure_images()))
    d.os.cmdline = "console=ttyS0 quiet acpi=off"  # the kernel ignores the power button
    with Host.open(h.uri) as conn:
        conn.define_domain(d.to_xml())
        try:
            conn.start_domain(name)
            time.sleep(3)  # let the kernel come up, so the button press is really ignored
            r = run(db, "vm", "shutdown", name, "--timeout", "3")
            assert r.code == 1 and "use --force" in r.err and "acpid" in r.err
            assert run(db, "vm", "dominfo", name, "--json").json()["state"] == "running"
            r = run(db, "vm", "shutdown", name, "--timeout", "1", "--force")
            assert r.code == 0 and "destroyed after the shutdown timeout" in r.out
        finally:
            if conn.has_domain(name):
                with contextlib.suppress(VirtfleetError):
                    conn.destroy_domain(name)
                conn.undefine_domain(name)
