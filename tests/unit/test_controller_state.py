"""The controller's in-memory fleet view, without threads or HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from virtfleet.controller.state import FleetState
from virtfleet.inventory.records import DomainRecord, HostRecord

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(seconds=5)


def rec(name: str, uri: str | None = None, groups: tuple[str, ...] = ()) -> HostRecord:
    return HostRecord(name, uri or f"test:///{name}.xml", "oregon", "or-pod1", groups)


def dom(name: str, uuid: str, state: str = "running") -> DomainRecord:
    return DomainRecord(name, uuid, state, 1 if state == "running" else None, 4, 32768)


def test_inventory_changes_report_new_and_gone_hosts() -> None:
    s = FleetState()
    fresh, gone = s.set_inventory([rec("a"), rec("b")])
    assert [h.name for h in fresh] == ["a", "b"] and gone == []
    s.replace("a", [dom("vm1", "u1")], T0)
    fresh, gone = s.set_inventory([rec("a", groups=("web",)), rec("b", uri="test:///new.xml")])
    assert [h.name for h in fresh] == ["b"] and [h.name for h in gone] == ["b"]
    assert [v.domain.name for v in s.vms()] == ["vm1"]  # regrouping keeps what was seen
    assert s.hosts()[0].groups == ("web",)


def test_the_same_inventory_again_changes_no_version() -> None:
    s = FleetState()
    s.set_inventory([rec("a"), rec("b")])
    v0 = s.version
    assert s.set_inventory([rec("a"), rec("b")]) == ([], [])
    assert s.version == v0  # readers keep what they derived from it
    s.set_inventory([rec("a", groups=("web",)), rec("b")])
    assert s.version > v0
    v1 = s.version
    s.set_inventory([rec("a", groups=("web",))])
    assert s.version > v1


def test_a_vm_on_two_hosts_is_shown_on_both_until_one_says_otherwise() -> None:
    s = FleetState()
    s.set_inventory([rec("a"), rec("b")])
    s.replace("a", [dom("vm1", "u1")], T0)
    s.upsert("b", dom("vm1", "u1", "paused"), T1)
    assert sorted((v.host, v.domain.state) for v in s.vms()) == [("a", "running"),
                                                                 ("b", "paused")]
    s.delete("a", "u1", T1)
    assert [(v.host, v.observed_at) for v in s.vms()] == [("b", T1)]


def test_failures_filters_and_version() -> None:
    s = FleetState()
    s.set_inventory([rec("a"), rec("b")])
    v0 = s.version
    s.replace("a", [dom("vm1", "u1"), dom("vm2", "u2", "shut off")], T0)
    s.fail("b", "connection refused", "host-unavailable", T0)
    assert s.version > v0
    [f] = s.failures()
    assert (f.host, f.kind, f.message) == ("b", "host-unavailable", "connection refused")
    assert s.failures({"a"}) == []
    assert [v.domain.name for v in s.vms(state="shut off")] == ["vm2"]
    assert s.vms({"b"}) == []
    s.replace("b", [], T1)  # answered again: no longer failed
    assert s.failures() == []


def test_a_failed_hosts_vms_are_unknown_until_it_answers_again() -> None:
    s = FleetState()
    s.set_inventory([rec("a"), rec("b")])
    s.replace("a", [dom("vm1", "u1"), dom("vm2", "u2", "shut off")], T0)
    s.replace("b", [dom("vm3", "u3")], T0)
    s.fail("a", "no answer to keepalive probes", "host-unavailable", T1)
    assert {(v.domain.name, v.domain.state, v.domain.id) for v in s.vms()} == {
        ("vm1", "unknown", None), ("vm2", "unknown", None), ("vm3", "running", 1)}
    assert [v.observed_at for v in s.vms({"a"})] == [T0, T0]  # their age keeps growing
    assert [v.domain.name for v in s.vms(state="running")] == ["vm3"]
    # an answer read before the failure (a sync that raced with it) does not clear it
    s.replace("a", [dom("vm1", "u1")], T0 + timedelta(seconds=2))
    assert [f.host for f in s.failures()] == ["a"]
    assert [v.domain.state for v in s.vms({"a"})] == ["unknown"]
    s.replace("a", [dom("vm1", "u1")], T1 + timedelta(seconds=1))
    assert s.failures() == [] and [v.domain.state for v in s.vms({"a"})] == ["running"]
