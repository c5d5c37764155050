"""The host service in process, on test-driver hypervisors and a host that does not answer:
each question answered per host, the failure part of the answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from virtfleet.errors import InvalidInput, NotFound
from virtfleet.fleet.hosts import AddHostRequest, HostQuery, HostService
from virtfleet.fleet.scope import Step

from .fleets import fleet_store, hv


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[HostService]:
    store = fleet_store(tmp_path, {
        "p1": [hv(tmp_path, "hv1", "two-vms.xml", "web"), hv(tmp_path, "hv2", "empty.xml")],
        "p2": [hv(tmp_path, "dead", None)]})
    with HostService(store) as service:
        yield service
    store.close()


def test_each_host_answers_or_fails_on_its_own(hosts: HostService) -> None:
    steps: list[Step] = []
    facts = hosts.info(HostQuery(), progress=steps.append)
    assert [h.name for h, _n in facts.values] == ["hv1", "hv2"]
    assert all(n.cpus > 0 and n.memory_kib > 0 for _h, n in facts.values)
    assert [(f.host, f.kind) for f in facts.failures] == [("dead", "host-unavailable")]
    assert len(facts) == 3 and not facts.ok and steps[-1] == Step("nodeinfo", 3, 3)
    versions = hosts.version(HostQuery(("hv2", "hv1")))
    assert [h.name for h, _v in versions.values] == ["hv2", "hv1"] and versions.ok
    assert hosts.sysinfo(HostQuery(group="web")).ok


def test_check_gives_every_host_a_row(hosts: HostService) -> None:
    checks = hosts.check(HostQuery(site="oregon"))
    by_host = {c.host.name: c.check for c in checks.hosts}
    assert sorted(by_host) == ["dead", "hv1", "hv2"]
    assert by_host["hv1"].reachable and by_host["hv1"].virt_types
    assert not by_host["dead"].reachable and by_host["dead"].problems  # why, in the row
    assert [f.host for f in checks.failed] == ["dead"] and not checks.ok
    assert checks.hosts[0].as_json()["host"] == checks.hosts[0].host.name


def test_inventory_add_list_remove(hosts: HostService) -> None:
    added = hosts.add(AddHostRequest("hv9", "qemu+ssh://hv9/system", "texas", "t1",
                                     ("db",)))
    assert (added.name, added.site, added.pod, added.groups) == ("hv9", "texas", "t1", ("db",))
    rows = {r.host.name: r for r in hosts.hosts(HostQuery())}
    assert rows["hv9"].state == "unknown" and rows["hv9"].as_json()["reachable"] is None
    hosts.remove("hv9")
    assert "hv9" not in {r.host.name for r in hosts.hosts(HostQuery())}
    with pytest.raises(NotFound, match="'hv9' is not in the inventory"):
        hosts.select(HostQuery(("hv9",)))
    with pytest.raises(NotFound, match=r"\(or not in the given site/pod/group\)"):
        hosts.select(HostQuery(("hv1",), pod="p2"))


@pytest.mark.parametrize(("change", "field"), [
    ({"name": "bad name"}, "name"),
    ({"uri": "qemu+ssh://hv9/system?command=/bin/sh"}, "uri"),
    ({"site": ""}, "site"),
    ({"groups": ("ok", "not ok")}, "groups"),
])
def test_add_names_the_request_field(hosts: HostService, change: dict[str, object],
                                     field: str) -> None:
    base = {"name": "hv9", "uri": "qemu+ssh://hv9/system", "site": "texas", "pod": "t1"}
    with pytest.raises(InvalidInput) as exc:
        hosts.add(AddHostRequest(**{**base, **change}))  # type: ignore[arg-type]
    assert exc.value.field == field, exc.value
    assert "hv9" not in {h.name for h in hosts.select(HostQuery())}
