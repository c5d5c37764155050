"""The console's VM actions that take a form: a snapshot (taken, reverted to, deleted), clones of
a template, a migration.

Each is the API's own operation, not a copy of it: the form is read into the API's request body
model (rest/vms.py's SnapshotBody and MigrateBody, rest/templates.py's CloneBody), so a field is
refused by the same rule in the same words, before anything is made; the caller must hold the
permission the API's route requires, on the same target; and the work is done by the function
the API's handler calls (take_snapshot, start_migration, start_clone), so clones and migrations
are operations of controller/jobs.py with an id, shown on the Operations page. Every attempt,
refusals included, is on the audit log with `via` ui; an operation's outcome is added when it
ends, as the API's is. Reverting to a snapshot and deleting one have no API body (the API
takes the snapshot from its path): their form's one field is read into SnapshotPick, and the
work is SnapshotService's revert and delete, as the API's handlers call them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from pydantic import Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from virtfleet.controller.errors import field_path, status_of
from virtfleet.controller.rest.common import Body, common_target, vf, vm_holders
from virtfleet.controller.rest.templates import CloneBody
from virtfleet.controller.rest.vms import MigrateBody, SnapshotBody
from virtfleet.controller.ui.render import page
from virtfleet.controller.ui.session_auth import (
    VIA,
    Caller,
    audit,
    check_write,
    current,
    read_form,
)
from virtfleet.controller.ui.sessions import Sessions
from virtfleet.errors import Forbidden, InvalidInput, VirtfleetError
from virtfleet.fleet.roles import Principal
from virtfleet.pydantic_errors import rule

if TYPE_CHECKING:
    from virtfleet.virt.snapshots import SnapshotInfo

_WORDS = {"extra_forbidden": "unknown field: not accepted here",
          "missing": "missing: this field is required"}


class SnapshotPick(Body):
    """The revert and delete forms' one field: which snapshot (the API's path parameter).
    Required: the API's "current snapshot" when none is named is not offered by a button."""

    snapshot: str = Field(min_length=1, max_length=255)


class SnapshotDrop(SnapshotPick):
    """The delete forms: with `children`, the snapshots below it go too (the API's
    `?children=true`); without, they are re-parented, as `virsh snapshot-delete`."""

    children: bool = False


def snapshot_rows(listed: Sequence[SnapshotInfo]) -> list[dict[str, Any]]:
    """What the snapshot table shows of each (templates/snapshots.html)."""
    return [{"name": s.name, "state": s.state, "created": s.created, "parent": s.parent,
             "descendants": s.descendants} for s in listed]


@dataclass(frozen=True)
class Form:
    """One action's form: the API body it is read into, the fields the page offers, the
    permission the API's route requires, the audit log's action, and whether that
    permission is checked on the VM itself (else only held somewhere: the body's target is
    checked by the API's own function)."""

    body: type[Body]
    fields: tuple[str, ...]
    permission: str
    action: str
    on_vm: bool


FORMS: dict[str, Form] = {
    "snapshot": Form(SnapshotBody, ("name", "description"), "vm.snapshot", "snapshot.create",
                     True),
    "migrate": Form(MigrateBody, ("to", "mode"), "vm.migrate", "vm.migrate", True),
    "clone": Form(CloneBody, ("name", "count"), "vm.create", "vm.clone", False),
    # as POST /vms/{name}/snapshots/{snapshot}/revert and DELETE /vms/{name}/snapshots/{snapshot}
    "revert": Form(SnapshotPick, ("snapshot",), "vm.snapshot", "snapshot.revert", True),
    "delete": Form(SnapshotDrop, ("snapshot", "children"), "vm.snapshot", "snapshot.delete",
                   True),
}


def parse_form(action: str, form: Mapping[str, str]) -> Body:
    """The posted form as the API's body for `action`: blank fields left out (the API's
    default, as an omitted JSON key), `csrf` set aside; the first problem as InvalidInput
    naming its field, in the API's words. A field the page does not offer is refused."""
    spec = FORMS[action]
    data = {k: v.strip() for k, v in form.items() if k != "csrf" and v.strip()}
    for key in data:
        if key not in spec.fields:
            raise InvalidInput(key, _WORDS["extra_forbidden"])
    try:
        return spec.body.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        kind = str(first.get("type"))
        raise InvalidInput(field_path(tuple(first.get("loc", ())), kind),
                           _WORDS.get(kind, rule(first))) from None


def _allowed(request: Request, p: Principal, spec: Form, name: str, host: str | None) -> str:
    """As the API's `require`: no grant of the permission anywhere is refused before the VM
    is looked up (no existence oracle); then, for a VM's own action, the grant must cover the
    VM where it is. The audit target, as the API's."""
    if not p.holds(spec.permission):
        raise Forbidden(f"{p.name} lacks {spec.permission} on any scope",
                        permission=spec.permission, target="any")
    if not spec.on_vm:
        return f"template:{name}"
    where = common_target("vm", name, vm_holders(request, name, host))
    p.check(spec.permission, where)
    return where.label


Done = tuple[Response, str]  # the page's answer, and the audit log's detail


def _snapshot(request: Request, p: Principal, name: str, host: str | None,
              body: Body) -> Done:
    from virtfleet.controller.rest.vms import take_snapshot

    assert isinstance(body, SnapshotBody)
    made = take_snapshot(request, name, body, host)
    return _snapshots_now(request, name, host, f"snapshot {made['name']} of {name} taken")


def _snapshots_now(request: Request, name: str, host: str | None, message: str) -> Done:
    """The answer to a snapshot action: its message, and the VM's snapshot table as it is now
    (with its revert and delete buttons: the caller holds vm.snapshot on the VM), for htmx to
    put in place of the page's."""
    from virtfleet.fleet.snapshots import SnapshotService

    api = vf(request)
    with SnapshotService(api.controller.store, api.controller.pool) as snaps:
        listed = snaps.snapshots(name, host)
    where = host or vm_holders(request, name, None)[0].name  # for the buttons' URLs
    return page("snapshot_done.html", ok=True, message=message, can_snapshot=True,
                vm=name, vmhost=where,
                snapshots=snapshot_rows(listed)), message


def _revert(request: Request, p: Principal, name: str, host: str | None,
            body: Body) -> Done:
    from virtfleet.fleet.snapshots import SnapshotService

    assert isinstance(body, SnapshotPick)
    api = vf(request)
    with SnapshotService(api.controller.store, api.controller.pool) as snaps:
        done = snaps.revert(name, body.snapshot, host)
    return _snapshots_now(request, name, host, f"{name} reverted to snapshot {done}")


def _delete(request: Request, p: Principal, name: str, host: str | None,
            body: Body) -> Done:
    from virtfleet.fleet.snapshots import SnapshotService

    assert isinstance(body, SnapshotDrop)
    api = vf(request)
    with SnapshotService(api.controller.store, api.controller.pool) as snaps:
        done = snaps.delete(name, body.snapshot, body.children, host)
    what = " and the snapshots below it" if body.children else ""
    return _snapshots_now(request, name, host, f"snapshot {done}{what} of {name} deleted")


def _operation(op: dict[str, object], what: str) -> Done:
    return page("operation_started.html", 202, op=op, what=what), \
        f"operation {op['id']} accepted"


def _migrate(request: Request, p: Principal, name: str, host: str | None,
             body: Body) -> Done:
    from virtfleet.controller.rest.vms import start_migration

    assert isinstance(body, MigrateBody)
    op = start_migration(request, p, name, body, via=VIA)
    return _operation(op, f"migration of {name} to {body.to or 'where the scheduler puts it'}")


def _clone(request: Request, p: Principal, name: str, host: str | None,
           body: Body) -> Done:
    from virtfleet.controller.rest.templates import start_clone

    assert isinstance(body, CloneBody)
    op = start_clone(request, p, name, body, host, via=VIA)
    return _operation(op, f"{body.count} clone(s) named {body.name} from template {name}")


WORK: dict[str, Callable[[Request, Principal, str, str | None, Body], Done]] = {
    "snapshot": _snapshot, "migrate": _migrate, "clone": _clone, "revert": _revert,
    "delete": _delete}


def vm_actions_router(sessions: Sessions) -> APIRouter:
    """POST /ui/vms/{name}/snapshot, /snapshots/revert, /snapshots/delete, /migrate and
    /clone (for clone, the VM is a template).
    Registered before the lifecycle verbs' /ui/vms/{name}/{verb}."""
    r = APIRouter(include_in_schema=False)

    async def run(request: Request, name: str, action: str) -> Response:
        spec = FORMS[action]
        host = request.query_params.get("host") or None
        params: dict[str, Any] = {"path": {"name": name}, **(
            {"query": {"host": host}} if host else {})}
        target = f"vm:{name}"
        caller: Caller | None = None
        try:
            caller = await run_in_threadpool(current, request, sessions)
            form = await read_form(request)
            who = check_write(request, caller, form.get("csrf", ""))
            # permission first: a refused caller learns nothing of its input's faults
            target = await run_in_threadpool(_allowed, request, who.principal, spec, name,
                                             host)
            body = parse_form(action, form)
            params["form"] = body.model_dump(mode="json")
            resp, detail = await run_in_threadpool(WORK[action], request, who.principal,
                                                   name, host, body)
        except VirtfleetError as exc:
            status = status_of(exc)
            await run_in_threadpool(audit, request, caller, spec.action, target, params,
                                    status, exc.message)
            return page("flash.html", status, ok=False, message=exc.message)
        where = getattr(request.state, "target", None)  # the API's: where clones go
        if not spec.on_vm and where is not None:
            target = where.label
        # as answered: 200 for what is done, 202 for an operation accepted
        await run_in_threadpool(audit, request, caller, spec.action, target, params,
                                resp.status_code, detail)
        return resp

    @r.post("/ui/vms/{name}/snapshot")
    async def snapshot(request: Request, name: str) -> Response:
        return await run(request, name, "snapshot")

    @r.post("/ui/vms/{name}/snapshots/revert")
    async def revert(request: Request, name: str) -> Response:
        return await run(request, name, "revert")

    @r.post("/ui/vms/{name}/snapshots/delete")
    async def delete(request: Request, name: str) -> Response:
        return await run(request, name, "delete")

    @r.post("/ui/vms/{name}/migrate")
    async def migrate(request: Request, name: str) -> Response:
        return await run(request, name, "migrate")

    @r.post("/ui/vms/{name}/clone")
    async def clone(request: Request, name: str) -> Response:
        return await run(request, name, "clone")

    return r
