"""The controller's HA monitor on test-driver hypervisors: fencing decisions, restarts through
the scheduler, the journal, a resumed recovery and a returning host.

The BMCs and the controller's liveness are the two things a unit test plays itself (a scripted
`Fencer` and `Liveness`, the monitor's own protocols); the hypervisors are libvirt's test
driver. Real BMCs, real QEMU and real power losses are tests/integration/test_ha.py's.

Pod or-pod1 (shared directory /srv/or-pod1): hv1 fails; it runs web01 (disk on the pod's
storage, NIC on network "prod") and local01 (disk on a local pool). hv2 can take web01; hv3
has no network "prod".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from virtfleet.config import HATimings
from virtfleet.errors import InvalidInput
from virtfleet.fleet.ha import HAService, MarkRequest
from virtfleet.ha.fence import Power, PowerResult
from virtfleet.ha.journal import Journal, Planned
from virtfleet.ha.monitor import Monitor
from virtfleet.ha.states import State
from virtfleet.inventory.claims import ClaimRequest
from virtfleet.inventory.fleetfile import load_fleet, parse_fleet
from virtfleet.inventory.ha import HAHost, RecoveryStep
from virtfleet.inventory.records import HostRecord, Made
from virtfleet.inventory.store import Store
from virtfleet.virt import ha as vha
from virtfleet.virt import storage
from virtfleet.virt.fanout import ConnectionPool

from .nodes import node_uri

WEB01 = "3f1c2b7a-6a55-4c5e-9d7e-0b6f6a1d2c01"
LOCAL01 = "3f1c2b7a-6a55-4c5e-9d7e-0b6f6a1d2c02"
T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


@dataclass
class Bmcs:
    """Scripted BMCs: each host's power, and every call made."""

    power: dict[str, Power] = field(default_factory=dict)
    off_fails: set[str] = field(default_factory=set)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def has_bmc(self, host: str) -> bool:
        return host in self.power

    def _result(self, host: str, action: str, power: Power, message: str) -> PowerResult:
        return PowerResult(host=host, agent="fence_ipmilan", action=action,  # type: ignore[arg-type]
                           power=power, message=message, seconds=0.0,
                           confirmed=power is not Power.ERROR)

    def status(self, host: str) -> PowerResult:
        self.calls.append((host, "status"))
        p = self.power.get(host, Power.ERROR)
        return self._result(host, "status", p, f"Status: {p.value.upper()}")

    def off(self, host: str) -> PowerResult:
        self.calls.append((host, "off"))
        if host in self.off_fails:
            return self._result(host, "off", Power.ERROR, "the BMC refused the session")
        self.power[host] = Power.OFF
        return self._result(host, "off", Power.OFF, "Success: Powered OFF")


@dataclass
class Lost:
    """The controller's view: which hosts do not answer, since when."""

    hosts: dict[str, datetime] = field(default_factory=dict)

    def lost(self) -> dict[str, datetime]:
        return dict(self.hosts)

    def resync(self, host: HostRecord) -> None:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Env:
    store: Store
    pool: ConnectionPool
    bmcs: Bmcs
    lost: Lost
    clock: Clock
    monitor: Monitor

    def host(self, name: str) -> HostRecord:
        [r] = self.store.hypervisors(host=name)
        return r

    def copy(self, host: str, uuid: str) -> vha.Copy | None:
        return vha.find(self.pool.get(self.host(host)), uuid, 5)

    def state(self, host: str) -> str:
        return self.store.ha_hosts()[host].state

    def kinds(self, host: str = "hv1") -> list[str]:
        [rec] = self.store.recoveries(host)[-1:]
        return [s.kind for s in rec.steps]

    def fresh_monitor(self) -> Monitor:
        """A new controller's monitor on the same store (the old one was killed)."""
        return Monitor(self.store, self.pool, self.lost, self.bmcs,
                       timings=HATimings(grace=10, retry=30), clock=self.clock)


FLEET_BMC = {"agent": "ipmilan", "username": "fence", "password_env": "NO_SUCH_PASSWORD"}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    hosts = [("hv1", "migrate-source.xml"), ("hv2", "ha-target.xml"),
             ("hv3", "migrate-nonet.xml")]
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump({"sites": [{"name": "oregon", "pods": [
        {"name": "or-pod1", "storage": {"type": "dir", "target": "/srv/or-pod1"},
         "hypervisors": [{"name": n, "uri": node_uri(tmp_path, f, f"{n}.xml"),
                          "bmc": {**FLEET_BMC, "address": f"127.0.0.{i + 1}"}}
                         for i, (n, f) in enumerate(hosts)]}]}]}))
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.apply(load_fleet(fleet))
    pool = ConnectionPool()
    for r in store.hypervisors():
        store.replace_host_domains(r.name, pool.get(r).list_domains(), T0)
    with HAService(store, pool) as service:
        service.mark(MarkRequest(vm="web01", priority=200))
        service.mark(MarkRequest(vm="local01", priority=100))
    store.enable_ha("or-pod1", T0, "test", 1)
    bmcs = Bmcs({"hv1": Power.ON, "hv2": Power.ON, "hv3": Power.ON})
    lost, clock = Lost(), Clock()
    monitor = Monitor(store, pool, lost, bmcs, timings=HATimings(grace=10, retry=30),
                      clock=clock)
    yield Env(store, pool, bmcs, lost, clock, monitor)
    monitor.close()
    pool.close()
    store.close()


def power_loss(env: Env) -> None:
    """hv1 loses its power: its QEMUs die, the controller stops hearing from it."""
    h1 = env.pool.get(env.host("hv1"))
    for d in h1.list_domains():
        if d.state == "running":
            h1.destroy_domain(d.name)
    env.bmcs.power["hv1"] = Power.OFF
    env.lost.hosts["hv1"] = env.clock()


def journal_restarting_on_hv2(env: Env) -> None:
    """What a controller killed mid-recovery left journaled: hv1 suspected and fenced, web01
    planned and being restarted on hv2."""
    j = Journal.begin(env.store, "hv1", T0)
    j.add(RecoveryStep("suspect", T0), RecoveryStep("fenced", T0))
    j.plan([Planned("web01", WEB01, 200, True)], T0)
    j.add(RecoveryStep("restarting", T0, vm="web01", uuid=WEB01, host="hv2", priority=200))
    env.store.set_ha_host(HAHost("hv1", "restarting", T0, T0, "restarting", T0))


def shown(env: Env) -> dict[str, tuple[str, str]]:
    """`ha status`'s state and detail of each HA VM."""
    with HAService(env.store, env.pool) as service:
        return {v.vm: (v.state, v.detail) for v in service.status().vms}


# ------------------------------------------------------------------ restarts


def test_power_off_at_the_bmc_fences_at_once_and_the_vm_runs_again_on_the_host_that_fits(
        env: Env) -> None:
    power_loss(env)
    env.monitor.run_once()
    on2 = env.copy("hv2", WEB01)
    assert on2 is not None and on2.state == "running" and on2.persistent
    assert not on2.autostart  # a host that comes back must not start it by itself
    assert env.copy("hv3", WEB01) is None  # hv3 lacks its network
    assert ("hv1", "off") not in env.bmcs.calls  # the BMC said off: no power-off needed
    # local01's disk is on hv1's local pool: no other host sees it, so it stays down, named.
    assert env.state("hv1") == State.RESTARTING
    detail = env.store.ha_hosts()["hv1"].detail
    assert "1 of 2 HA VM(s) not running yet: local01" in detail and "cannot see it" in detail
    assert env.kinds() == ["suspect", "power", "fenced", "planned", "planned", "restarting",
                           "running"]
    [rec] = env.store.recoveries("hv1")
    restarting = next(s for s in rec.steps if s.kind == "restarting")
    assert (restarting.vm, restarting.host, restarting.priority) == ("web01", "hv2", 200)
    # The store sees it where it runs, and the claim made for it is gone.
    assert {v.host for v in env.store.fleet_vms(name="web01")} == {"hv2"}
    assert [v.host for v in env.store.ha_vms(uuid=WEB01)] == ["hv2"]
    assert env.store.placement_claims() == []


def test_power_on_gets_the_grace_period_then_a_confirmed_power_off(env: Env) -> None:
    env.lost.hosts["hv1"] = env.clock()  # libvirtd gone; the host (and its QEMUs) still on
    env.monitor.run_once()
    assert env.state("hv1") == State.SUSPECT
    assert "waiting" in env.store.ha_hosts()["hv1"].detail
    assert ("hv1", "off") not in env.bmcs.calls
    assert env.copy("hv2", WEB01) is None
    # Regression (new-user trial): its HA VMs were shown "down" while their QEMUs ran on.
    assert shown(env)["web01"] == ("unknown", "its host is suspect: " +
                                   env.store.ha_hosts()["hv1"].detail)
    env.clock.advance(5)
    env.monitor.run_once()
    assert ("hv1", "off") not in env.bmcs.calls and env.copy("hv2", WEB01) is None
    env.clock.advance(5)
    env.monitor.run_once()
    assert env.bmcs.calls.count(("hv1", "off")) == 1
    # A power-off through the BMC kills the QEMUs; the test driver's stand in for them here.
    on2 = env.copy("hv2", WEB01)
    assert on2 is not None and on2.state == "running"
    assert env.kinds()[:4] == ["suspect", "power", "fencing", "fenced"]
    assert shown(env)["local01"][0] == "down"  # powered off, confirmed; not restartable


def test_a_failed_fence_restarts_nothing_and_names_the_vms(env: Env) -> None:
    env.bmcs.off_fails.add("hv1")
    env.lost.hosts["hv1"] = env.clock() - timedelta(seconds=60)
    env.monitor.run_once()
    assert env.bmcs.calls.count(("hv1", "off")) == 1
    assert env.state("hv1") == State.FENCE_FAILED
    assert "fencing failed: the BMC refused the session" in env.store.ha_hosts()["hv1"].detail
    assert env.copy("hv2", WEB01) is None and env.copy("hv3", WEB01) is None
    down = shown(env)  # not fenced: its QEMUs may run on, so not "down"
    assert down["web01"][0] == "unknown" and "fence-failed" in down["web01"][1]
    # Not tried again before the retry period; then tried, and this time it works.
    env.clock.advance(10)
    env.monitor.run_once()
    assert env.bmcs.calls.count(("hv1", "off")) == 1
    env.bmcs.off_fails.clear()
    env.clock.advance(25)
    env.monitor.run_once()
    assert env.bmcs.calls.count(("hv1", "off")) == 2
    assert env.copy("hv2", WEB01) is not None


def test_a_host_without_a_bmc_is_never_fenced_and_its_vms_stay_down(env: Env) -> None:
    del env.bmcs.power["hv1"]
    # The fleet file loses hv1's BMC (an operator's edit): refused while HA is on in its pod.
    data = env.store.fleet().model_dump(mode="json", exclude_defaults=True)
    data["sites"][0]["pods"][0]["hypervisors"][0].pop("bmc")
    with pytest.raises(InvalidInput) as info:
        env.store.apply(parse_fleet(data))
    assert info.value.message.startswith("hv1: bmc: missing: HA is enabled in pod or-pod1")
    assert "hv1" in env.store.hypervisor_bmcs()
    # Taken away with HA off, then HA turned on anyway (by an older virtfleet, say).
    env.store.disable_ha("or-pod1")
    plan = env.store.apply(parse_fleet(data))
    assert ("hypervisor", "hv1", "bmc: ipmilan 127.0.0.1 -> none") in plan.changed
    env.store.enable_ha("or-pod1", T0, "test", 1)
    power_loss(env)
    for _ in range(3):
        env.monitor.run_once()
        env.clock.advance(60)
    assert env.bmcs.calls == []
    assert env.state("hv1") == State.FENCE_FAILED
    assert "no BMC configured" in env.store.ha_hosts()["hv1"].detail
    assert env.copy("hv2", WEB01) is None and env.copy("hv3", WEB01) is None


def test_a_vm_shut_off_at_its_last_sighting_stays_off(env: Env) -> None:
    h1 = env.pool.get(env.host("hv1"))
    h1.destroy_domain("web01")
    env.store.replace_host_domains("hv1", h1.list_domains(), T0)
    power_loss(env)
    env.monitor.run_once()
    assert env.copy("hv2", WEB01) is None
    [rec] = env.store.recoveries("hv1")
    planned = {s.vm: s.detail for s in rec.steps if s.kind == "planned"}
    assert planned["web01"] == "not restarted: it was shut off at its last sighting"


def test_a_vm_the_store_last_saw_on_an_unfenced_unreachable_host_is_held(env: Env) -> None:
    # web01 was also seen on hv3 (say, a migration was landing there); hv3 stops answering
    # too, unfenced: web01 may run there, so it is not started anywhere.
    env.store.upsert_domain("hv3", env.store.fleet_vms(name="web01")[0].domain, T0)
    power_loss(env)
    env.lost.hosts["hv3"] = env.clock()
    env.monitor.run_once()
    assert env.copy("hv2", WEB01) is None
    assert "web01: it may still run on hv3, which does not answer and was not fenced" in \
        env.store.ha_hosts()["hv1"].detail


def test_a_migration_of_the_vm_in_the_journal_holds_it_while_its_target_is_silent(
        env: Env) -> None:
    # A migration of web01 to hv3 was under way (its CLI's journal entry is still there)
    # when hv1 died, and hv3 does not answer: web01 may have landed there.
    from virtfleet.provision.journal import begin

    op = begin(env.store, "migrate", "web01 hv1->hv3")
    op.made(Made("migration", "hv1", f"web01/{WEB01}>hv3>"))
    power_loss(env)
    env.lost.hosts["hv3"] = env.clock()
    env.monitor.run_once()
    assert env.copy("hv2", WEB01) is None
    assert "web01: it may still run on hv3" in env.store.ha_hosts()["hv1"].detail


def test_an_unreachable_host_that_never_had_the_vm_does_not_hold_it(env: Env) -> None:
    power_loss(env)
    env.lost.hosts["hv3"] = env.clock()  # down too, but web01 was never there
    env.monitor.run_once()
    on2 = env.copy("hv2", WEB01)
    assert on2 is not None and on2.state == "running"


def test_fencing_is_held_while_most_of_the_pod_is_unreachable(env: Env) -> None:
    env.lost.hosts.update({"hv1": T0 - timedelta(seconds=60),
                           "hv2": T0 - timedelta(seconds=60)})
    env.monitor.run_once()
    assert ("hv1", "off") not in env.bmcs.calls and ("hv2", "off") not in env.bmcs.calls
    assert "fencing held: 2 of 3" in env.store.ha_hosts()["hv1"].detail


def test_nothing_is_fenced_in_a_pod_without_ha(env: Env) -> None:
    env.store.disable_ha("or-pod1")
    power_loss(env)
    env.monitor.run_once()
    assert env.bmcs.calls == []
    assert env.store.recoveries() == []  # nothing done, nothing journaled
    assert "HA is disabled" in env.store.ha_hosts()["hv1"].detail


# ------------------------------------------------------------------ never twice


def test_a_killed_controllers_recovery_is_finished_without_starting_anything_twice(
        env: Env) -> None:
    """The killed controller had journaled 'restarting web01 on hv2', defined it there and
    started it. The next one finds it running and only records that."""
    power_loss(env)
    xml = env.store.ha_vms(uuid=WEB01)[0].definition
    h2 = env.pool.get(env.host("hv2"))
    vha.define(h2, xml, 5)
    vha.start(h2, WEB01, 5)
    journal_restarting_on_hv2(env)
    monitor = env.fresh_monitor()
    monitor.run_once()
    monitor.close()
    assert env.state("hv1") == State.RECOVERED
    [rec] = env.store.recoveries("hv1")
    assert [s.kind for s in rec.steps][-2:] == ["running", "done"]
    assert rec.steps[-2].detail == "found running"
    assert env.bmcs.calls == []  # it was fenced already: not asked or powered off again
    # Had it been started a second time, the test driver would have refused; and it is on no
    # other host.
    assert env.copy("hv3", WEB01) is None


def test_a_definition_left_by_a_killed_controller_is_started_where_it_is(env: Env) -> None:
    power_loss(env)
    xml = env.store.ha_vms(uuid=WEB01)[0].definition
    vha.define(env.pool.get(env.host("hv2")), xml, 5)  # defined, then the controller died
    env.store.set_ha_host(HAHost("hv1", "fenced", T0, T0, "powered off through its BMC", T0))
    monitor = env.fresh_monitor()
    monitor.run_once()
    monitor.close()
    on2 = env.copy("hv2", WEB01)
    assert on2 is not None and on2.state == "running"
    [rec] = env.store.recoveries("hv1")
    step = next(s for s in rec.steps if s.kind == "restarting")
    assert (step.host, step.detail) == ("hv2", "defined there already")


def test_a_claim_left_by_a_controller_killed_before_defining_does_not_block_the_restart(
        env: Env) -> None:
    """The killed controller had claimed room for web01 on hv2 and journaled 'restarting web01
    on hv2', then died before defining it. Its claim would refuse the same VM's claim there
    for minutes (the CI failure of issue 17); the next controller gives it back and places
    web01 at its first pass."""
    power_loss(env)
    env.store.claim_placements([ClaimRequest("hv2", "web01", 1, 128, 64, 65536)],
                               ttl=timedelta(minutes=10))
    journal_restarting_on_hv2(env)
    monitor = env.fresh_monitor()
    monitor.run_once()
    monitor.close()
    on2 = env.copy("hv2", WEB01)
    assert on2 is not None and on2.state == "running", env.store.ha_hosts()["hv1"].detail
    assert env.state("hv1") == State.RECOVERED
    assert env.store.placement_claims() == []


def test_a_vm_that_cannot_be_placed_keeps_saying_why_while_it_waits(env: Env) -> None:
    """Between retries the host's detail still names the reason, not only 'trying again'."""
    power_loss(env)
    env.lost.hosts["hv2"] = env.clock()  # the one host that could take web01 is gone too
    env.store.set_ha_host(HAHost("hv2", "suspect", T0, T0, "not answering", T0))
    env.bmcs.power["hv2"] = Power.ON
    env.monitor.run_once()
    first = env.store.ha_hosts()["hv1"].detail
    env.clock.advance(1)  # within the retry pause
    env.monitor.run_once()
    later = env.store.ha_hosts()["hv1"].detail
    reason = first.split("web01: ", 1)[1][:30]  # "no hypervisor in pod or-pod1 ..."
    assert "trying again" not in reason, first
    assert f"web01: {reason}" in later and "trying again shortly" in later, (first, later)


def test_a_returning_host_loses_its_stale_copies_but_keeps_every_disk(env: Env) -> None:
    power_loss(env)
    env.monitor.run_once()
    assert env.copy("hv2", WEB01) is not None
    h1 = env.pool.get(env.host("hv1"))
    volumes = sorted(v.name for v in storage.volumes(h1, "or-pod1-shared"))
    # Power comes back: hv1 answers again, its copies shut off (autostart was off).
    env.bmcs.power["hv1"] = Power.ON
    del env.lost.hosts["hv1"]
    env.monitor.run_once()
    env.monitor.run_once()
    assert env.copy("hv1", WEB01) is None  # the stale copy of what runs on hv2 is gone
    # local01 was never restarted elsewhere: hv1 is its only place, and it runs there again.
    local = env.copy("hv1", LOCAL01)
    assert local is not None and local.state == "running"
    assert env.state("hv1") == State.OK
    kinds = env.kinds()
    assert "stale-undefined" in kinds and kinds.count("done") == 1
    assert sorted(v.name for v in storage.volumes(h1, "or-pod1-shared")) == volumes
    assert "web01.qcow2" in volumes


def test_a_bmc_that_never_answers_is_tried_again_and_counted_on_one_journal_line(
        env: Env) -> None:
    del env.bmcs.power["hv1"]  # configured, but it does not answer
    env.lost.hosts["hv1"] = env.clock()
    for _ in range(3):
        env.monitor.run_once()
        env.clock.advance(31)
    assert env.bmcs.calls.count(("hv1", "status")) == 3
    assert ("hv1", "off") not in env.bmcs.calls
    [rec] = env.store.recoveries("hv1")
    failed = [s for s in rec.steps if s.kind == "fence-failed"]
    assert len(failed) == 1 and failed[0].detail.endswith("(tried 3 times)"), failed
    assert "its BMC did not answer a status call" in failed[0].detail
    assert env.copy("hv2", WEB01) is None and env.copy("hv3", WEB01) is None


def test_what_ha_does_is_told_once_each_for_the_events_stream(env: Env) -> None:
    told: list[tuple[str, str, str | None, dict[str, object]]] = []
    monitor = Monitor(env.store, env.pool, env.lost, env.bmcs,
                      timings=HATimings(grace=10, retry=30), clock=env.clock,
                      tell=lambda kind, host, vm, data: told.append((kind, host, vm, data)))
    try:
        power_loss(env)
        monitor.run_once()
        monitor.run_once()  # local01 is still pending: web01's restart is not told again
        kinds = [(k, h, vm, d.get("state") or d.get("action")) for k, h, vm, d in told]
        assert kinds[0] == ("host.suspect", "hv1", None, "suspect")
        assert ("ha.action", "hv1", None, "fenced") in kinds
        restarts = [(vm, d["on"]) for k, _h, vm, d in told if d.get("action") == "restart"]
        assert restarts == [("web01", "hv2")]
        assert kinds.index(("ha.action", "hv1", None, "fenced")) < kinds.index(
            ("ha.action", "hv1", "web01", "restart"))
    finally:
        monitor.close()


def test_a_fence_that_fails_is_told_as_a_host_of_unknown_power(env: Env) -> None:
    told: list[str] = []
    monitor = Monitor(env.store, env.pool, env.lost, env.bmcs,
                      timings=HATimings(grace=10, retry=30), clock=env.clock,
                      tell=lambda kind, host, vm, data: told.append(kind))
    try:
        env.bmcs.off_fails.add("hv1")
        env.lost.hosts["hv1"] = env.clock() - timedelta(seconds=60)
        monitor.run_once()
        assert told[0] == "host.suspect" and told[-1] == "host.unknown"
    finally:
        monitor.close()
