"""The controller against real libvirtd daemons in the lab: a hypervisor that stops answering."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import LabFixture
from tests.integration.test_fleet import domain_xml
from tests.unit.cli import Result, run, running_controller
from virtfleet.virt.host import Host

pytestmark = pytest.mark.integration


def wait_for(what: str, check: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_a_hung_hypervisor_is_flagged_within_the_keepalive_window(lab: LabFixture,
                                                                  tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    assert run(db, "apply", "-f", str(lab.fleet_file)).code == 0
    hung = lab.hosts[0]
    names = {}
    for h in lab.hosts:
        with Host.open(h.uri) as conn:
            names[h.name] = conn.define_domain(domain_xml(f"itest-hang-{h.name}-{os.getpid()}"))
    try:
        with running_controller(db):
            def mine(r: Result) -> dict[str, dict[str, object]]:
                assert "asking the hypervisors" not in r.err, r.err  # served by the controller
                assert all(v["observed_at"] for v in r.json()), r.json()
                return {str(v["host"]): v for v in r.json() if v["name"] in names.values()}

            before = run(db, "list", "--json")
            assert before.code == 0, before.err
            assert {h: v["state"] for h, v in mine(before).items()} == {
                h.name: "shut off" for h in lab.hosts}

            lab.stop_daemon(hung)
            began = time.monotonic()
            flagged: Result | None = None
            while time.monotonic() - began < 60:
                r = run(db, "list", "--json")
                if mine(r)[hung.name]["state"] == "unknown":
                    flagged = r
                    break
                time.sleep(0.2)
            took = time.monotonic() - began
            assert flagged is not None, "the hung hypervisor was never flagged"
            print(f"\nhung hypervisor flagged {took:.1f}s after SIGSTOP")
            # Issue 12 asks for 10 s; libvirt keepalive (2 s x 3) closes the connection at
            # about 8 s. The bound here is generous; it would catch the old 27-28 s.
            assert took < 15, f"flagged only {took:.1f}s after the hypervisor hung"
            assert flagged.code == 1 and f"{hung.name}: host-unavailable" in flagged.err
            assert "keepalive" in flagged.err, flagged.err
            others = mine(flagged)
            assert all(others[h.name]["state"] == "shut off" for h in lab.hosts[1:])
            cached = run(db, "list", "--cached", "--json")  # the store was told too
            assert f"{hung.name}:" in cached.err

            lab.cont_daemon(hung)
            wait_for("the controller to reconnect",
                     lambda: mine(run(db, "list", "--json"))[hung.name]["state"] == "shut off")
    finally:
        lab.heal()
        for h in lab.hosts:
            with Host.open(h.uri) as conn:
                conn.undefine_domain(names[h.name])
