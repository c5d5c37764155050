"""Shard leases and fencing tokens (inventory/leases.py, inventory/fencing.py) and the keeper
that balances them (controller/shards.py), on SQLite and PostgreSQL (store_url fixture)."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, update

from tests.unit.test_store import BASE, T0, T1, dom, uuid_of
from virtfleet.config import lease_ttl
from virtfleet.controller.service import Controller
from virtfleet.controller.shards import FORGET_AFTER_LEASES, LeaseCheckedFencer, ShardKeeper
from virtfleet.errors import InvalidInput, StaleLease
from virtfleet.ha.fence import Power, PowerResult
from virtfleet.inventory import tables as t
from virtfleet.inventory.fencing import ShardTokens
from virtfleet.inventory.fleetfile import parse_fleet
from virtfleet.inventory.ha import HAHost, Recovery, RecoveryStep
from virtfleet.inventory.records import ControllerRecord, HostStatus
from virtfleet.inventory.store import Store

TTL = 60.0


@pytest.fixture
def base(store_url: str) -> Iterator[Store]:
    store = Store(store_url)
    try:
        store.apply(parse_fleet(copy.deepcopy(BASE)))
        yield store
    finally:
        store.close()


def expire(store_url: str, shard: str) -> None:
    """Make a lease's time run out without waiting (as a paused holder would see it)."""
    engine = create_engine(store_url)
    try:
        with engine.begin() as conn:
            conn.execute(update(t.shard_leases).where(t.shard_leases.c.shard == shard)
                         .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    finally:
        engine.dispose()


def holding(store: Store, holder: str, shard: str) -> tuple[Store, ShardTokens]:
    tokens = ShardTokens(holder)
    lease = store.claim_lease(holder, shard, TTL)
    assert lease is not None and lease.holder == holder
    tokens.set(shard, lease.token)
    return store.fenced(tokens), tokens


def rec(pid: int) -> ControllerRecord:
    return ControllerRecord(url=f"unix:/run/vf/{pid}.sock", token=f"tok{pid}", pid=pid,
                            hostname="box", started_at=T0, heartbeat_at=T0)


def test_a_lease_changes_hands_only_when_free_and_each_time_under_a_higher_token(
        base: Store, store_url: str) -> None:
    first = base.claim_lease("a", "oregon", TTL)
    assert first is not None and first.token == 1
    assert base.claim_lease("b", "oregon", TTL) is None  # held and unexpired
    expire(store_url, "oregon")
    second = base.claim_lease("b", "oregon", TTL)
    assert second is not None and (second.holder, second.token) == ("b", 2)
    assert base.release_lease("a", "oregon", 1) is False  # not a's any more
    assert base.release_lease("b", "oregon", 2) is True
    third = base.claim_lease("a", "oregon", TTL)
    assert third is not None and third.token == 3
    assert base.leases()["oregon"].holder == "a"
    with pytest.raises(InvalidInput, match="ttl"):
        base.claim_lease("a", "texas", 0)


def test_a_renewal_keeps_the_token_and_an_expired_lease_is_not_renewed(
        base: Store, store_url: str) -> None:
    base.join("a", rec(1))
    lease = base.claim_lease("a", "oregon", TTL)
    assert lease is not None
    kept, member = base.renew_leases("a", {"oregon": lease.token}, TTL)
    assert member and kept["oregon"].token == lease.token
    expire(store_url, "oregon")
    kept, member = base.renew_leases("a", {"oregon": lease.token}, TTL)
    assert member and kept == {}  # it must be claimed again, under a new token
    again = base.claim_lease("a", "oregon", TTL)
    assert again is not None and again.token == lease.token + 1
    kept, member = base.renew_leases("nobody", {}, TTL)
    assert not member


def test_writes_under_a_stale_token_are_refused_and_leave_nothing(
        base: Store, store_url: str) -> None:
    old, _ = holding(base, "a", "oregon")
    old.replace_many({"hv1": [dom("web1", uuid_of(1))]}, T0)  # its own lease: written
    expire(store_url, "oregon")
    new, _ = holding(base, "b", "oregon")
    with pytest.raises(StaleLease, match=r"site 'oregon': fencing token 1 is stale \(the "
                       r"lease is at token 2, held by b\)"):
        old.replace_many({"hv1": [dom("web2", uuid_of(2))]}, T1)
    for write in (lambda: old.upsert_domain("hv1", dom("web3", uuid_of(3)), T1),
                  lambda: old.delete_domain("hv1", uuid_of(1)),
                  lambda: old.set_host_status(HostStatus("hv1", False, "lost", T1)),
                  lambda: old.set_ha_host(HAHost("hv1", "fencing", T1, T1, "x", T1))):
        with pytest.raises(StaleLease):
            write()
    assert [v.domain.name for v in base.fleet_vms(host="hv1")] == ["web1"]
    assert base.ha_hosts() == {}
    assert all(s.reachable for s in base.host_statuses() if s.host == "hv1")
    new.replace_many({"hv1": [dom("web2", uuid_of(2))]}, T1)  # the holder's: written
    assert [v.domain.name for v in base.fleet_vms(host="hv1")] == ["web2"]
    # Another site's write through the same fenced store: no lease there, refused too.
    with pytest.raises(StaleLease, match="site 'texas': this controller holds no lease"):
        new.upsert_domain("hv4", dom("db1", uuid_of(4)), T1)
    base.upsert_domain("hv4", dom("db1", uuid_of(4)), T1)  # an unfenced store (the CLI) writes


def test_an_expired_lease_refuses_its_holders_writes_even_if_nobody_took_it(
        base: Store, store_url: str) -> None:
    mine, _ = holding(base, "a", "oregon")
    expire(store_url, "oregon")
    with pytest.raises(StaleLease, match="expired"):
        mine.set_host_status(HostStatus("hv1", False, "lost", T1))
    with pytest.raises(StaleLease):
        mine.check_lease(["hv1"])


def test_recovery_journal_steps_are_fenced_by_the_recovering_hosts_site(
        base: Store, store_url: str) -> None:
    mine, _ = holding(base, "a", "oregon")
    step = RecoveryStep("suspect", T0, detail="lost")
    mine.begin_recovery(Recovery(id="r1", host="hv1", state="running", started_at=T0,
                                 updated_at=T0, hostname="box", pid=1, steps=(step,)))
    expire(store_url, "oregon")
    holding(base, "b", "oregon")
    with pytest.raises(StaleLease):
        mine.record_recovery("r1", [step, RecoveryStep("fenced", T1)], "running", T1)
    [only] = base.recoveries("hv1")
    assert [s.kind for s in only.steps] == ["suspect"]


def test_holders_name_the_live_controller_of_each_leased_site(base: Store,
                                                              store_url: str) -> None:
    base.join("a", rec(1))
    base.join("b", rec(2), ["texas"])
    base.claim_lease("a", "oregon", TTL)
    base.claim_lease("b", "texas", TTL)
    found = base.holders(alive_within=TTL)
    assert {s: m.record.pid for s, m in found.items()} == {"oregon": 1, "texas": 2}
    assert [m.sites for m in base.members()] == [(), ("texas",)]
    expire(store_url, "texas")
    assert set(base.holders(alive_within=TTL)) == {"oregon"}
    base.leave("a")
    assert set(base.holders(alive_within=TTL)) == set()
    assert base.leases()["oregon"].holder is None


def test_keepers_share_the_sites_evenly_and_a_pinned_one_keeps_its_own(base: Store) -> None:
    one = ShardKeeper(base, ttl=TTL)
    one.join(rec(1))
    one.step()
    assert one.sites() == {"oregon", "texas"}  # alone: every site
    two = ShardKeeper(base, ttl=TTL)
    two.join(rec(2))
    two.step()  # its share is one, but both are held
    assert two.sites() == set()
    one.step()  # over its share: releases one
    two.step()
    assert len(one.sites()) == len(two.sites()) == 1
    assert one.sites() | two.sites() == {"oregon", "texas"}
    pinned = ShardKeeper(base, pinned=["oregon"], ttl=TTL)
    pinned.check_pins()
    pinned.join(rec(3))
    for k in (one, two, pinned, one, two, pinned):
        k.step()
    assert pinned.sites() == {"oregon"}
    assert one.sites() | two.sites() == {"texas"}
    bad = ShardKeeper(base, pinned=["atlantis"], ttl=TTL)
    with pytest.raises(InvalidInput, match="'atlantis' is not a site"):
        bad.check_pins()


def test_a_site_handed_over_is_not_logged_as_hosts_leaving_the_inventory(
        base: Store, caplog: pytest.LogCaptureFixture) -> None:
    """Regression: releasing a site to another controller logged "host hv1 left the
    inventory" for each of its hosts, as if they had been removed."""
    ctl = Controller(base, interval=60)
    try:
        one = ShardKeeper(base, ttl=TTL)
        ctl.keeper = one
        one.join(rec(1))
        one.step()
        ctl.reload_inventory()
        assert {h.name for h in ctl.state.hosts()} == {"hv1", "hv2", "hv3", "hv4"}
        two = ShardKeeper(base, ttl=TTL)
        two.join(rec(2))
        two.step()
        one.step()  # over its share: releases one site to two
        let_go = ({"oregon", "texas"} - one.sites()).pop()
        caplog.clear()
        with caplog.at_level("INFO", logger="virtfleet.controller"):
            ctl.reload_inventory()
        assert "left the inventory" not in caplog.text
        assert f"site {let_go} is no longer this controller's" in caplog.text
        kept = {h.name for h in ctl.state.hosts()}
        assert kept == ({"hv1", "hv2", "hv3"} if let_go == "texas" else {"hv4"})
        fleet = copy.deepcopy(BASE)  # now a host of the kept site leaves the inventory
        for site in fleet["sites"]:
            for pod in site["pods"]:
                pod["hypervisors"] = [h for h in pod["hypervisors"] if h["name"] != min(kept)]
        fleet["sites"] = [s for s in fleet["sites"] if any(p["hypervisors"] for p in s["pods"])]
        base.apply(parse_fleet(fleet))
        caplog.clear()
        with caplog.at_level("INFO", logger="virtfleet.controller"):
            ctl.reload_inventory()
        assert f"host {min(kept)} left the inventory" in caplog.text
    finally:
        ctl.pool.close()


def beat_at(store_url: str, holder: str, ago: float) -> None:
    engine = create_engine(store_url)
    try:
        with engine.begin() as conn:
            conn.execute(update(t.controller_members)
                         .where(t.controller_members.c.holder == holder)
                         .values(heartbeat_at=datetime.now(UTC) - timedelta(seconds=ago)))
    finally:
        engine.dispose()


def test_a_live_keeper_removes_the_registrations_of_controllers_long_dead(
        base: Store, store_url: str) -> None:
    """Regression: the member rows of killed controllers were never removed."""
    keeper = ShardKeeper(base, ttl=TTL)
    keeper.join(rec(1))
    base.join("killed", rec(2))
    base.join("late", rec(3))
    beat_at(store_url, "killed", FORGET_AFTER_LEASES * TTL + 60)
    beat_at(store_url, "late", 2 * TTL)  # gone for a while, not long: its row stays
    keeper.step()
    assert [m.holder for m in base.members()] == sorted([keeper.holder, "late"])
    with pytest.raises(InvalidInput, match="older_than"):
        base.forget_members(0)


def test_a_keeper_paused_past_its_lease_stops_acting_and_comes_back_under_new_tokens(
        base: Store) -> None:
    keeper = ShardKeeper(base, ttl=1.0)
    keeper.join(rec(1))
    keeper.step()
    before = keeper.tokens.held()
    assert set(before) == {"oregon", "texas"}
    time.sleep(1.2)  # no step meanwhile: as a process stopped past its lease
    assert keeper.sites() == set()  # it acts nowhere, before it has asked anyone
    fenced = base.fenced(keeper.tokens)
    with pytest.raises(StaleLease):
        fenced.set_host_status(HostStatus("hv1", False, "lost", T1))
    keeper.step()  # nobody else is there: it claims them again, never renews the old tokens
    after = keeper.tokens.held()
    assert {s: after[s] - before[s] for s in after} == {"oregon": 1, "texas": 1}
    fenced.set_host_status(HostStatus("hv1", False, "lost", T1))


class CountingFencer:
    """Stands in for the BMC: counts the power-offs that reach it."""

    def __init__(self) -> None:
        self.offs: list[str] = []

    def has_bmc(self, host: str) -> bool:
        return True

    def status(self, host: str) -> PowerResult:
        return PowerResult(host, "fence_ipmilan", "status", Power.ON, "", 0.0, True)

    def off(self, host: str) -> PowerResult:
        self.offs.append(host)
        return PowerResult(host, "fence_ipmilan", "off", Power.OFF, "", 0.0, True)


def test_a_power_off_is_refused_once_the_lease_is_lost(base: Store, store_url: str) -> None:
    mine, _ = holding(base, "a", "oregon")
    inner = CountingFencer()
    fencer = LeaseCheckedFencer(inner, mine)
    assert fencer.off("hv1").power is Power.OFF and inner.offs == ["hv1"]
    expire(store_url, "oregon")
    holding(base, "b", "oregon")
    refused = fencer.off("hv1")
    assert refused.power is Power.ERROR and not refused.confirmed
    assert "fencing token 1 is stale" in refused.message
    assert inner.offs == ["hv1"]  # the BMC was never asked the second time


@pytest.mark.parametrize("raw", ["soon", "0", "-3", "601"])
def test_a_bad_lease_time_is_refused_naming_the_variable(raw: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTFLEET_LEASE_TTL", raw)
    with pytest.raises(InvalidInput) as exc:
        lease_ttl()
    assert exc.value.field == "VIRTFLEET_LEASE_TTL"
