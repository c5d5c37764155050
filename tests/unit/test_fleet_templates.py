"""The template service in process, on test-driver hypervisors: list, info, clone and delete
as typed results, and what each hypervisor then really holds. (Sealing a new template runs
virt-sysprep on a real image: tests/integration/test_templates.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from virtfleet.errors import Conflict, HostUnavailable, InvalidInput, NotFound
from virtfleet.fleet.scope import Scope, Step
from virtfleet.fleet.templates import CloneRequest, TemplateRequest, TemplateService
from virtfleet.fleet.vms import UndefineRequest, VMService
from virtfleet.inventory.records import DomainRecord

from .fleets import fleet_store, hv


@pytest.fixture
def templates(tmp_path: Path) -> Iterator[TemplateService]:
    """hv1 holds the sealed template `tpl` (and `old`, a linked clone of it); hv2 is empty;
    nothing listens for `dead`."""
    store = fleet_store(tmp_path, {
        "p1": [hv(tmp_path, "hv1", "with-template.xml"), hv(tmp_path, "hv2", "empty.xml")],
        "p2": [hv(tmp_path, "dead", None)]})
    with TemplateService(store) as service:
        yield service
    store.close()


def test_list_names_each_template_and_each_host_that_did_not_answer(
        templates: TemplateService) -> None:
    steps: list[Step] = []
    found = templates.templates(Scope(), progress=steps.append)
    assert [t.as_json() for t in found.templates] == [
        {"site": "oregon", "pod": "p1", "host": "hv1", "name": "tpl"}]
    assert [f.host for f in found.failed] == ["dead"] and not found.ok and found.asked == 3
    assert steps[-1] == Step("templates", 3, 3)
    assert templates.templates(Scope(pod="p1")).ok


def test_clone_info_and_delete(templates: TemplateService) -> None:
    steps: list[Step] = []
    made = templates.clone(CloneRequest(template="tpl", name="web", count=2),
                           progress=steps.append)
    assert [(c.host, c.name, c.ok, c.result) for c in made] == [
        ("hv1", "web-1", True, "cloned (linked)"), ("hv1", "web-2", True, "cloned (linked)")]
    assert steps == [Step("clone", 1, 2), Step("clone", 2, 2)]
    info = templates.info("tpl")
    assert (info.template.record.name, sorted(info.linked_clones)) == ("hv1", [
        f"/var/lib/libvirt/images/{n}.qcow2" for n in ("old", "web-1", "web-2")])
    assert info.as_json()["linked_clones"] == info.linked_clones
    with pytest.raises(Conflict, match="has 3 linked clone"):
        templates.delete("tpl")
    vms = VMService(templates.store, templates.pool)
    for vm in ("old", "web-1", "web-2"):
        vms.undefine(UndefineRequest(vm, remove_all_storage=True))
    gone = templates.delete("tpl")
    assert gone.name == "tpl"
    [rec] = templates.store.hypervisors(host="hv1")
    assert not templates.pool.get(rec).has_domain("tpl")
    assert templates.templates(Scope(pod="p1")).templates == ()


def test_info_of_a_template_whose_host_is_down_names_the_host(
        templates: TemplateService) -> None:
    """Regression: `template info` of a template last seen on a host that does not answer
    said "no template named ...", as if it did not exist; it says the host did not answer."""
    templates.store.upsert_domain("dead", DomainRecord("gold", "u-1", "shut off", None, 1, 512),
                                  datetime.now(UTC))
    with pytest.raises(HostUnavailable) as info:
        templates.info("gold")
    assert info.value.host == "dead" and info.value.exit_code == 1
    assert info.value.message.startswith("dead/gold: the hypervisor it was last seen on did "
                                         "not answer (unable to connect"), info.value.message
    assert "\n" not in info.value.message
    # Never seen anywhere: not found, and the search says which host it could not ask.
    with pytest.raises(NotFound, match=r"no template named 'nosuch' \(1 hypervisor\(s\) did "
                       r"not answer: dead\)"):
        templates.info("nosuch")


@pytest.mark.parametrize(("request_", "field"), [
    (CloneRequest(template="tpl", name="x", host="hv1", pod="p1"), "host/pod/site"),
    (CloneRequest(template="tpl", name="x", count=0), "count"),
    (CloneRequest(template="tpl", name="bad name"), "name"),
    (CloneRequest(template="plain", name="x"), "template"),  # a VM, not a template
    (CloneRequest(template="tpl", name="x", host="hv2"), "linked"),  # hv2 cannot see it
])
def test_clone_refusals_name_the_request_field(templates: TemplateService,
                                               request_: CloneRequest, field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        templates.clone(request_)
    assert exc.value.field == field, exc.value
    assert templates.store.placement_claims() == []  # no room held


def test_create_refusals_name_the_request_field(templates: TemplateService) -> None:
    for req, field in [(TemplateRequest("t2", "bad name"), "source"),
                       (TemplateRequest("t2", "plain", profile="fast"), "profile"),
                       (TemplateRequest("t2", "tpl"), "source")]:  # already a template
        with pytest.raises(InvalidInput) as exc:
            templates.create(req)
        assert exc.value.field == field, exc.value
