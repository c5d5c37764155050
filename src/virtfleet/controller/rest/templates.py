"""`/api/v1/templates`: sealed templates and the VMs cloned from them (fleet/templates.py).
Sealing a template and cloning are operations (202): virt-sysprep and copies take a while, and
a clone of `count` VMs reports each one made.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field, model_validator

from virtfleet.controller.audited import AuditedRoute
from virtfleet.controller.auth import authorize, require
from virtfleet.controller.jobs import Report
from virtfleet.controller.rest.common import (
    PREFIX,
    Body,
    Name,
    answer,
    common_target,
    start_operation,
    submit,
    vf,
    vm_holders,
)
from virtfleet.fleet.roles import Principal, Target
from virtfleet.fleet.scope import Scope
from virtfleet.provision.templates import Template

router = APIRouter(prefix=PREFIX, tags=["templates"], route_class=AuditedRoute)

TemplateHost = Annotated[str | None, Query(
    description="The hypervisor holding the template, if its name is on several.")]


class TemplateBody(Body):
    """Seal a copy of shut-off VM `source`'s disks into template `name`."""

    name: Name
    source: Name
    source_host: Name | None = Field(default=None, description="The source VM's hypervisor, "
                                     "if its name is on several.")
    profile: Literal["optimize"] | None = None


class CloneBody(Body):
    """`count` VMs from the template, placed by the scheduler in `pod` or `site` (default:
    the template's pod)."""

    name: Name
    count: int = Field(default=1, ge=1, le=10_000)
    linked: bool = True
    start: bool = False
    pool: Name | None = Field(default=None, description="Full clones: the storage pool to "
                              "copy into.")
    pod: Name | None = None
    site: Name | None = None

    @model_validator(mode="after")
    def _one_place(self) -> CloneBody:
        if self.pod is not None and self.site is not None:
            raise ValueError("give at most one of pod or site")
        return self


def _find(request: Request, name: str, host: str | None) -> Template:
    from virtfleet.provision.templates import find_template

    api = vf(request)
    return find_template(api.controller.store, api.controller.pool, name, host=host)


def template(request: Request) -> Target:
    """scope_of for /templates/{name}: where the template is."""
    tpl = _find(request, request.path_params["name"], request.query_params.get("host"))
    return Target.on_host("template", tpl.name, tpl.record)


@router.get("/templates", name="template.list")
def list_templates(request: Request, caller: Annotated[Principal, require("template.read")],
                   site: str | None = None, pod: str | None = None,
                   host: str | None = None) -> Response:
    """Every template in scope the caller may see, with the hypervisor that holds it."""
    from virtfleet.fleet.templates import TemplateService

    api = vf(request)
    reach = caller.reach("template.read")
    with TemplateService(api.controller.store, api.controller.pool) as templates:
        found = templates.templates(Scope(site=site, pod=pod, host=host))
    return answer({"items": [t.as_json() for t in found.templates
                             if reach.covers_host(t.holder)],
                   "failed": [f.as_json() for f in found.failed]})


@router.get("/templates/{name}", name="template.info")
def template_info(request: Request, name: str,
                  caller: Annotated[Principal, require("template.read", template)],
                  host: TemplateHost = None) -> Response:
    """The template's hypervisor, size and images, and the linked clones in its pod."""
    from virtfleet.fleet.templates import TemplateService

    api = vf(request)
    with TemplateService(api.controller.store, api.controller.pool) as templates:
        return answer(templates.info(name, host).as_json())


@router.post("/templates", name="template.create", status_code=202)
def create_template(request: Request, body: TemplateBody,
                    caller: Annotated[Principal, require("template.manage")]) -> Response:
    """Seal a template from a shut-off VM (an operation); the VM stays as it was."""
    from virtfleet.fleet.templates import TemplateRequest, TemplateService

    source = common_target("template", body.name,
                           vm_holders(request, body.source, body.source_host))
    authorize(request, caller, "template.manage", source)
    req = TemplateRequest(body.name, body.source, body.profile, body.source_host)
    req.check()
    api = vf(request)

    def work(report: Report) -> object:
        with TemplateService(api.controller.store, api.controller.pool) as templates:
            return templates.create(req, say=report)

    return submit(request, caller, "template.create", source, work,
                  {"body": body.model_dump(mode="json")})


@router.delete("/templates/{name}", name="template.delete")
def delete_template(request: Request, name: str,
                    caller: Annotated[Principal, require("template.manage", template)],
                    host: TemplateHost = None) -> Response:
    """Undefine the template and delete its images; refused while linked clones use them."""
    from virtfleet.fleet.templates import TemplateService

    api = vf(request)
    with TemplateService(api.controller.store, api.controller.pool) as templates:
        return answer(templates.delete(name, host).as_json())


@router.post("/templates/{name}/clone", name="vm.clone", status_code=202)
def clone(request: Request, name: str, body: CloneBody,
          caller: Annotated[Principal, require("vm.create")],
          host: TemplateHost = None) -> Response:
    """Clone VMs from the template (an operation, one progress step per VM made)."""
    op = start_clone(request, caller, name, body, host)
    request.state.audit_detail = f"operation {op['id']} accepted"
    return answer(op, 202)


def start_clone(request: Request, caller: Principal, name: str, body: CloneBody,
                host: str | None, via: str = "api") -> dict[str, object]:
    """The clone operation of POST /templates/{name}/clone, for a caller holding vm.create
    somewhere: vm.create where the clones go is checked here (the API's handler and the web
    console's both call it), the request checked, the operation queued."""
    from virtfleet.fleet.templates import CloneRequest, TemplateService

    tpl = _find(request, name, host)
    where = clone_target(request, tpl, body)
    authorize(request, caller, "vm.create", where)
    req = CloneRequest(template=name, name=body.name, count=body.count, linked=body.linked,
                       pod=body.pod, site=body.site, template_host=tpl.record.name,
                       pool=body.pool, start=body.start)
    req.check()
    api = vf(request)

    def work(report: Report) -> object:
        with TemplateService(api.controller.store, api.controller.pool,
                             policy=api.policy) as templates:
            return templates.clone(req, progress=lambda s: report(
                f"{s.what}: {s.done} of {s.total}", s.done, s.total))

    return start_operation(request, caller, "vm.clone", where, work,
                           {"template": name, "body": body.model_dump(mode="json")}, via)


def clone_target(request: Request, tpl: Template, body: CloneBody) -> Target:
    """Where clones of `tpl` go (vm.create is needed there): `pod` or `site`, else the
    template's pod, on hypervisors of its groups when that is its own pod."""
    pod = body.pod if body.pod is not None or body.site is not None else tpl.record.pod
    site = body.site or next((h.site for h in vf(request).view.snapshot().hosts.values()
                              if h.pod == pod), None)
    return Target("vm", body.name, site, pod, None,
                  frozenset(tpl.record.groups) if pod == tpl.record.pod else frozenset())
