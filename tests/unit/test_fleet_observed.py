"""Observations into the store, the one way `sync` and the controller write them: a fleet
read (with the controller's per-connection hook), one domain after an event, a lost host."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from virtfleet.fleet.observed import observe, record_domain, record_unreachable, sync
from virtfleet.inventory.store import Store
from virtfleet.virt.fanout import ConnectionPool
from virtfleet.virt.host import Host

from .fleets import fleet_store, hv

AT = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = fleet_store(tmp_path, {"p1": [hv(tmp_path, "hv1", "two-vms.xml"),
                                      hv(tmp_path, "dead", None)]})
    yield s
    s.close()


def _vms(store: Store, host: str) -> list[str]:
    return sorted(v.domain.name for v in store.fleet_vms(host=host))


def test_sync_records_each_host_and_names_the_dead_one(store: Store) -> None:
    hosts = store.hypervisors()
    ticks: list[str] = []
    results = sync(store, hosts, progress=lambda r: ticks.append(r.host.name))
    assert sorted(ticks) == ["dead", "hv1"]
    assert {r.host.name: r.error is None for r in results} == {"hv1": True, "dead": False}
    assert _vms(store, "hv1") == ["centos.template", "vm1.example.com", "vm2.example.com"]
    status = {s.host: s for s in store.host_statuses()}
    assert status["hv1"].reachable and not status["dead"].reachable
    assert status["dead"].error  # the reason is kept, for list to show


def test_observe_runs_the_hook_on_each_connection_before_asking(store: Store) -> None:
    seen: list[Host] = []
    with ConnectionPool() as pool:
        results = observe(store.hypervisors(host="hv1"), pool, on_connection=seen.append)
        assert [h.label for h in seen] == ["hv1"]
        assert pool.alive(results[0].host)  # the caller's pool stays open: the hook's
        #                                     subscriptions live on its connections
    assert store.fleet_vms() == []  # observing alone writes nothing


def test_one_domain_after_an_event_then_gone(store: Store) -> None:
    [hv1] = sync(store, store.hypervisors(host="hv1"))
    assert hv1.value is not None
    vm = hv1.value[0]
    record_domain(store, "hv1", vm.uuid, vm, AT)
    assert vm.name in _vms(store, "hv1")
    record_domain(store, "hv1", vm.uuid, None, AT)
    assert vm.name not in _vms(store, "hv1")


def test_a_lost_host_is_marked_and_a_host_gone_from_the_inventory_is_skipped(
        store: Store) -> None:
    record_unreachable(store, "hv1", "keepalive timed out", AT)
    status = {s.host: s for s in store.host_statuses()}
    assert not status["hv1"].reachable and status["hv1"].error == "keepalive timed out"
    record_unreachable(store, "no-such-host", "whatever", AT)  # apply removed it: no error
    assert "no-such-host" not in {s.host for s in store.host_statuses()}
