"""What the REST routers share: the strict request body base, names checked as the CLI checks
them, pagination, the JSON answer, and finding what a path names (a VM, a host, a scope) as a
permission `Target`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Query, Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict

from virtfleet.errors import HostUnavailable, InvalidInput, NotFound
from virtfleet.fleet.roles import Principal, Target
from virtfleet.fleet.scope import Answers, Scope
from virtfleet.inventory.records import HostRecord
from virtfleet.validate import check_name

if TYPE_CHECKING:  # app.py imports the routers
    from virtfleet.controller.app import ApiState
    from virtfleet.controller.jobs import Job, Report, Work
    from virtfleet.provision.migrate import MoveProgress

PREFIX = "/api/v1"
MAX_PAGE = 5000


class Body(BaseModel):
    """A request body: every field declared, nothing else accepted (an unknown field, or one
    the API does not let a caller set, such as a VM's host or a disk's path, is a 422 naming
    it), and nothing changed by the handler."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=4096)


def _name(value: str) -> str:
    try:
        return check_name("name", value)
    except InvalidInput as exc:
        raise ValueError(exc.rule) from None


Name = Annotated[str, AfterValidator(_name)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="At most this many items.")]
Offset = Annotated[int, Query(ge=0, description="Skip this many items first.")]


def vf(request: Request) -> ApiState:
    state: ApiState = request.app.state.vf
    return state


def answer(data: object, status: int = 200) -> Response:
    """JSON straight from json.dumps: several times faster than FastAPI's generic encoder on a
    large fleet, and the services' as_json() shapes are already plain."""
    return Response(json.dumps(data, separators=(",", ":"), default=str), status,
                    media_type="application/json")


def page(items: Sequence[Any], limit: int, offset: int) -> dict[str, object]:
    """One page of a list, with where the next one starts (None: this is the last)."""
    end = offset + limit
    return {"total": len(items), "offset": offset, "limit": limit,
            "next": end if end < len(items) else None, "items": list(items[offset:end])}


def healthy(request: Request) -> None:
    """HostUnavailable (503) while the controller's view is not kept current: a stale view is
    not served as fresh, here as to the CLI."""
    problems = vf(request).controller.problems()
    if problems:
        raise HostUnavailable("controller unhealthy: " + "; ".join(problems))


def host_record(request: Request, name: str) -> HostRecord:
    """A hypervisor of the inventory, from the controller's view (else the store: one applied
    a moment ago that the controller has not loaded yet)."""
    check_name("host", name)
    try:
        return vf(request).view.host(name)
    except NotFound:
        [rec] = vf(request).controller.store.hypervisors(host=name)
        return rec


def vm_holders(request: Request, name: str, host: str | None) -> list[HostRecord]:
    """The hypervisors VM `name` is defined on: the controller's view, else the store's last
    sighting, else every hypervisor is asked (fleet/locate.py)."""
    from virtfleet.fleet.locate import locate_vm

    check_name("name", name)
    api = vf(request)
    found = [h for h in api.view.holders(name) if host is None or h.name == host]
    if found:
        return found
    store = api.controller.store
    seen = {v.host for v in store.fleet_vms(name=name, host=host)}
    if seen:
        return [h for h in store.hypervisors(host=host) if h.name in seen]
    return [locate_vm(name, store, api.controller.pool, host=host)]


def common_target(kind: str, name: str, recs: Sequence[HostRecord]) -> Target:
    """What is on all of `recs` (a VM defined on two hosts): a grant must cover every one."""
    first = Target.on_host(kind, name, recs[0])
    if len(recs) == 1:
        return first
    sites, pods = {r.site for r in recs}, {r.pod for r in recs}
    return Target(kind, name, sites.pop() if len(sites) == 1 else None,
                  pods.pop() if len(pods) == 1 else None, None,
                  frozenset.intersection(*(frozenset(r.groups) for r in recs)))


def vm(request: Request) -> Target:
    """scope_of for /vms/{name}...: the VM, where it is (`?host=` when its name is on several
    hypervisors)."""
    name = request.path_params["name"]
    host = request.query_params.get("host")
    return common_target("vm", name, vm_holders(request, name, host))


def host(request: Request) -> Target:
    """scope_of for /hosts/{name}...: the hypervisor."""
    return Target.of_host(host_record(request, request.path_params["name"]))


def scope_from(site: str | None, pod: str | None, host: str | None, group: str | None,
               all_: bool = False) -> Scope:
    for key, value in (("site", site), ("pod", pod), ("host", host), ("group", group)):
        if value is not None:
            check_name(key, value)
    scope = Scope(host=host, pod=pod, site=site, group=group, all=all_)
    scope.check()
    return scope


def scoped(kind: str) -> Callable[[Request], Target]:
    """scope_of for a verb over a scope given in the query (`?pod=p1`, `?all=true`): the
    network or pool named in the path, where the scope says."""
    def target(request: Request) -> Target:
        q = request.query_params
        scope = scope_from(q.get("site"), q.get("pod"), q.get("host"), q.get("group"),
                           q.get("all", "").lower() in ("1", "true", "yes"))
        return Target.of_scope(kind, request.path_params.get("name", ""), scope,
                               vf(request).view.snapshot().hosts.values())
    return target


def visible_hosts(request: Request, caller: Principal, permission: str,
                  hosts: Sequence[HostRecord]) -> list[HostRecord]:
    reach = caller.reach(permission)
    return [h for h in hosts if reach.covers_host(h)]


def submit(request: Request, caller: Principal, kind: str, target: Target,
           work: Work, params: dict[str, Any]) -> Response:
    """Start a long action as an operation: 202 with it (its id, its progress so far). The
    audit log has the request now, and the operation's outcome when it ends."""
    op = start_operation(request, caller, kind, target, work, params)
    request.state.audit_detail = f"operation {op['id']} accepted"
    return answer(op, 202)


def start_operation(request: Request, caller: Principal, kind: str, target: Target,
                    work: Work, params: dict[str, Any], via: str = "api") -> dict[str, object]:
    """Queue `work` as an operation (controller/jobs.py); the operation as it stands now. Its
    outcome goes on the audit log when it ends, marked `via` (the API's, or the console's
    `ui`): the API and the web console start their operations here alike."""
    from virtfleet.controller.audited import outcome
    from virtfleet.fleet.audit import AuditService, Write

    api = vf(request)
    store = api.controller.store

    def done(job: Job) -> None:
        error = f": {job.error.get('message')}" if job.error else ""
        AuditService(store).record(
            Write(caller.name, via, kind, target.label,
                  {**params, "_credential": caller.via, "operation": job.id}),
            result=outcome(job.status), status=job.status,
            detail=f"operation {job.id} {job.state}{error}")

    return api.jobs.submit(kind, target, caller.name, work, done)


def answers_json(answers: Answers[Any]) -> dict[str, object]:
    """A fan-out's answers: an item per host that answered (what it said, beside where it
    is; a list becomes an item per element), and the hosts that did not."""
    items: list[dict[str, object]] = []
    for h, value in answers.values:
        where = {"host": h.name, "site": h.site, "pod": h.pod}
        for v in value if isinstance(value, (list, tuple)) else [value]:
            items.append({**where, **(v.as_json() if hasattr(v, "as_json") else {"value": v})})
    return {"items": items, "failed": [f.as_json() for f in answers.failures]}


def moves(report: Report) -> Callable[[MoveProgress], None]:
    """A migration's progress as operation steps: bytes copied of the bytes to copy."""
    def tick(p: MoveProgress) -> None:
        job = p.job
        if job is None:
            report(f"{p.vm}: {p.source} -> {p.target}")
        else:
            report(f"{p.vm}: {p.source} -> {p.target}, memory pass {job.iteration}",
                   job.processed_bytes, job.processed_bytes + job.remaining_bytes)
    return tick
