"""The template service: sealed templates (virt-sysprep) and the VMs cloned from them
(virt-clone), for a fleet. The work is provision/'s (templates.py, clone.py); this is its one
door, with the locks that keep a template and its clones consistent.

    with TemplateService(store) as templates:
        tpl = templates.create(TemplateRequest(name="web-tpl", source="web01"))
        made = templates.clone(CloneRequest(template="web-tpl", name="web", count=10))

A template is sealed from a shut-off VM, which stays as it was; it cannot be deleted while
linked clones use its images. A clone that fails is its own result; the others stand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from virtfleet.fleet.locate import VMFinder, locate_vm
from virtfleet.fleet.queries import counting
from virtfleet.fleet.scope import Progress, Scope
from virtfleet.inventory.records import HostFailure, HostRecord
from virtfleet.provision.clone import Cloned, CloneRequest, clone
from virtfleet.provision.locks import vm_lock
from virtfleet.provision.templates import (
    Template,
    create_template,
    delete_template,
    find_template,
    linked_clones,
    templates_on,
)
from virtfleet.validate import check_name

__all__ = ["CloneRequest", "Cloned", "Template", "TemplateInfo", "TemplateList",
           "TemplateRequest", "TemplateService"]


@dataclass(frozen=True)
class TemplateRequest:
    """Seal a copy of shut-off VM `source`'s disks into template `name` (`profile`: also tune
    the guest with virt-customize first; 'optimize' is the only one)."""

    name: str
    source: str
    profile: str | None = None
    host: str | None = None  # the source VM's hypervisor, if its name is on several

    def check(self) -> None:
        check_name("name", self.name)
        check_name("source", self.source)


@dataclass(frozen=True)
class TemplateRow:
    """A template, and the hypervisor that holds it."""

    holder: HostRecord
    name: str

    def as_json(self) -> dict[str, object]:
        h = self.holder
        return {"site": h.site, "pod": h.pod, "host": h.name, "name": self.name}


@dataclass(frozen=True)
class TemplateList:
    templates: tuple[TemplateRow, ...]
    failed: tuple[HostFailure, ...]  # hosts that did not answer (they may hold templates)
    asked: int

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class TemplateInfo:
    template: Template
    linked_clones: dict[str, list[str]]  # each overlay on its images -> the VMs using it

    def as_json(self) -> dict[str, object]:
        return {**self.template.as_json(), "linked_clones": self.linked_clones}


class TemplateService(VMFinder):
    def create(self, req: TemplateRequest,
               say: Callable[[str], None] = lambda _m: None) -> Template:
        """Seal the template, or make nothing; `say` hears each step (fetching, sealing)."""
        req.check()
        where = locate_vm(req.source, self.store, self.pool, host=req.host).name
        with vm_lock(self.store, f"{where}/{req.source}", "template create"), \
                vm_lock(self.store, f"create/{req.name}", "template create"):
            return create_template(self.store, self.pool, req.name, req.source, host=where,
                                   profile=req.profile, progress=say)

    def templates(self, scope: Scope, progress: Progress | None = None) -> TemplateList:
        """Every template in scope, with the hypervisor that holds it."""
        hosts = self.store.hypervisors(site=scope.site, pod=scope.pod, host=scope.host)
        answers = self.ask(hosts, "templates", templates_on, progress)
        rows = tuple(TemplateRow(h, t) for h, names in answers.values for t in names)
        return TemplateList(rows, tuple(answers.failures), len(answers))

    def info(self, template: str, host: str | None = None) -> TemplateInfo:
        """The template's hypervisor, size and images, and the linked clones in its pod."""
        check_name("template", template)
        tpl = find_template(self.store, self.pool, template, host=host)
        return TemplateInfo(tpl, linked_clones(self.store, self.pool, tpl))

    def delete(self, template: str, host: str | None = None) -> Template:
        """Undefine the template and delete its images; refused while linked clones use
        them. Linked clones being made hold the same lock, so none appears meanwhile."""
        check_name("template", template)
        where = find_template(self.store, self.pool, template, host=host).record.name
        with vm_lock(self.store, f"{where}/{template}", "template delete"):
            tpl = delete_template(self.store, self.pool, template, host=where)
            self.store.forget_vm(where, template, tpl.domain.uuid)
        return tpl

    def clone(self, req: CloneRequest, progress: Progress | None = None) -> list[Cloned]:
        """Make the clones, a result each (provision/clone.py); raises, with nothing made, if
        the request, the template or the placement is wrong."""
        req.check()
        return clone(self.store, self.pool, req, progress=counting(progress, "clone", req.count),
                     policy=self.policy)
