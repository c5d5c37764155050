"""`make demo`'s script on a fresh lab of its own: it must end with running linked clones in the
fleet view, each on a hypervisor of the pod, and leave nothing behind once its lab is down."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import LAB_NAME, require_lab
from tests.unit.cli import run
from virtfleet.lab import netns
from virtfleet.lab.lab import Lab

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEMO_LAB = f"{LAB_NAME[:19]}-demo"  # beside the session lab, never colliding with it


def test_make_demo_ends_with_running_linked_clones(tmp_path: Path) -> None:
    require_lab()
    cli = Path(sys.executable).with_name("virtfleet")  # the script runs the installed CLI
    if not cli.is_file():
        pytest.skip(f"{cli} is not installed (make deps)")
    db = tmp_path / "store.db"
    env = {**os.environ, "VIRTFLEET": str(cli), "VIRTFLEET_DB": str(db),
           "VIRTFLEET_DEMO_LAB": DEMO_LAB}
    lab = Lab(DEMO_LAB)
    try:
        p = subprocess.run(["bash", str(ROOT / "scripts/demo.sh")], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=1800, check=False)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        st = lab.require_state()
        pod = f"{DEMO_LAB}-pod1"
        pod_hosts = {h.name for h in st.hosts if h.pod == pod}
        # The fleet view it printed, checked against the store and hypervisors it left.
        vms = {v["name"]: v for v in run(db, "list", "--json").json()}
        clones = [vms[f"demo-{i}"] for i in (1, 2, 3)]
        assert all(c["state"] == "running" and c["host"] in pod_hosts for c in clones)
        assert len({c["host"] for c in clones}) == 2  # across the pod, not piled on one host
        assert vms["demo-tpl"]["state"] == "shut off"
        fleet_view = p.stdout.rsplit("$ virtfleet list", 1)[1]
        for c in clones:
            assert re.search(rf"{c['host']}\s+\d+\s+{c['name']}\s+running", fleet_view), \
                fleet_view
        disk = Path(st.pods[pod]) / "demo-1.qcow2"
        info = subprocess.run(["qemu-img", "info", "-U", str(disk)], capture_output=True,
                              text=True, check=True).stdout
        assert f"backing file: {Path(st.pods[pod]) / 'demo-tpl.qcow2'}" in info  # linked
        snaps = run(db, "snapshot", "list", "demo-2", "--json")
        assert snaps.code == 0 and "before-deploy" in snaps.out, snaps.err
        leases = run(db, "net", "dhcp-leases", "default", "--pod", pod, "--json").json()
        assert {x["hostname"] for x in leases} >= {"demo-1", "demo-2", "demo-3"}
    finally:
        lab.down()
    assert netns.owned_namespaces(lab.names) == [] and not lab.state_dir.exists()
