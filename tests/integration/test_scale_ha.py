"""HA with the owning controller dead (issue 15): three controllers on one PostgreSQL store
over an HA lab (BMCs, disk leases); the controller that holds the site is killed, then a
hypervisor loses power. The successor takes the site's lease, fences the host and restarts its
HA guests, each exactly once: counted as QEMU processes per -uuid and as QEMU starts in the
hypervisors' own logs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import LAB_NAME, REQUIRE_ENV, LabFixture, require_lab
from tests.integration.test_ha import down
from tests.integration.test_scale_out import Controllers, pg_url, wait_for
from tests.integration.ticking import (
    answering,
    make_guest,
    ns_of,
    qemus,
    remove_guests,
    start_attempts,
    tick_images_in,
)
from tests.unit.cli import run
from tests.unit.tools import require_tool
from virtfleet.ha.fence import FenceDevice, Power, power_off, power_on, power_status
from virtfleet.inventory.fleetfile import load_fleet
from virtfleet.lab.bmc import LabBmcs
from virtfleet.lab.lab import Lab

pytestmark = pytest.mark.integration

__all__ = ["pg_url"]  # the fixture, imported for this module's tests

SHA_LAB = f"{LAB_NAME[:18]}-sha"
ENV = {"VIRTFLEET_HA_GRACE": "3", "VIRTFLEET_HA_RETRY": "5"}


@pytest.fixture
def ha_lab() -> Iterator[LabFixture]:
    require_lab()
    require_tool("ipmi_sim", "openipmi", REQUIRE_ENV)
    require_tool("fence_ipmilan", "fence-agents", REQUIRE_ENV)
    require_tool("ipmitool", "ipmitool", REQUIRE_ENV)
    require_tool("virtlockd", "libvirt-daemon", REQUIRE_ENV)
    lab = Lab(SHA_LAB)
    try:
        lab.up(hosts=3, pods=1, leases=True)
        LabBmcs(lab).start()
        yield LabFixture(lab, lab.require_state())
    finally:
        down(lab)


def device(fx: LabFixture, name: str) -> FenceDevice:
    for _, _, hv in load_fleet(fx.fleet_file).hypervisors():
        if hv.name == name:
            return FenceDevice.of(hv)
    raise AssertionError(f"{name} is not in the lab's fleet file")


def test_a_host_lost_while_its_controller_is_dead_is_fenced_and_restarted_once(
        ha_lab: LabFixture, pg_url: str, tmp_path: Path) -> None:
    fx = ha_lab
    pod = fx.hosts[0].pod
    for args in (("apply", "-f", str(fx.fleet_file)), ("pool", "apply-pod", "--pod", pod),
                 ("ha", "enable", pod)):
        r = run(pg_url, *args)
        assert r.code == 0, r.err
    images = tick_images_in(Path(fx.state.state_dir) / "tick")
    victim = fx.hosts[1]
    names = ["sha-1", "sha-2"]
    uuids = {n: make_guest(fx, images, victim, n) for n in names}
    for i, n in enumerate(names):
        r = run(pg_url, "ha", "set", n, "--priority", str(300 - 100 * i))
        assert r.code == 0, r.err
    c = Controllers(pg_url, tmp_path, ("--cpu-ratio", "8"), ENV)
    try:
        for _ in range(3):
            c.start()
        site = next(iter(c.store.shard_names()))
        wait_for("a controller to hold the site and all three to beat", lambda: (
            site in c.holders() and len(c.store.members(alive_within=4.0)) == 3))
        owner = next(p for p in c.procs if p.pid == c.holders()[site])
        token = c.store.leases()[site].token
        since = time.time()
        owner.kill()  # SIGKILL: the site's controller is gone...
        owner.wait()
        killed = time.monotonic()
        assert power_off(device(fx, victim.name)).power is Power.OFF  # ...and a host fails
        gone = ns_of(victim)

        def restarted() -> bool:
            return all(len(q := qemus(u)) == 1 and q[0].netns != gone for u in uuids.values())

        wait_for("the successor to restart every HA guest elsewhere", restarted, 180)
        took = time.monotonic() - killed
        lease = c.store.leases()[site]
        assert lease.holder is not None and lease.token > token
        assert f":{owner.pid}:" not in lease.holder
        wait_for("the host to be recovered", lambda: (
            (h := c.store.ha_hosts().get(victim.name)) is not None
            and h.state == "recovered"), 60)
        [rec] = [r for r in c.store.recoveries(victim.name)
                 if r.started_at.timestamp() >= since - 1]
        kinds = [s.kind for s in rec.steps]
        assert "fenced" in kinds and kinds.index("fenced") < kinds.index("restarting")
        assert sorted(s.vm for s in rec.steps if s.kind == "running") == names
        for n in names:  # one QEMU start per guest on the other hosts: nothing twice
            attempts = [t for h in fx.hosts if h.name != victim.name
                        for t in start_attempts(h, n) if t >= since - 1]
            assert len(attempts) == 1, (n, attempts)
        time.sleep(5)  # a late second start by anyone would show now
        assert all(len(qemus(u)) == 1 for u in uuids.values())
        print(f"\nHA guests running again {took:.1f}s after their controller was killed and "
              f"their host lost power (lease 4s, grace 3s)")
    finally:
        c.stop()
        if power_status(device(fx, victim.name)).power is Power.OFF:
            power_on(device(fx, victim.name))  # its daemons start again, in the background
        wait_for("the victim to answer again", lambda: answering(fx.host(victim.name)))
        remove_guests(fx, names)
