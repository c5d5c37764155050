"""The planning service in process, on test-driver hypervisors and a host that does not answer:
headroom and placement on the live fleet as typed results, the room a claim holds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from virtfleet.errors import InvalidInput
from virtfleet.fleet.planning import HeadroomRequest, PlaceRequest, PlanningService
from virtfleet.fleet.scope import Scope as Where
from virtfleet.fleet.scope import Step
from virtfleet.placement.kinds import Scope
from virtfleet.placement.models import PlacementRequest, VMShape

from .fleets import fleet_store, hv

SMALL = VMShape(vcpus=1, memory_mib=1024)


@pytest.fixture
def plan(tmp_path: Path) -> Iterator[PlanningService]:
    """Two empty web hosts and a dead one in pod 1; pod 2 has one host with three VMs."""
    store = fleet_store(tmp_path, {
        "p1": [hv(tmp_path, "hv1", "empty.xml", "web"), hv(tmp_path, "hv2", "empty.xml", "web"),
               hv(tmp_path, "dead", None, "web")],
        "p2": [hv(tmp_path, "hv3", "two-vms.xml")]})
    with PlanningService(store) as service:
        yield service
    store.close()


def test_headroom_leaves_out_and_names_the_host_that_did_not_answer(
        plan: PlanningService) -> None:
    steps: list[Step] = []
    room = plan.headroom(HeadroomRequest(SMALL, Where(group="web")), progress=steps.append)
    assert {f.host: f.fits for f in room.hosts} == {"hv1": 40, "hv2": 40}
    assert room.fits == 80 and room.as_json()["fits"] == 80
    assert [f.host for f in room.failed] == ["dead"] and room.asked == 4
    assert steps[-1] == Step("nodeinfo", 4, 4)
    assert {(c.kind, c.lost) for c in room.loss} >= {("host", "hv3"), ("pod", "p2")}
    with pytest.raises(InvalidInput) as exc:
        plan.headroom(HeadroomRequest(SMALL, Where(group="nope")))
    assert exc.value.field == "group"


def test_place_and_claim(plan: PlanningService) -> None:
    req = PlacementRequest(name="app", shape=SMALL, count=2, group="web",
                           anti_affinity=Scope.host)
    looked = plan.place(PlaceRequest(req, explain=True))
    assert sorted(h for _vm, h in looked.placed.vms) == ["hv1", "hv2"]
    assert not looked.claimed and plan.store.placement_claims() == []
    assert looked.as_json()["explain"] is not None and [f.host for f in looked.failed] == [
        "dead"]
    held = plan.place(PlaceRequest(req, claim=True))
    assert held.claimed and sorted(c.vm for c in plan.store.placement_claims()) == [
        "app-1", "app-2"]
    assert plan.headroom(HeadroomRequest(SMALL, Where(group="web"))).fits == 78  # the claims count
