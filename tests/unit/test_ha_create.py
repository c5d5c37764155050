"""VMs made HA as they are created or cloned (`vm create --ha`, `vm clone --ha`), on test-driver
hypervisors: the mark in their own metadata as `ha set` writes it, libvirt autostart off, the
store's HA VMs holding their definition, `ha status` showing them; refusals before anything is
made; and an undone create taking its HA record with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from virtfleet.errors import Conflict, InvalidInput
from virtfleet.fleet.ha import HAService
from virtfleet.fleet.templates import CloneRequest, TemplateService
from virtfleet.fleet.vms import CreateRequest, VMService
from virtfleet.inventory.records import Made
from virtfleet.inventory.store import Store
from virtfleet.provision.journal import undo_steps
from virtfleet.virt import ha as vha
from virtfleet.virt.host import Host
from virtfleet.xml.domain import Domain

from .cli import run
from .fleets import fleet_store, hv


@dataclass
class Env:
    store: Store
    vms: VMService
    templates: TemplateService
    ha: HAService
    db: Path

    def host(self, name: str) -> Host:
        [r] = self.store.hypervisors(host=name)
        return self.vms.pool.get(r)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """Pod p1: hv1 holds the sealed template `tpl` and a storage pool; hv2 is empty."""
    store = fleet_store(tmp_path, {"p1": [hv(tmp_path, "hv1", "with-template.xml"),
                                          hv(tmp_path, "hv2", "empty-nat.xml")]})
    vms = VMService(store)
    templates = TemplateService(store, vms.pool)
    yield Env(store, vms, templates, HAService(store, vms.pool), tmp_path / "s.db")
    vms.close()
    store.close()


def create(name: str, **kw: object) -> CreateRequest:
    args: dict[str, object] = {"name": name, "memory": "256M", "vcpus": 1, "pxe": True,
                               "host": "hv1"}
    args.update(kw)
    return CreateRequest(**args)  # type: ignore[arg-type]


def marked_priority(h: Host, uuid: str) -> int | None:
    found = vha.definition(h, uuid, 5)
    assert found is not None
    facts = Domain.parse(found.xml).facts
    return facts.ha_priority if facts is not None else None


def autostart(h: Host, uuid: str) -> bool:
    found = vha.definition(h, uuid, 5)
    assert found is not None
    return found.autostart


def test_create_with_ha_marks_the_vm_as_ha_set_does_and_ha_status_shows_it(env: Env) -> None:
    made = env.vms.create(create("web01", ha=True, ha_priority=250))
    plain = env.vms.create(create("web02"))
    h1 = env.host("hv1")
    assert (made.ha_priority, plain.ha_priority) == (250, None)
    assert marked_priority(h1, made.uuid) == 250 and not autostart(h1, made.uuid)
    assert marked_priority(h1, plain.uuid) is None
    [vm] = env.store.ha_vms()  # web02 is not HA
    assert (vm.uuid, vm.name, vm.host, vm.marked_priority, vm.priority) == (
        made.uuid, "web01", "hv1", 250, 250)
    assert Domain.parse(vm.definition).uuid == made.uuid  # a restart elsewhere needs it
    [shown] = env.ha.status().vms
    assert (shown.vm, shown.priority, shown.source, shown.host, shown.state) == (
        "web01", 250, "marked", "hv1", "running")


def test_ha_without_a_priority_gets_the_default(env: Env) -> None:
    made = env.vms.create(create("web01", ha=True, start=False))
    assert made.ha_priority == 100 and not made.started
    assert marked_priority(env.host("hv1"), made.uuid) == 100
    [shown] = env.ha.status().vms
    assert (shown.vm, shown.priority, shown.state) == ("web01", 100, "shut off")


@pytest.mark.parametrize(("kw", "field"), [
    ({"ha_priority": 10}, "ha_priority"),  # a priority without --ha
    ({"ha": True, "ha_priority": 1001}, "ha_priority"),
    ({"ha": True, "ha_priority": -1}, "ha_priority"),
    ({"ha": True, "ha_priority": True}, "ha_priority"),
    ({"ha": True, "autostart": True}, "autostart"),  # a returning host would start it
])
def test_create_refusals_name_the_field_and_make_nothing(env: Env, kw: dict[str, object],
                                                         field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        env.vms.create(create("web01", **kw))
    assert exc.value.field == field, exc.value
    assert not env.host("hv1").has_domain("web01") and not env.host("hv2").has_domain("web01")
    assert env.store.placement_claims() == [] and env.store.ha_vms() == []


def test_undoing_an_ha_create_forgets_its_ha_record(env: Env) -> None:
    """What a rolled-back or cleaned-up create does (the journal's "vm" step): the VM goes, and
    the controller must not be left restarting a VM that no longer exists."""
    made = env.vms.create(create("web01", ha=True))
    assert [v.uuid for v in env.store.ha_vms()] == [made.uuid]
    left = undo_steps([Made("vm", "hv1", f"web01/{made.uuid}")], env.store, env.vms.pool)
    assert left == []
    assert not env.host("hv1").has_domain("web01")
    assert env.store.ha_vms() == [] and env.ha.status().vms == ()


def test_vm_autostart_is_refused_for_an_ha_vm_and_allowed_once_unmarked(env: Env) -> None:
    made = env.vms.create(create("web01", ha=True))
    with pytest.raises(Conflict, match="it is HA: its libvirt autostart stays off"):
        env.vms.set_autostart("web01", True)
    assert not autostart(env.host("hv1"), made.uuid)
    env.vms.set_autostart("web01", False)  # turning it off is always fine
    env.ha.unmark("web01")
    env.vms.set_autostart("web01", True)
    assert autostart(env.host("hv1"), made.uuid)


def test_clone_with_ha_marks_each_clone(env: Env) -> None:
    made = env.templates.clone(CloneRequest(template="tpl", name="web", count=2, ha=True,
                                            ha_priority=400, start=True))
    assert [(c.name, c.ok, c.ha_priority, c.result) for c in made] == [
        (n, True, 400, "cloned (linked), started, HA priority 400") for n in ("web-1", "web-2")]
    h1 = env.host("hv1")
    for c in made:
        assert c.uuid is not None
        assert marked_priority(h1, c.uuid) == 400 and not autostart(h1, c.uuid)
    assert sorted((v.name, v.priority, v.host) for v in env.store.ha_vms()) == [
        ("web-1", 400, "hv1"), ("web-2", 400, "hv1")]
    assert [(v.vm, v.state) for v in env.ha.status().vms] == [
        ("web-1", "running"), ("web-2", "running")]
    # and a clone made without --ha is not HA
    [other] = env.templates.clone(CloneRequest(template="tpl", name="db"))
    assert other.ha_priority is None and other.uuid is not None
    assert marked_priority(h1, other.uuid) is None and len(env.store.ha_vms()) == 2


@pytest.mark.parametrize(("kw", "field"), [
    ({"ha_priority": 10}, "ha_priority"),
    ({"ha": True, "ha_priority": 5000}, "ha_priority"),
])
def test_clone_refusals_name_the_field_and_make_nothing(env: Env, kw: dict[str, object],
                                                        field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        env.templates.clone(CloneRequest(template="tpl", name="web", **kw))  # type: ignore[arg-type]
    assert exc.value.field == field, exc.value
    assert not env.host("hv1").has_domain("web")
    assert env.store.placement_claims() == [] and env.store.ha_vms() == []


def test_the_cli_words_the_fields_as_its_options(env: Env) -> None:
    db = env.db
    base = ["vm", "create", "x1", "--host", "hv1", "--memory", "256M", "--vcpus", "1", "--pxe"]
    for extra, option in [(["--ha-priority", "5"], "--ha-priority"),
                          (["--ha", "--ha-priority", "2000"], "--ha-priority"),
                          (["--ha", "--autostart"], "--autostart")]:
        r = run(db, *base, *extra)
        assert r.code == 2 and r.out == "", (extra, r.err)
        assert r.err.startswith(f"virtfleet: error: {option}: "), (extra, r.err)
        assert len(r.err.strip().splitlines()) == 1
    r = run(db, "vm", "clone", "tpl", "web", "--ha-priority", "5")
    assert r.code == 2 and r.err.startswith("virtfleet: error: --ha-priority: "), r.err
    r = run(db, "ha", "status", "--json")
    assert r.code == 0 and r.json()["vms"] == []  # nothing was made HA

    r = run(db, *base, "--ha", "--ha-priority", "700", "--json")
    assert r.code == 0, r.err
    assert r.json()["ha_priority"] == 700
    r = run(db, *base[:2], "x2", *base[3:], "--ha")
    assert r.code == 0 and "HA priority 100" in r.out, r.err
    r = run(db, "vm", "clone", "tpl", "web", "--ha", "--json")
    assert r.code == 0, r.err
    assert [(c["name"], c["ha_priority"]) for c in r.json()] == [("web", 100)]
    r = run(db, "ha", "status", "--json")
    assert r.code == 0, r.err
    assert [(v["vm"], v["priority"], v["source"], v["host"]) for v in r.json()["vms"]] == [
        ("x1", 700, "marked", "hv1"), ("web", 100, "marked", "hv1"),
        ("x2", 100, "marked", "hv1")]
