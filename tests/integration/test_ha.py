"""HA restart with fencing, on a pod of three real lab hypervisors with simulated BMCs (ipmi_sim,
driven by the production fence_ipmilan), disk leases (virtlockd), `virtfleet serve` as the
controller, and ticking TCG guests.

Truth comes from the machine (tests/integration/ticking.py): the QEMU processes with each
guest's -uuid in every lab namespace, sampled every 50 ms, each one's exit timed to the
millisecond through its pidfd; every QEMU start on every host, from libvirt's own QEMU log;
and the ticks each guest prints on its serial console. In every scenario:

- never two QEMU processes for one UUID;
- order: every QEMU start for the guest on another host came after the old QEMU had exited
  (QEMU's image locking alone would keep the count at one in this lab, since all namespaces
  share one kernel: a count that passed without fencing would prove nothing);
- no disk deleted, and every HA guest running exactly once at the end, its stale copy gone
  from the host that failed once that host is back.

One lab and one controller serve every scenario; each heals the lab (power back on through
the BMC, stale copies reconciled) before the next.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import LAB_NAME, REQUIRE_ENV, LabFixture, require_lab
from tests.integration.ticking import (
    Timeline,
    answering,
    make_guest,
    ns_of,
    pod_dir,
    qemus,
    remove_guests,
    start_attempts,
    tick_images_in,
    ticks,
    wait_for,
)
from tests.unit.cli import run, serve_log, start_controller, wait_registered
from tests.unit.tools import require_tool
from virtfleet.errors import LabError
from virtfleet.ha.fence import FenceDevice, Power, power_off, power_on, power_status
from virtfleet.inventory.fleetfile import load_fleet
from virtfleet.inventory.store import Store
from virtfleet.lab import guest
from virtfleet.lab.bmc import LabBmcs
from virtfleet.lab.guests import outer_log
from virtfleet.lab.lab import Lab, lockspace
from virtfleet.lab.state import LabHost
from virtfleet.pids import pid_alive
from virtfleet.virt.host import Host

pytestmark = pytest.mark.integration

HA_LAB = f"{LAB_NAME[:20]}-ha"
# Short, so the scenarios are quick; the defaults are for real hypervisors (docs/ha.md).
CONTROLLER_ENV = {"VIRTFLEET_HA_GRACE": "3", "VIRTFLEET_HA_RETRY": "5"}


@dataclass
class HALab:
    fx: LabFixture
    db: Path
    pod: str
    images: guest.GuestImages
    controller: subprocess.Popen[str] | None = None
    started: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def lab(self) -> Lab:
        return self.fx.lab

    def host(self, index: int) -> LabHost:
        """Hypervisor `index` (0-based) as the lab records it now (a BMC power-on restarts its
        daemons, with new pids)."""
        fresh = self.lab.require_state()
        self.fx.state.hosts[:] = fresh.hosts
        return fresh.hosts[index]

    def device(self, host: LabHost) -> FenceDevice:
        for _, _, hv in load_fleet(self.fx.fleet_file).hypervisors():
            if hv.name == host.name:
                return FenceDevice.of(hv)
        raise AssertionError(f"{host.name} is not in the lab's fleet file")

    def start_controller(self) -> None:
        proc = start_controller(self.db, "--cpu-ratio", "8", interval=2.0, env=CONTROLLER_ENV)
        self.started.append(proc)
        wait_registered(self.db, proc)
        self.controller = proc

    def stop_controller(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)

    def store(self) -> Store:
        return Store(f"sqlite:///{self.db}")

    def ha_state(self, host: LabHost) -> str:
        with self.store() as s:
            rec = s.ha_hosts().get(host.name)
        return rec.state if rec is not None else "ok"

    def journal(self, host: LabHost, since: float = 0.0) -> list[Any]:
        """The steps of the host's latest recovery (begun after `since`, a time.time())."""
        with self.store() as s:
            recs = [r for r in s.recoveries(host.name) if r.started_at.timestamp() >= since]
        return list(recs[-1].steps) if recs else []

    def log(self) -> str:
        return serve_log(self.db).read_text(errors="replace")[-4000:]

    def why(self, host: LabHost) -> str:
        """What HA holds of `host` (its state and detail, its latest recovery's steps) and the
        controller's log, with every thread's stack: what a failed wait needs to be
        understood."""
        if self.controller is not None and self.controller.poll() is None:
            self.controller.send_signal(signal.SIGUSR1)
            time.sleep(1)
        with self.store() as s:
            rec = s.ha_hosts().get(host.name)
            recs = s.recoveries(host.name)
        state = f"{rec.state}: {rec.detail}" if rec is not None else "ok"
        steps = "\n".join(f"  {st.at:%H:%M:%S} {st.kind} {st.vm or ''} {st.host or ''} "
                          f"{st.detail}" for st in (recs[-1].steps if recs else []))
        log = serve_log(self.db).read_text(errors="replace")
        return f"HA of {host.name}: {state}\nits latest recovery:\n{steps}\n{log[-12000:]}"



@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HALab]:
    require_lab()
    require_tool("ipmi_sim", "openipmi", REQUIRE_ENV)
    require_tool("fence_ipmilan", "fence-agents", REQUIRE_ENV)
    require_tool("ipmitool", "ipmitool", REQUIRE_ENV)
    require_tool("virtlockd", "libvirt-daemon", REQUIRE_ENV)
    lab = Lab(HA_LAB)
    try:
        state = lab.up(hosts=3, pods=1, leases=True)
        LabBmcs(lab).start()
        fx = LabFixture(lab, lab.require_state())
        db = tmp_path_factory.mktemp("ha") / "store.db"
        assert run(db, "apply", "-f", str(fx.fleet_file)).code == 0
        pod = state.hosts[0].pod
        r = run(db, "pool", "apply-pod", "--pod", pod)
        assert r.code == 0, r.err
        r = run(db, "ha", "enable", pod)
        assert r.code == 0 and f"HA is now enabled in pod {pod}" in r.out, r.err
        images = tick_images_in(Path(state.state_dir) / "tick")
        h = HALab(fx, db, pod, images)
        h.start_controller()
        try:
            yield h
        finally:
            h.stop_controller()
    finally:
        down(lab)


def down(lab: Lab) -> None:
    """Take the lab down, waiting for a BMC's boot worker that still holds it (a power-on
    restarts the hypervisor's daemons in the background)."""
    deadline = time.monotonic() + 90
    while True:
        try:
            lab.down()
            return
        except LabError as exc:
            if "busy" not in exc.message or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


# ------------------------------------------------------------------ the scenario's frame


@dataclass
class Guests:
    uuids: dict[str, str]  # name -> uuid
    disks: dict[str, Path]  # name -> its disk on the pod's storage
    victim: LabHost


@contextmanager
def ha_guests(h: HALab, victim: LabHost, names: list[str]) -> Iterator[Guests]:
    """Ticking HA guests on `victim` (priority by order: the first highest); afterwards the
    lab is healed and the guests removed."""
    remove_guests(h.fx, names)
    uuids = {n: make_guest(h.fx, h.images, victim, n) for n in names}
    for i, n in enumerate(names):
        r = run(h.db, "ha", "set", n, "--priority", str(300 - 100 * i))
        assert r.code == 0, r.err
    disks = {n: pod_dir(h.fx, victim) / f"{n}.qcow2" for n in names}
    try:
        yield Guests(uuids, disks, victim)
    finally:
        heal(h)
        remove_guests(h.fx, names)


def heal(h: HALab) -> None:
    """Every hypervisor powered on, answering, and ok for HA (its stale copies reconciled)."""
    if h.controller is None or h.controller.poll() is not None:
        h.start_controller()  # a scenario that failed after killing it
    bmcs = LabBmcs(h.lab)
    if any(b.pid is None or not pid_alive(b.pid) for b in bmcs.recorded()):
        bmcs.start()  # a scenario that failed after killing a BMC
    powered = set()
    for i in range(3):
        host = h.host(i)
        if power_status(h.device(host)).power is Power.OFF:
            assert power_on(h.device(host)).power is Power.ON
            powered.add(host.name)
    for i in range(3):
        host = h.host(i)
        if host.name not in powered and not answering(host):
            # power on, libvirtd gone: a scenario that failed before bringing it back
            h.lab.restart_host(host.name)
        wait_for(lambda host=host: answering(host), 90, f"{host.name} to answer")
        wait_for(lambda host=host: h.ha_state(host) == "ok", 90,
                 lambda host=host: f"{host.name} to be ok for HA\n{h.why(host)}")


def running_on(uuid: str) -> list[int]:
    return [q.netns for q in qemus(uuid)]


def elsewhere(netns: list[int], victim_ns: int) -> bool:
    """One QEMU, not on the victim (one reading of the process table: a QEMU may exit
    between two)."""
    return len(netns) == 1 and netns[0] != victim_ns


def recovered(h: HALab, g: Guests, timeout: float = 150) -> dict[str, LabHost]:
    """Wait until each guest runs (once) on another host and ticks there; where each is."""
    victim_ns = ns_of(g.victim)
    hosts = {ns_of(h.host(i)): h.host(i) for i in range(3)}
    for n, u in g.uuids.items():
        wait_for(lambda u=u: elsewhere(running_on(u), victim_ns), timeout,
                 lambda n=n: f"{n} to run on another host\n{h.why(g.victim)}")
    out = {n: hosts[running_on(u)[0]] for n, u in g.uuids.items()}
    for n, host in out.items():
        wait_for(lambda n=n, host=host: len(ticks(outer_log(host, n))) >= 2, 60,
                 f"{n} to tick on {host.name}")
    return out


def assert_fenced_first(tl: Timeline, g: Guests, others: list[LabHost], since: float) -> None:
    """Never two QEMUs for a UUID; every start on another host after the old one had died."""
    victim_ns = ns_of(g.victim)
    for n, u in g.uuids.items():
        assert tl.doubles[u] == [], f"{n}: two QEMU processes at once: {tl.doubles[u][:2]}"
        old = [lf for lf in tl.order(u) if lf.netns == victim_ns]
        new = [lf for lf in tl.order(u) if lf.netns != victim_ns]
        assert len(old) == 1 and len(new) == 1, (n, tl.order(u))
        assert old[0].died is not None, f"{n}: the old QEMU never exited"
        assert old[0].died < new[0].first
        attempts = [t for host in others for t in start_attempts(host, n) if t >= since - 1]
        assert attempts, f"{n}: no QEMU start on the other hosts in libvirt's logs"
        assert all(t > old[0].died for t in attempts), (
            f"{n}: a QEMU was started elsewhere at {attempts} before the old one died at "
            f"{old[0].died}")


def assert_healed(h: HALab, g: Guests) -> None:
    """The failed host is back: its stale copies are gone, each guest defined and running
    exactly once, every disk still there."""
    for n, u in g.uuids.items():
        defined = []
        for i in range(3):
            host = h.host(i)
            with Host.open(host.uri, label=host.name) as conn:
                if conn.domain_by_uuid(u) is not None:
                    defined.append(host.name)
        assert len(defined) == 1 and defined[0] != g.victim.name, (n, defined)
        assert len(qemus(u)) == 1, n
        assert g.disks[n].is_file(), f"{g.disks[n]} was deleted"
    kinds = [s.kind for s in h.journal(g.victim)]
    assert kinds.count("stale-undefined") == len(g.uuids), kinds


def journal_order(h: HALab, victim: LabHost) -> list[str]:
    kinds = [s.kind for s in h.journal(victim)]
    assert "fenced" in kinds and "restarting" in kinds, kinds
    assert kinds.index("fenced") < kinds.index("restarting"), kinds
    return kinds


def others(h: HALab, victim: LabHost) -> list[LabHost]:
    return [h.host(i) for i in range(3) if h.host(i).name != victim.name]


# ------------------------------------------------------------------ the scenarios


def fail_and_recover(ha: HALab, victim: LabHost, names: list[str],
                     fail: Callable[[Guests], None],
                     check: Callable[[Guests], None] = lambda _g: None) -> list[str]:
    """Ticking HA guests on `victim`; `fail` breaks it; each guest must run again elsewhere,
    fenced first, and the victim, powered on again, lose its stale copies. Returns the kinds
    of the recovery's journal steps."""
    with ha_guests(ha, victim, names) as g:
        check(g)
        since = time.time()
        with Timeline(list(g.uuids.values())) as tl:
            fail(g)
            where = recovered(ha, g)
            wait_for(lambda: ha.ha_state(victim) == "recovered", 60, "recovered")
            heal(ha)  # the host comes back: watched, so a second start would show
        assert all(w.name != victim.name for w in where.values())
        assert_fenced_first(tl, g, others(ha, victim), since)
        kinds = journal_order(ha, victim)
        assert_healed(ha, g)
        return kinds


def test_power_loss_the_guests_run_again_on_the_other_hosts(ha: HALab) -> None:
    victim = ha.host(0)

    def leased(g: Guests) -> None:  # virtlockd holds a lease on each disk, by its path
        leases = lockspace(pod_dir(ha.fx, victim))
        for disk in g.disks.values():
            assert (leases / hashlib.sha256(str(disk).encode()).hexdigest()).exists()

    def power_loss(_g: Guests) -> None:  # libvirtd and the QEMUs die, the link drops
        assert power_off(ha.device(victim)).power is Power.OFF

    kinds = fail_and_recover(ha, victim, ["hap-1", "hap-2"], power_loss, leased)
    # The BMC said off: fenced at once, no power-off was needed.
    assert "fencing" not in kinds[:kinds.index("fenced")]
    # The higher priority first.
    assert [s.vm for s in ha.journal(victim) if s.kind == "restarting"] == ["hap-1", "hap-2"]


def test_libvirtd_killed_while_qemu_runs_is_fenced_before_anything_restarts(
        ha: HALab) -> None:
    victim = ha.host(1)

    def kill_libvirtd(_g: Guests) -> None:
        # Its QEMU runs on: the BMC says on, and nothing may start elsewhere until the grace
        # is over and the host is powered off.
        assert victim.libvirtd_pid is not None
        os.kill(victim.libvirtd_pid, signal.SIGKILL)

    kinds = fail_and_recover(ha, victim, ["hak-1"], kill_libvirtd)
    assert kinds.index("fencing") < kinds.index("fenced")


def test_network_partition_is_fenced_then_restarted(ha: HALab) -> None:
    victim = ha.host(2)

    def cut_link(_g: Guests) -> None:
        # QEMU keeps running, cut off; the controller loses the host, its BMC (on its own
        # network) says on.
        subprocess.run(["ip", "link", "set", "dev", victim.veth, "down"], check=True)

    kinds = fail_and_recover(ha, victim, ["han-1"], cut_link)
    assert kinds.index("fencing") < kinds.index("fenced")


def test_a_hung_host_is_fenced_then_restarted(ha: HALab) -> None:
    victim = ha.host(0)

    def hang(g: Guests) -> None:
        assert victim.libvirtd_pid is not None
        for pid in [victim.libvirtd_pid, *(q.pid for u in g.uuids.values()
                                            for q in qemus(u))]:
            os.kill(pid, signal.SIGSTOP)

    kinds = fail_and_recover(ha, victim, ["hah-1"], hang)
    assert kinds.index("fencing") < kinds.index("fenced")


def test_a_controller_killed_mid_recovery_finishes_it_and_starts_nothing_twice(
        ha: HALab) -> None:
    victim = ha.host(1)
    names = ["hac-1", "hac-2", "hac-3"]
    with ha_guests(ha, victim, names) as g:
        since = time.time()
        with Timeline(list(g.uuids.values())) as tl:
            assert power_off(ha.device(victim)).power is Power.OFF

            def midway() -> bool:  # the first restart is under way, two more to come
                return any(s.kind == "restarting" for s in ha.journal(victim, since))

            deadline = time.monotonic() + 120
            while not midway():
                assert time.monotonic() < deadline, ha.log()
                time.sleep(0.02)
            assert ha.controller is not None
            ha.controller.kill()  # SIGKILL: no chance to tidy up
            ha.controller.wait()
            with ha.store() as s:
                [rec] = [r for r in s.recoveries(victim.name)
                         if r.started_at.timestamp() >= since]
            assert rec.state == "running"
            killed_at = [st.kind for st in rec.steps]
            assert killed_at.count("running") < len(names), killed_at
            ha.start_controller()
            recovered(ha, g)
            wait_for(lambda: ha.ha_state(victim) == "recovered", 60, "recovered")
            heal(ha)
        assert_fenced_first(tl, g, others(ha, victim), since)
        # Nothing twice: one QEMU start per guest on the other hosts, whichever controller
        # made it; the journal names each guest running once.
        for n in names:
            attempts = [t for o in others(ha, victim) for t in start_attempts(o, n)
                        if t >= since - 1]
            assert len(attempts) == 1, (n, attempts)
        steps = ha.journal(victim)
        assert sorted(s.vm for s in steps if s.kind == "running") == names
        assert steps[-1].kind in ("stale-undefined", "done")
        assert_healed(ha, g)


def test_no_bmc_answer_means_the_guests_are_named_and_never_started_elsewhere(
        ha: HALab) -> None:
    victim = ha.host(2)
    with ha_guests(ha, victim, ["hab-1"]) as g:
        [u] = g.uuids.values()
        bmc = next(b for b in LabBmcs(ha.lab).recorded() if b.host == victim.name)
        assert bmc.pid is not None
        os.kill(bmc.pid, signal.SIGKILL)  # the BMC is gone (its own power, its own NIC)
        since = time.time()
        with Timeline([u]) as tl:
            assert victim.libvirtd_pid is not None
            os.kill(victim.libvirtd_pid, signal.SIGKILL)
            # Suspect; the BMC does not answer: fencing fails, and is tried again.
            wait_for(lambda: any(s.kind == "fence-failed" and "(tried 2 times)" in s.detail
                                 for s in ha.journal(victim, since)),
                     120, lambda: f"two failed tries\n{ha.why(victim)}")
            assert running_on(u) == [ns_of(victim)]  # still only where it was
            r = run(ha.db, "ha", "status", "--json")
            vm = next(v for v in r.json()["vms"] if v["vm"] == "hab-1")
            assert vm["state"] == "unknown" and "did not answer" in vm["detail"], vm
            # The operator brings libvirtd back (the host never lost power), then the BMC.
            ha.lab.restart_host(victim.name)
            wait_for(lambda: ha.ha_state(victim) == "ok", 60, "ok again")
            LabBmcs(ha.lab).start()
        assert tl.doubles[u] == [] and len(tl.order(u)) == 1  # never a second QEMU anywhere
        assert [s.kind for s in ha.journal(victim, since)][-1] == "back"
        assert all(start_attempts(o, "hab-1") == [] for o in others(ha, victim))


def test_a_fleet_file_that_drops_a_bmc_is_refused_while_ha_is_on(ha: HALab,
                                                                   tmp_path: Path) -> None:
    data = yaml.safe_load(ha.fx.fleet_file.read_text())
    data["sites"][0]["pods"][0]["hypervisors"][0].pop("bmc")
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    r = run(ha.db, "apply", "-f", str(path))
    assert r.code == 2 and r.err.count("\n") == 1, r.err
    assert f"{ha.host(0).name}: bmc: missing: HA is enabled in pod {ha.pod}" in r.err
    with ha.store() as s:
        assert ha.host(0).name in s.hypervisor_bmcs()
