"""Every write through the API goes on the audit log, as it ended: done, failed, or refused
(no token, no grant, bad input, a body too large), with who asked, what, on what, and the
request's parameters with secrets masked (fleet/audit.py masks them).

A router whose writes are audited is made with `APIRouter(route_class=AuditedRoute)`; reads
(GET, HEAD) are not recorded. The action is the route's name (`vm.start`); the target is the
one the permission was checked on (controller/auth.py keeps it on the request), else what the
path names (`vm:web01`). An operation that answers 202 is recorded when accepted and again
when it ends (controller/jobs.py's `done`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from virtfleet.controller.auth import authenticate
from virtfleet.errors import VirtfleetError
from virtfleet.fleet.audit import AuditService, Write
from virtfleet.fleet.roles import Principal, Target

log = logging.getLogger("virtfleet.controller.audit")

READS = frozenset({"GET", "HEAD", "OPTIONS"})
API_PREFIX = "/api/v1/"
# A collection in the path -> what one of its members is called in the audit log.
_KINDS = {"vms": "vm", "hosts": "host", "templates": "template", "networks": "network",
          "pools": "pool", "users": "user", "tokens": "token", "grants": "grant",
          "operations": "operation", "installs": "install"}


def path_target(path: str, path_params: Mapping[str, Any]) -> str:
    """What a request's path names: `vm:web01` for /api/v1/vms/web01/start; the collection
    for a create (`vms`)."""
    rest = path.removeprefix(API_PREFIX).split("/") if path.startswith(API_PREFIX) else []
    if not rest or not rest[0]:
        return path
    kind = _KINDS.get(rest[0], rest[0])
    if len(rest) > 1 and rest[1]:
        return f"{kind}:{rest[1]}"
    return rest[0]


def outcome(status: int) -> str:
    """ok for 2xx; denied when the request was refused before anything was tried (no token,
    no grant, bad input, too large); failed otherwise (not found, conflict, a host down)."""
    if status < 400:
        return "ok"
    if status in (400, 401, 403, 413, 422):
        return "denied"
    return "failed"


def caller_name(conn: HTTPConnection) -> tuple[str, str]:
    """(name, credential) of whoever sent the request, if its token is good: a refused request
    is recorded under its sender when the sender is known, `-` when not."""
    found = getattr(conn.state, "principal", None)
    if isinstance(found, Principal):
        return found.name, found.via
    try:
        p = authenticate(conn)
    except VirtfleetError:
        return "-", "none"
    return p.name, p.via


def record(conn: HTTPConnection, action: str, params: dict[str, Any], status: int,
           detail: str = "", target: str | None = None) -> None:
    """Put one API write on the log; a failure to record is logged, never the caller's."""
    name, via = caller_name(conn)
    found = getattr(conn.state, "target", None)
    where = target or (found.label if isinstance(found, Target)
                       else path_target(conn.url.path, conn.path_params))
    write = Write(name, "api", action, where, {**params, "_credential": via})
    try:
        AuditService(conn.app.state.vf.controller.store).record(
            write, result=outcome(status), status=status, detail=detail)
    except VirtfleetError as exc:
        log.error("could not record %s on %s by %s in the audit log: %s", action, where, name,
                  exc.message)


def _body_params(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        return {"body": f"({len(raw)} bytes, not JSON)"}
    return {"body": body}


def _detail(exc: BaseException) -> tuple[int, str]:
    from virtfleet.controller.errors import status_of

    if isinstance(exc, VirtfleetError):
        return status_of(exc), exc.message
    if isinstance(exc, RequestValidationError):
        from virtfleet.controller.errors import validation_error

        err = validation_error(exc)
        return 422, err.message
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail)
    return 500, f"{type(exc).__name__}: {exc}"


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class AuditedRoute(APIRoute):
    """An APIRoute whose writes are recorded on the audit log, however they end."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        if self.methods and self.methods <= READS:
            return handler
        action = self.name

        async def audited(request: Request) -> Response:
            status, detail = 500, "the request did not finish"
            try:
                response = await handler(request)
                status = response.status_code
                detail = getattr(request.state, "audit_detail", "")
                return response
            except (VirtfleetError, RequestValidationError, HTTPException) as exc:
                status, detail = _detail(exc)
                raise
            finally:
                params = {**_body_params(await request.body()),
                          **({"path": dict(request.path_params)} if request.path_params else {}),
                          **({"query": dict(request.query_params)}
                             if request.query_params else {})}
                await run_in_threadpool(record, request, action, params, status, detail)

        return audited
