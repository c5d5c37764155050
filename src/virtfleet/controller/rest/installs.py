"""`/api/v1/installs`: the network installs of hypervisors `boot serve` knows (`boot status`):
each one's state, when it got there, its post-install check, and requests refused in its
name. Read from the store; never a token or its hash.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Response

from virtfleet.controller.audited import AuditedRoute
from virtfleet.controller.auth import require
from virtfleet.controller.rest.common import PREFIX, Limit, Offset, answer, page, vf
from virtfleet.errors import NotFound
from virtfleet.fleet.roles import Principal, Target
from virtfleet.inventory.installs import InstallRecord
from virtfleet.validate import check_name

router = APIRouter(prefix=PREFIX, tags=["installs"], route_class=AuditedRoute)


def _target(r: InstallRecord) -> Target:
    return Target("install", r.host, r.site, r.pod, r.host)


@router.get("/installs", name="install.list")
def list_installs(request: Request, caller: Annotated[Principal, require("install.read")],
                  state: str | None = None, limit: Limit = 500, offset: Offset = 0
                  ) -> Response:
    """Every install the caller may see (of a site or pod it has install.read on)."""
    reach = caller.reach("install.read")
    rows = [r.as_json() for r in vf(request).controller.store.installs()
            if reach.covers(_target(r)) and (state is None or r.state == state)]
    return answer(page(rows, limit, offset))


@router.get("/installs/{host}", name="install.get")
def get_install(request: Request, host: str,
                caller: Annotated[Principal, require("install.read")]) -> Response:
    check_name("host", host)
    found = vf(request).controller.store.install(host)
    if found is None or not caller.can("install.read", _target(found)):
        raise NotFound(f"no install of {host!r} (see GET /api/v1/installs)")
    return answer(found.as_json())
