"""`/api/v1/audit`: the audit log (fleet/audit.py) for admins on the whole estate: reading it
(`audit.read`), and retention (`audit.prune`), which is recorded like any write.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from virtfleet.controller.audited import AuditedRoute
from virtfleet.controller.auth import ESTATE, require
from virtfleet.controller.rest.common import PREFIX, Body, answer, vf
from virtfleet.fleet.audit import AuditQuery, AuditService, PruneRequest
from virtfleet.fleet.roles import Principal

router = APIRouter(prefix=PREFIX, tags=["audit"], route_class=AuditedRoute)


class PruneBody(Body):
    before: datetime


@router.get("/audit", name="audit.list")
def list_audit(request: Request,
               caller: Annotated[Principal, require("audit.read", ESTATE)],
               since: datetime | None = None, user: str | None = None,
               target: str | None = None,
               limit: Annotated[int, Query(ge=1, le=100_000)] = 1000) -> Response:
    """The newest `limit` entries that match, oldest first: who, through what, what, on what,
    with which parameters (secrets masked), how it ended, when."""
    entries = AuditService(vf(request).controller.store).entries(
        AuditQuery(since=since, actor=user, target=target, limit=limit))
    return answer([e.as_json() for e in entries])


@router.post("/audit/prune", name="audit.prune")
def prune_audit(request: Request, body: PruneBody,
                caller: Annotated[Principal, require("audit.prune", ESTATE)]) -> Response:
    """Remove the entries older than `before` (retention); this prune is itself recorded."""
    done = AuditService(vf(request).controller.store).prune(PruneRequest(body.before))
    request.state.audit_detail = f"removed {done.removed} entries"
    return answer(done.as_json())
