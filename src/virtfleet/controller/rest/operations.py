"""`/api/v1/operations`: the API's long actions (controller/jobs.py: their progress, then their
result or error) and the journal of multi-step operations (fleet/operations.py: running ones,
and interrupted ones whose steps `cleanup` undoes).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Response

from virtfleet.controller.audited import AuditedRoute
from virtfleet.controller.auth import authorize, require
from virtfleet.controller.rest.common import PREFIX, answer, vf
from virtfleet.errors import NotFound
from virtfleet.fleet.operations import Operation, OperationService
from virtfleet.fleet.roles import Principal, Target

router = APIRouter(prefix=PREFIX, tags=["operations"], route_class=AuditedRoute)


def _journal_target(request: Request, op: Operation) -> Target:
    """A journaled operation's target is `host/vm`: it sits where that host does."""
    host, _, name = op.record.target.partition("/")
    rec = vf(request).view.snapshot().hosts.get(host)
    if rec is None:
        return Target("operation", op.record.id)
    return Target.on_host(op.record.kind, name or host, rec)


def _journal(request: Request) -> list[Operation]:
    api = vf(request)
    with OperationService(api.controller.store, api.controller.pool) as ops:
        return ops.operations()


@router.get("/operations", name="operation.list")
def list_operations(request: Request,
                    caller: Annotated[Principal, require("operation.read")]) -> Response:
    """The API's operations (queued, running, and the last ones finished) and the journal's
    (running, failed, interrupted) that the caller may see."""
    return answer(visible_operations(request, caller))


def visible_operations(request: Request, caller: Principal) -> dict[str, list[dict[str, object]]]:
    """The operations `caller` may see, as GET /operations answers them (the web console's
    Operations page shows the same): `operations`, the API's (oldest first), and `journal`."""
    reach = caller.reach("operation.read")
    api = vf(request)
    return {"operations": api.jobs.listing(reach.covers),
            "journal": [o.as_json() for o in _journal(request)
                        if reach.covers(_journal_target(request, o))]}


@router.get("/operations/{op_id}", name="operation.get")
def get_operation(request: Request, op_id: str,
                  caller: Annotated[Principal, require("operation.read")]) -> Response:
    """One operation: its state, progress (each step with when it happened), and result or
    error; or a journal entry by its id."""
    api = vf(request)
    target = api.jobs.target_of(op_id)
    if target is not None:
        authorize(request, caller, "operation.read", target)
        return answer(api.jobs.get(op_id))
    for o in _journal(request):
        if o.record.id == op_id:
            authorize(request, caller, "operation.read", _journal_target(request, o))
            return answer(o.as_json())
    raise NotFound(f"no operation {op_id!r}")


@router.post("/operations/{op_id}/cleanup", name="operation.cleanup")
def cleanup(request: Request, op_id: str,
            caller: Annotated[Principal, require("operation.cleanup")]) -> Response:
    """Undo what an interrupted journaled operation made, newest step first (`ops cleanup`);
    one whose process still runs is refused."""
    from virtfleet.fleet.operations import CleanupRequest

    found = [o for o in _journal(request) if o.record.id == op_id]
    if not found:
        raise NotFound(f"no operation {op_id!r} in the journal")
    authorize(request, caller, "operation.cleanup", _journal_target(request, found[0]))
    api = vf(request)
    with OperationService(api.controller.store, api.controller.pool) as ops:
        done = ops.clean_up(CleanupRequest(op_id))
    return answer([d.as_json() for d in done])
