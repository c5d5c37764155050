"""The overview service in process: `list` live and from the store, `sync` into the store, on
test-driver hypervisors and a host that does not answer. (From a running controller:
test_controller.py, through the real command.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from virtfleet.errors import InvalidInput
from virtfleet.fleet.overview import ListRequest, OverviewService
from virtfleet.fleet.scope import Step

from .fleets import fleet_store, hv


@pytest.fixture
def overview(tmp_path: Path) -> Iterator[OverviewService]:
    store = fleet_store(tmp_path, {
        "p1": [hv(tmp_path, "hv1", "two-vms.xml"), hv(tmp_path, "dead", None)],
        "p2": [hv(tmp_path, "hv2", "with-template.xml")]})
    yield OverviewService(f"sqlite:///{tmp_path / 's.db'}", lambda: store)
    store.close()


def test_live_list_with_the_dead_host_named(overview: OverviewService) -> None:
    steps: list[Step] = []
    found = overview.list_vms(ListRequest(source="live"), progress=steps.append)
    assert found.source == "live" and found.notes == ()
    assert [(v["host"], v["name"]) for v in found.vms][:3] == [
        ("hv1", "centos.template"), ("hv1", "vm1.example.com"), ("hv1", "vm2.example.com")]
    assert len(found.vms) == 7 and all(v["observed_at"] is None for v in found.vms)
    assert [f.host for f in found.failed] == ["dead"]
    assert steps[-1] == Step("list", 3, 3)
    running = overview.list_vms(ListRequest(pod="p1", state="running"))
    assert [v["name"] for v in running.vms] == ["vm1.example.com"]
    assert running.source == "live"  # no controller runs on this store


def test_sync_then_the_store_answers_without_asking_anyone(overview: OverviewService) -> None:
    assert overview.list_vms(ListRequest(source="store")).vms == ()  # nothing synced yet
    done = overview.sync()
    assert (done.hosts, done.vms) == (3, 7) and [f.host for f in done.failed] == ["dead"]
    cached = overview.list_vms(ListRequest(source="store", host="hv2"))
    assert cached.source == "store" and {v["host"] for v in cached.vms} == {"hv2"}
    assert all(v["observed_at"] for v in cached.vms) and cached.failed == ()
    everywhere = overview.list_vms(ListRequest(source="store"))
    assert len(everywhere.vms) == 7 and [f.host for f in everywhere.failed] == ["dead"]
    assert everywhere.as_json()["source"] == "store"


def test_bad_requests_name_their_fields(overview: OverviewService) -> None:
    for req, field in [(ListRequest(state="asleep"), "state"),
                       (ListRequest(source="cache"), "source")]:
        with pytest.raises(InvalidInput) as exc:
            overview.list_vms(req)
        assert exc.value.field == field


def test_the_footer_counts_every_hypervisor_asked(overview: OverviewService,
                                                   tmp_path: Path) -> None:
    """Regression (new-user trial): the footer counted only hosts with VMs ("0 VMs on 0
    hypervisors" when all failed). Every host asked counts, the silent ones said."""
    from .cli import run

    r = run(tmp_path / "s.db", "list", "--live", "--pod", "p1")
    assert r.code == 1, r.err
    assert "3 VMs on 2 hypervisors (1 did not answer), read live\n" in r.err, r.err
    r = run(tmp_path / "s.db", "list", "--live", "--host", "dead")
    assert "0 VMs on 1 hypervisor (1 did not answer), read live\n" in r.err, r.err
    found = overview.list_vms(ListRequest(source="live"))
    assert found.hosts == 3 and found.as_json()["hosts"] == 3
    overview.sync()
    assert overview.list_vms(ListRequest(source="store", pod="p2")).hosts == 1
