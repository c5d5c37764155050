"""The web console's routes under /ui: sign-in and sign-out, the estate map, the VM table, a VM's
page, installs and the audit trail, VM lifecycle actions, the events stream and the static files.

Every page reads through the same view and services as /api/v1 (controller/view.py,
fleet/vms.py, fleet/snapshots.py) and checks the same permissions on the same targets
(fleet/roles.py); every write is recorded on the audit log with `via` ui. None of these routes
is part of the public API's document (include_in_schema=False).
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' parameters from their
# annotations, and they name `Who`, a local of router(), which a string could not resolve.


import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from virtfleet.boot.status import COLUMNS as STATUS_COLUMNS
from virtfleet.boot.status import status_row
from virtfleet.controller.errors import status_of
from virtfleet.controller.events import EventBus, Visible
from virtfleet.controller.events_api import events_router
from virtfleet.controller.rest.common import common_target, vf, vm_holders
from virtfleet.controller.routers import events_visible
from virtfleet.controller.service import Controller
from virtfleet.controller.ui import estate as estate_model
from virtfleet.controller.ui import metrics as metrics_model
from virtfleet.controller.ui.assets import ASSETS
from virtfleet.controller.ui.capacity import CapacityQuery, charts, per_pod
from virtfleet.controller.ui.console import console_router
from virtfleet.controller.ui.render import HEADERS, page
from virtfleet.controller.ui.session_auth import (
    COOKIE,
    LOGIN_COOKIE,
    Caller,
    audit,
    check_write,
    clear_cookie,
    current,
    new_login_token,
    read_form,
    set_cookie,
    stream_visible,
)
from virtfleet.controller.ui.sessions import Sessions, same_token
from virtfleet.controller.ui.tickets import SCREENS, Tickets
from virtfleet.controller.ui.vmacts import snapshot_rows, vm_actions_router
from virtfleet.controller.ui.vmtable import COLUMNS, SIZES, TableQuery, choices, table
from virtfleet.controller.view import VMFilter
from virtfleet.errors import Forbidden, InvalidInput, NotFound, Unauthorized, VirtfleetError
from virtfleet.fleet.roles import Principal, Target
from virtfleet.fleet.scope import Scope

if TYPE_CHECKING:
    from virtfleet.controller.app import ApiState
    from virtfleet.fleet.volumes import DiskChain

VERBS = ("start", "shutdown", "reboot", "destroy")
REASONS = {400: "Bad request", 401: "Not signed in", 403: "Forbidden", 404: "Not found",
           409: "Busy", 502: "Hypervisor error", 503: "Unavailable", 504: "Timed out"}


def _roles(p: Principal) -> str:
    return ", ".join(f"{g.role} on {g.scope}" for g in p.grants) or "no grants"


def _error(exc: VirtfleetError, caller: Caller | None = None) -> Response:
    status = status_of(exc)
    return page("error.html", status, status=status, reason=REASONS.get(status, "Error"),
                message=exc.message, **(_frame(caller, "") if caller else {"me": None}))


def _frame(caller: Caller, nav: str, bus: EventBus | None = None) -> dict[str, Any]:
    """What base.html needs of the signed-in user. `stream`: where the page's events stream
    starts: after the last event now, since the page already shows everything before it (the
    ring's whole backlog, thousands of host events on a large estate, would only be replayed
    onto cells that already show it). Pages without live parts (no `bus`) open no stream."""
    p = caller.principal
    stream = ""
    if bus is not None:
        seq = bus.last_seq
        stream = f"/ui/events?since={bus.epoch}-{seq}" if seq else "/ui/events"
    return {"me": p.name, "roles": _roles(p), "csrf": caller.session.csrf, "nav": nav,
            "can_audit": p.can("audit.read", Target.estate()), "stream": stream}


def _chains(api: "ApiState", name: str, host: str) -> tuple[dict[str, "DiskChain"], str]:
    """Each disk's backing chain by its source (fleet/volumes.py), and what went wrong
    reading them: a page still shows the VM if a pool cannot be read."""
    from virtfleet.fleet.volumes import VolumeService

    try:
        with VolumeService(api.controller.store, api.controller.pool) as volumes:
            return {c.path: c for c in volumes.chains(name, host)}, ""
    except VirtfleetError as exc:
        return {}, exc.message


def operation_row(op: dict[str, Any]) -> dict[str, Any]:
    """One operation of controller/jobs.py as the Operations page shows it: its last step,
    how far it is (percent, when the step says of how many), and its outcome."""
    steps = op.get("progress") or []
    last = steps[-1] if steps else {}
    done, total = last.get("done"), last.get("total")
    percent = (min(100, int(100 * done / total)) if isinstance(done, int)
               and isinstance(total, int) and total > 0 else None)
    if op.get("state") == "succeeded":
        percent = 100
    error = op.get("error") or {}
    outcome = error.get("message", "") if error else _result_text(op.get("result"))
    started = str(op.get("started_at") or op.get("created_at") or "")
    return {"id": op["id"], "kind": op["kind"], "target": op["target"], "user": op["user"],
            "state": op["state"], "started": started[:19].replace("T", " "),
            "step": last.get("what", ""), "percent": percent, "outcome": outcome}


def _result_text(result: object) -> str:
    """A finished operation's result in a few words: each VM made or moved, and how."""
    items = result if isinstance(result, list) else [result] if result else []
    words = []
    for item in items[:5]:
        if isinstance(item, dict):
            words.append(" ".join(str(item[k]) for k in ("name", "vm", "host", "result")
                                  if item.get(k) is not None))
    more = f" and {len(items) - 5} more" if len(items) > 5 else ""
    return "; ".join(words) + more


def _next(value: str) -> str:
    """Where to go after sign-in: a console page of this site, never another site."""
    if value.startswith("/ui/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/ui/estate"


def router(controller: Controller, tickets: Tickets | None = None) -> APIRouter:
    """The console's routes. Its sessions live as long as this router (one per listener)."""
    sessions = Sessions()
    r = APIRouter(include_in_schema=False)

    def signed_in(request: Request) -> Caller | None:
        return current(request, sessions)

    Who = Annotated[Caller | None, Depends(signed_in)]

    def to_login(request: Request, target: str | None = None) -> Response:
        """Sign-in, then back to `target` (default: what was asked). A request htmx makes on
        its own (a poll) is answered HX-Redirect, so the whole page goes to sign-in rather
        than the sign-in form being drawn inside the part it polls."""
        if target is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        login = f"/ui/login?next={_quote(target)}"
        if request.headers.get("hx-request") == "true":
            return Response(status_code=204, headers={"HX-Redirect": login})
        return RedirectResponse(login, 303)

    def reader(render: Callable[[Request, Caller], Response]) -> Callable[..., Response]:
        """A page for signed-in users: sign-in first otherwise; errors as an error page."""
        def handler(request: Request, caller: Who) -> Response:
            if caller is None:
                return to_login(request)
            began = time.perf_counter()
            try:
                resp = render(request, caller)
            except VirtfleetError as exc:
                resp = _error(exc, caller)
            # how long the controller took on the page, for the browser's devtools (and
            # bench/ui, which reads it from the navigation's timing)
            resp.headers["Server-Timing"] = f"page;dur={(time.perf_counter() - began) * 1000:.1f}"
            return resp
        return handler

    # ------------------------------------------------------------------ sign-in, sign-out

    @r.get("/ui")
    @r.get("/ui/")
    def home() -> Response:
        return RedirectResponse("/ui/estate", 303)

    @r.get("/ui/login")
    def login_form(request: Request, caller: Who, next: str = "") -> Response:
        if caller is not None:
            return RedirectResponse(_next(next), 303)
        return _login_page(request, next, "", "", 200)

    def _login_page(request: Request, next_: str, user: str, error: str,
                    status: int) -> Response:
        token = new_login_token()
        resp = page("login.html", status, me=None, login_csrf=token, next=_next(next_),
                    user=user, error=error)
        set_cookie(resp, request, LOGIN_COOKIE, token, max_age=3600)
        return resp

    @r.post("/ui/login")
    async def login(request: Request) -> Response:
        try:
            form = await read_form(request)
        except InvalidInput as exc:
            return _error(exc)
        user, next_ = form.get("user", "").strip(), form.get("next", "")
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not same_token(form.get("csrf", ""), expected):
            await run_in_threadpool(audit, request, None, "ui.signin", f"user:{user[:64]}",
                                    {"user": user[:64]}, 403, "sign-in form's CSRF token "
                                    "missing or wrong")
            return _login_page(request, next_, user, "The sign-in form expired or came from "
                               "another site: try again.", 403)
        try:
            principal = await run_in_threadpool(
                request.app.state.vf.authenticator.authenticate, form.get("token", ""))
            if principal.name != user:
                raise Unauthorized("the token is not this user's")
        except Unauthorized:
            await run_in_threadpool(audit, request, None, "ui.signin", f"user:{user[:64]}",
                                    {"user": user[:64]}, 401, "bad user or token")
            # the same words whatever was wrong, as the API's 401
            return _login_page(request, next_, user, "Bad user or token, or the token "
                               "expired or was revoked.", 401)
        cookie, _session = sessions.open(principal.name, form["token"])
        await run_in_threadpool(audit, request, principal, "ui.signin",
                                f"user:{principal.name}", {}, 200, "signed in")
        resp = RedirectResponse(_next(next_), 303)
        set_cookie(resp, request, COOKIE, cookie)
        clear_cookie(resp, request, LOGIN_COOKIE)
        return resp

    @r.post("/ui/logout")
    async def logout(request: Request, caller: Who) -> Response:
        try:
            form = await read_form(request)
            check_write(request, caller, form.get("csrf", ""))
        except VirtfleetError as exc:
            await run_in_threadpool(audit, request, caller, "ui.signout", "session", {},
                                    status_of(exc), exc.message)
            return _error(exc, caller)
        assert caller is not None  # check_write let it through
        sessions.close(caller.cookie)  # the old cookie is refused from now on
        await run_in_threadpool(audit, request, caller, "ui.signout",
                                f"user:{caller.name}", {}, 200, "signed out")
        resp = RedirectResponse("/ui/login", 303)
        clear_cookie(resp, request, COOKIE)
        return resp

    # ------------------------------------------------------------------ pages

    def estate_page(request: Request, caller: Caller) -> Response:
        p = caller.principal
        if not p.holds("host.read"):
            raise Forbidden(f"{p.name} lacks host.read on any scope",
                            permission="host.read", target="any")
        view = vf(request).view
        snap = view.snapshot()
        hosts = [h for h in snap.hosts.values() if p.reach("host.read").covers_host(h)]
        _snap, rows = view.vms(VMFilter(), p.reach("vm.read")) if p.holds("vm.read") else (
            snap, [])
        stats = controller.observe.stats.last
        ha = {n: h.state.value for n, h in dict(controller.ha.hosts).items()}
        model = estate_model.build(hosts, rows, (f.host for f in snap.failed),
                                   stats.capacity, ha)
        return page("estate.html", **_frame(caller, "estate", controller.events), estate=model)

    def vms_page(request: Request, caller: Caller) -> Response:
        p = caller.principal
        if not p.holds("vm.read"):
            raise Forbidden(f"{p.name} lacks vm.read on any scope", permission="vm.read",
                            target="any")
        query = TableQuery.parse(request.query_params)
        view = vf(request).view
        t = table(view, query, p)
        context = {**_frame(caller, "vms", controller.events), "t": t, "f": query,
                   "columns": COLUMNS, "failed": t.failed, "can_act": any(
                       p.holds(perm) for perm in ("vm.lifecycle", "vm.snapshot", "vm.migrate"))}
        if request.headers.get("hx-request") == "true":
            return page("vmtable.html", **context)
        return page("vms.html", **context, selects=choices(view.snapshot(), p), sizes=SIZES)

    def vm_page(request: Request, caller: Caller) -> Response:
        from virtfleet.fleet.snapshots import SnapshotService
        from virtfleet.fleet.vms import VMService
        from virtfleet.provision.templates import is_template
        from virtfleet.xml.domain import Domain

        name = request.path_params["name"]
        host = request.query_params.get("host") or None
        p = caller.principal
        if not p.holds("vm.read"):
            raise Forbidden(f"{p.name} lacks vm.read on any scope", permission="vm.read",
                            target="any")
        p.check("vm.read", common_target("vm", name, vm_holders(request, name, host)))
        api = vf(request)
        with VMService(api.controller.store, api.controller.pool) as vms:
            info = vms.info(name, host)
            dom = Domain.parse(vms.dumpxml(name, info.host), "domain")
        with SnapshotService(api.controller.store, api.controller.pool) as snaps:
            snapshots = snaps.snapshots(name, info.host)
        chains, chain_error = _chains(api, name, info.host)
        facts = info.as_json()
        devices = dom.devices
        backlog, _sub = controller.events.subscribe(visible=events_visible(p), follow=False)
        events = [{"at": e.at.strftime("%Y-%m-%d %H:%M:%S"), "kind": e.kind,
                   "what": ", ".join(f"{k} {v}" for k, v in e.data.items() if v is not None)}
                  for e in backlog if e.vm == name and e.host == info.host][-20:][::-1]
        snap = api.view.snapshot()
        rec = snap.hosts.get(info.host)
        here = Target.of_vm(name, rec) if rec is not None else None
        template = is_template(dom)
        # each form shown only where the API would allow it; the server checks again
        can = {verb: here is not None and p.can(perm, here) and not template
               for verb, perm in (("act", "vm.lifecycle"), ("snapshot", "vm.snapshot"),
                                  ("migrate", "vm.migrate"))}
        reach = p.reach("vm.migrate")
        targets = sorted(h.name for h in snap.hosts.values() if rec is not None
                         and h.pod == rec.pod and h.name != rec.name and reach.covers_host(h))
        can_clone = template and rec is not None and p.can("vm.create", Target(
            "vm", name, rec.site, rec.pod, None, frozenset(rec.groups)))
        return page("vm.html", **_frame(caller, "vms", controller.events), info=facts,
                    m=sparks(info.host, name), error="",
                    facts=[(k, v) for k, v in facts.items() if k not in ("name", "state")],
                    disks=list(devices.disks) if devices is not None else [],
                    chains=chains, chain_error=chain_error,
                    nics=list(devices.interfaces) if devices is not None else [],
                    snapshots=snapshot_rows(snapshots),
                    events=events, can_act=can["act"], can_snapshot=can["snapshot"],
                    can_migrate=can["migrate"], can_clone=can_clone, targets=targets,
                    # the screen's console: the kind of the VM's first display the console shows
                    screen=next((g.type for g in (devices.graphics if devices is not None
                                                  else ()) if g.type in SCREENS), None),
                    pod=rec.pod if rec is not None else "its pod")

    def sparks(host: str, name: str) -> metrics_model.Metrics:
        observe = controller.observe
        return metrics_model.build(observe.stats.samples.series(host, name),
                                   observe.stats_interval)

    @r.get("/ui/vms/{name}/metrics")
    def metrics_part(request: Request, name: str, caller: Who) -> Response:
        """A VM's sparklines alone, for htmx to put in place every stats pass: read from the
        controller's memory, never from a hypervisor; the same grant as the VM's page. The
        poll runs unattended, so an ended session sends the page to sign-in (HX-Redirect)
        and an error is one line in the box, which then stops polling."""
        host = request.query_params.get("host") or None
        if caller is None:
            return to_login(request, f"/ui/vms/{_quote(name)}"
                            + (f"?host={_quote(host)}" if host else ""))
        p = caller.principal
        try:
            if not p.holds("vm.read"):
                raise Forbidden(f"{p.name} lacks vm.read on any scope", permission="vm.read",
                                target="any")
            holders = vm_holders(request, name, host)
            p.check("vm.read", common_target("vm", name, holders))
        except VirtfleetError as exc:
            return page("metrics.html", status_of(exc), m=metrics_model.build(None, 0),
                        name=name, host=host or "", error=exc.message)
        where = holders[0].name if host is None else host
        return page("metrics.html", m=sparks(where, name), name=name, host=where, error="")

    def operations_page(request: Request, caller: Caller) -> Response:
        """What GET /api/v1/operations answers the user, newest first, with progress; htmx
        (live.js, on an operation event) asks for the tables alone."""
        from virtfleet.controller.rest.operations import visible_operations

        p = caller.principal
        if not p.holds("operation.read"):
            raise Forbidden(f"{p.name} lacks operation.read on any scope",
                            permission="operation.read", target="any")
        seen = visible_operations(request, p)
        context = {**_frame(caller, "operations", controller.events),
                   "operations": [operation_row(o) for o in reversed(seen["operations"])],
                   "journal": seen["journal"]}
        if request.headers.get("hx-request") == "true":
            return page("ops.html", **context)
        return page("operations.html", **context)

    def installs_page(request: Request, caller: Caller) -> Response:
        p = caller.principal
        if not p.holds("install.read"):
            raise Forbidden(f"{p.name} lacks install.read on any scope",
                            permission="install.read", target="any")
        reach = p.reach("install.read")
        # boot status's columns, in its words (boot/status.py)
        rows = [dict(zip(STATUS_COLUMNS, status_row(i), strict=True))
                for i in vf(request).controller.store.installs()
                if reach.covers(Target("install", i.host, i.site, i.pod, i.host))]
        return page("installs.html", **_frame(caller, "installs"), rows=rows,
                    columns=STATUS_COLUMNS)

    def audit_page(request: Request, caller: Caller) -> Response:
        from virtfleet.fleet.audit import AuditQuery, AuditService

        caller.principal.check("audit.read", Target.estate())
        entries = AuditService(vf(request).controller.store).entries(AuditQuery(limit=300))
        return page("audit.html", **_frame(caller, "audit"),
                    entries=[e.as_json() for e in reversed(entries)])

    def capacity_page(request: Request, caller: Caller) -> Response:
        """`plan headroom` for a VM shape, per pod: asked of the hypervisors now, as the
        API's GET /api/v1/plan/headroom (the same service, the same grant check)."""
        from virtfleet.controller.rest.common import scope_from
        from virtfleet.fleet.planning import HeadroomRequest, PlanningService
        from virtfleet.placement.models import VMShape

        p = caller.principal
        if not p.holds("plan.read"):
            raise Forbidden(f"{p.name} lacks plan.read on any scope", permission="plan.read",
                            target="any")
        q = CapacityQuery.parse(request.query_params)
        scope = scope_from(q.site or None, q.pod or None, None, q.group or None)
        api = vf(request)
        p.check("plan.read", Target.of_scope("plan", "", scope,
                                             api.view.snapshot().hosts.values()))
        with PlanningService(api.controller.store, api.controller.pool,
                             policy=api.policy) as plan:
            room = plan.headroom(HeadroomRequest(
                VMShape(vcpus=q.vcpus, memory_mib=q.memory_mib, disk_gib=0), scope))
        loss = [c for c in room.loss if c.kind == "pod" or not c.ok]
        by_pod, by_group = charts(room.hosts, q.vcpus, q.memory_mib)
        return page("capacity.html", **_frame(caller, "capacity"), q=q, total=room.fits,
                    by_pod=by_pod, by_group=by_group,
                    pods=per_pod(room.hosts), loss=loss, asked=room.asked,
                    hosts_ok=sum(1 for c in room.loss if c.kind == "host" and c.ok),
                    failed=sorted(f.host for f in room.failed))

    r.get("/ui/capacity")(reader(capacity_page))
    r.get("/ui/estate")(reader(estate_page))
    r.get("/ui/vms")(reader(vms_page))
    r.get("/ui/vms/{name}")(reader(vm_page))
    r.get("/ui/installs")(reader(installs_page))
    r.get("/ui/audit")(reader(audit_page))
    r.get("/ui/operations")(reader(operations_page))

    # ------------------------------------------------------------------ actions

    # snapshot, migrate, clone: before /ui/vms/{name}/{verb}, which would take their paths
    r.include_router(vm_actions_router(sessions))

    @r.post("/ui/vms/{name}/{verb}")
    def act(request: Request, name: str, verb: str, caller: Who) -> Response:
        """A lifecycle verb on one VM, as POST /api/v1/vms/{name}/{verb}: the same grant
        (vm.lifecycle on the VM where it is), the same service, recorded on the audit log."""
        from virtfleet.fleet.vms import ActRequest, VMService

        host = request.query_params.get("host") or None
        target = f"vm:{name}"
        params: dict[str, Any] = {"path": {"name": name}, **(
            {"query": {"host": host}} if host else {})}
        action = f"vm.{verb}" if verb in VERBS else f"POST {request.url.path}"
        try:
            who = check_write(request, caller)
            if verb not in VERBS:
                raise NotFound(f"no action {verb!r} (actions: {', '.join(VERBS)})")
            p = who.principal
            # No grant anywhere: refused before the VM is looked up (no existence oracle).
            if not p.holds("vm.lifecycle"):
                raise Forbidden(f"{p.name} lacks vm.lifecycle on any scope",
                                permission="vm.lifecycle", target="any")
            where = common_target("vm", name, vm_holders(request, name, host))
            target = where.label
            p.check("vm.lifecycle", where)
            api = vf(request)
            with VMService(api.controller.store, api.controller.pool) as vms:
                done = vms.act(ActRequest(verb, name, Scope(host=host)))
        except VirtfleetError as exc:
            status = status_of(exc)
            audit(request, caller, action, target, params, status, exc.message)
            return page("flash.html", status, ok=False, message=exc.message)
        [one] = done.vms
        message = f"{one.name} on {one.host}: {one.result}"
        audit(request, caller, action, target, params, 200, message)
        return page("flash.html", ok=True, message=message)

    # ------------------------------------------------------------------ live, static

    def session_caller(request: Request) -> Caller:
        caller = current(request, sessions)
        if caller is None:
            raise Unauthorized("not signed in, or the session ended")
        p = caller.principal
        if not p.holds("events.read"):
            raise Forbidden(f"{p.name} lacks events.read on any scope",
                            permission="events.read", target="any")
        return caller

    def visible(caller: Caller) -> Visible:
        return stream_visible(sessions, caller, events_visible)

    r.include_router(console_router(controller, sessions, _frame, _error, tickets))
    r.include_router(events_router(controller.events, session_caller, visible,
                                   path="/ui/events"))

    @r.get("/ui/static/{name}")
    def static(name: str, v: str = "") -> Response:
        asset = ASSETS.get(name)
        if asset is None:
            return Response("not found", 404, media_type="text/plain")
        # kept a year only under the URL naming this build (pages link ?v=ETAG); a module
        # imported by another (screen.js) has no ?v=, and is asked again each time
        cache = ("public, max-age=31536000, immutable" if v == asset.etag
                 else "no-cache")
        return Response(asset.body, media_type=asset.media_type,
                        headers={"Cache-Control": cache,
                                 "ETag": f'"{asset.etag}"',
                                 "X-Content-Type-Options": HEADERS["X-Content-Type-Options"]})

    return r


def _quote(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/")
