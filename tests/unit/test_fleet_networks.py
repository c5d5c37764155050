"""The network service in process, on test-driver hypervisors: typed requests in, typed
per-host results out (failed hosts included), errors naming the request's own fields.

The service shares one long-lived pool here, so each test-driver hypervisor keeps its state for
the whole test (a one-shot pool would reopen each node file afresh for every step)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from virtfleet.errors import Conflict, InvalidInput, NotFound
from virtfleet.fleet.declared_networks import DeclaredNetworks
from virtfleet.fleet.networks import DefineNetwork, NetworkService
from virtfleet.fleet.scope import Scope, Step
from virtfleet.inventory.fleetfile import parse_fleet
from virtfleet.inventory.store import Store
from virtfleet.virt.fanout import ConnectionPool

from .nodes import node_uri

NAT = {"mode": "nat", "subnet": "10.77.0.0/24",
       "dhcp": [{"start": "10.77.0.10", "end": "10.77.0.99"}]}


def _fleet(tmp_path: Path, broken: bool = False) -> dict[str, object]:
    hvs = [{"name": "hv1", "uri": node_uri(tmp_path, "with-networks.xml", "hv1.xml")},
           {"name": "hv2", "uri": node_uri(tmp_path, "empty.xml", "hv2.xml")}]
    if broken:  # a hypervisor whose node file is gone: it fails, the others answer
        hvs.append({"name": "hv3", "uri": f"test://{tmp_path / 'gone.xml'}"})
    return {"sites": [{"name": "oregon", "pods": [{"name": "or-pod1", "hypervisors": hvs}]}]}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[NetworkService]:
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store, ConnectionPool() as pool:
        store.apply(parse_fleet(_fleet(tmp_path, broken=True)))
        with NetworkService(store, pool) as svc:
            yield svc


POD = Scope(pod="or-pod1")


def test_list_answers_per_host_and_names_the_host_that_failed(service: NetworkService) -> None:
    steps: list[Step] = []
    answers = service.list_networks(Scope(), steps.append)
    assert [(h.name, [n.name for n in nets]) for h, nets in answers.values] == [
        ("hv1", ["default"]), ("hv2", [])]
    [failed] = answers.failures
    assert (failed.host, failed.kind) == ("hv3", "hypervisor-error") and not answers.ok
    assert [s.done for s in steps] == [1, 2, 3] and {s.total for s in steps} == {3}
    with pytest.raises(NotFound, match="no hypervisor in scope has a network 'nosuch'"):
        service.info("nosuch", Scope(host="hv2"))


def test_define_on_two_hosts_then_the_lifecycle_verbs(service: NetworkService) -> None:
    req = DefineNetwork(Scope(host="hv1"), "lab", spec=NAT, start=True, autostart=True)
    [one] = service.define(req)
    assert (one.host, one.name, one.done, one.ok) == (
        "hv1", "lab", "defined, started, marked autostart", True)
    assert one.as_json() == {"host": "hv1", "network": "lab", "ok": True,
                             "result": "defined, started, marked autostart"}
    [info] = service.info("lab", Scope(host="hv1")).values
    assert info[1].active and info[1].autostart and info[1].subnets == ("10.77.0.0/24",)
    # undefine of an active network: refused, naming the request field that would allow it
    [refused] = service.undefine("lab", Scope(host="hv1"))
    assert isinstance(refused.error, Conflict) and refused.error.host == "hv1"
    assert refused.why == "network 'lab' is active; destroy it first (or give `destroy`)"
    [gone] = service.undefine("lab", Scope(host="hv1"), destroy=True)
    assert gone.done == "destroyed and undefined"
    outcomes = service.autostart("default", POD, on=False)
    assert [(o.host, o.ok, o.done) for o in outcomes] == [
        ("hv1", True, "autostart disabled"), ("hv2", False, ""), ("hv3", False, "")]
    assert outcomes[1].result == "not-found: has no network 'default'"


def test_a_host_that_refuses_the_define_leaves_it_undefined_everywhere(
        service: NetworkService) -> None:
    outcomes = service.define(DefineNetwork(POD, "default", spec={"mode": "isolated",
                                                                  "subnet": "10.5.0.0/24"}))
    by_host = {o.host: o for o in outcomes}
    assert by_host["hv1"].result == "conflict: network 'default' already exists"
    assert by_host["hv3"].error is not None and by_host["hv3"].error.kind == "hypervisor-error"
    assert by_host["hv2"].error is None and by_host["hv2"].note == \
        "not defined (hv1, hv3 refused)"
    assert not any(o.ok for o in outcomes)
    assert [n.name for _h, nets in service.list_networks(Scope(host="hv2")).values
            for n in nets] == []


@pytest.mark.parametrize(("req", "field", "words"), [
    (DefineNetwork(Scope()), "scope", "say where"),
    (DefineNetwork(Scope(all=True, host="hv1"), "x", spec=NAT), "scope.all",
     "do not combine it with `scope.host`"),
    (DefineNetwork(POD, None, spec=NAT), "name", "missing: name the network (or give `xml`)"),
    (DefineNetwork(POD, "a/b", spec=NAT), "name", "not a valid name"),
    (DefineNetwork(POD, "x", spec={"mode": "nat", "subnet": "10.0.0.1/24"}), "spec.subnet",
     "has host bits set"),
    (DefineNetwork(POD, "x", spec={**NAT, "dhcp": [{"start": "10.6.0.1", "end": "10.6.0.9"}]}),
     "spec.dhcp", "outside subnet 10.77.0.0/24"),
    (DefineNetwork(POD, "x", spec={"mode": "nat", "subnet": "192.168.0.0/16"}), "spec.subnet",
     "overlaps network 'default' (192.168.122.0/24) on hv1"),
    (DefineNetwork(POD, xml="<network><name>x</name><ip address='192.168.122.9' "
                   "prefix='25'/></network>"), "xml", "overlaps network 'default'"),
    (DefineNetwork(POD, "other", xml="<network><name>x</name></network>"), "name",
     "differs from the file's name 'x'"),
    (DefineNetwork(POD, xml="<network><name>../x</name></network>"), "xml.name",
     "not a valid name"),
    (DefineNetwork(POD, xml="<network>"), "xml", ""),
])
def test_bad_requests_name_their_field_and_make_nothing(
        service: NetworkService, req: DefineNetwork, field: str, words: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        service.define(req)
    assert exc.value.field == field and words in exc.value.rule, exc.value
    assert [n.name for _h, nets in service.list_networks(POD).values for n in nets] == [
        "default"]


def test_declared_networks_plan_then_apply(tmp_path: Path) -> None:
    data = _fleet(tmp_path)
    data["sites"][0]["libvirt_networks"] = [{"name": "vmnet", **NAT}]  # type: ignore[index]
    with ConnectionPool() as pool, DeclaredNetworks(parse_fleet(data), pool) as declared:
        plan = declared.plan()
        assert [(c.host, c.network, c.changes) for c in plan.changes] == [
            ("hv1", "vmnet", ("define", "start", "autostart")),
            ("hv2", "vmnet", ("define", "start", "autostart"))]
        assert declared.apply().ok and plan.hosts == 2
        again = declared.apply()
        assert [c.changes for c in again.changes] == [(), ()]
    data["sites"][0]["libvirt_networks"] = [  # type: ignore[index]
        {"name": "vmnet", "mode": "nat", "subnet": "192.168.0.0/16"}]
    with DeclaredNetworks(parse_fleet(data)) as declared, pytest.raises(InvalidInput) as exc:
        declared.plan()
    assert (exc.value.host, exc.value.field) == ("hv1", "network vmnet")
