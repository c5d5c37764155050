"""The CLI's own calls to the controller (`/v1`): the fleet view for `list`, health, a resync.

Only the controller's registration token opens them (the CLI reads it from the store), compared
in constant time; they are served on the Unix socket only, never on a `--listen` address. The
REST API for people and scripts is `/api/v1` (controller/rest/); both live in the one app made
by controller/app.py, whose description (`/v1/openapi.json`, `/api/v1/openapi.json`) is served
only with a token: FastAPI's open /openapi.json, /docs and /redoc are switched off.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response

from virtfleet.controller.client import ROWS_HEADER
from virtfleet.controller.service import Controller
from virtfleet.errors import NotFound
from virtfleet.fleet.queries import failures
from virtfleet.inventory.records import HostFailure

API_PREFIX = "/v1"


def router(controller: Controller) -> APIRouter:
    r = APIRouter(prefix=API_PREFIX, tags=["cli"])

    def authorized(authorization: Annotated[str, Header()] = "") -> None:
        expected = f"Bearer {controller.token}"
        if not secrets.compare_digest(authorization.encode(), expected.encode()):
            raise HTTPException(status_code=401, detail="bad or missing token")

    def select(site: str | None, pod: str | None, host: str | None,
               group: str | None) -> set[str] | None:
        if not (site or pod or host or group):
            return None
        hosts = controller.state.hosts()
        for label, value, key in (("site", site, "site"), ("pod", pod, "pod"),
                                  ("hypervisor", host, "name")):
            if value and not any(getattr(h, key) == value for h in hosts):
                raise NotFound(f"{label} {value!r} is not in the inventory")
        if group and not any(group in h.groups for h in hosts):
            raise NotFound(f"group {group!r} is not in the inventory")
        return {h.name for h in hosts
                if (not site or h.site == site) and (not pod or h.pod == pod)
                and (not host or h.name == host) and (not group or group in h.groups)}

    # The unfiltered fleet view's rows, encoded once per state version: what most CLIs ask for.
    cache: dict[str, tuple[int, bytes]] = {}

    def all_rows() -> bytes:
        version = controller.state.version
        hit = cache.get("all")
        if hit is None or hit[0] != version:
            hit = (version, encode_rows([v.as_json() for v in controller.state.vms()]))
            cache["all"] = hit
        return hit[1]

    def as_json(data: object) -> Response:
        # The fleet view is large; plain json.dumps is several times faster than FastAPI's
        # generic encoder on 15,000 records.
        return Response(content=json.dumps(data, separators=(",", ":")),
                        media_type="application/json")

    @r.get("/health", dependencies=[Depends(authorized)])
    def health() -> Response:
        problems = controller.problems()
        return as_json({"started_at": controller.started_at.isoformat(),
                        "hosts": len(controller.state.hosts()),
                        "healthy": not problems, "problems": problems,
                        "workers": {n: w.as_json() for n, w in controller.workers.items()}})

    @r.get("/openapi.json", dependencies=[Depends(authorized)])
    def openapi(request: Request) -> Response:
        return as_json(request.app.openapi())

    @r.get("/vms", dependencies=[Depends(authorized)])
    def vms(site: str | None = None, pod: str | None = None, host: str | None = None,
            group: str | None = None, state: Annotated[str | None, Query()] = None) -> Response:
        problems = controller.problems()
        if problems:
            # A view no worker keeps current must not be served as fresh: the CLI falls back.
            raise HTTPException(status_code=503,
                                detail="controller unhealthy: " + "; ".join(problems))
        try:
            hosts = select(site, pod, host, group)
        except NotFound as exc:
            raise HTTPException(status_code=404, detail=exc.message) from None
        if controller.keeper is not None:
            # One of several controllers: say which hosts this view covers, so a CLI asks the
            # others (a site leased a moment ago, not read yet) itself (fleet/shardlist.py).
            return as_json({
                "generated_at": datetime.now(UTC).isoformat(),
                "vms": [v.as_json() for v in controller.state.vms(hosts, state)],
                "failed": [f.as_json() for f in controller.state.failures(hosts)],
                "seen": controller.state.tried(),
            })
        if hosts is None and state is None:
            return rows_answer(controller.state.failures(), all_rows())
        return rows_answer(controller.state.failures(hosts),
                           encode_rows([v.as_json() for v in controller.state.vms(hosts, state)]))

    @r.post("/sync", dependencies=[Depends(authorized)])
    def sync() -> Response:
        controller.reload_inventory()
        results = controller.sync()
        return as_json({"hosts": len(results),
                        "vms": sum(len(r.value) for r in results if r.value is not None),
                        "failed": [f.as_json() for f in failures(results)]})

    return r


def encode_rows(rows: list[dict[str, Any]]) -> bytes:
    """Rows as `json.dumps(rows)` writes them, with its default separators: the form
    `virtfleet list --json` prints to a pipe, so the CLI passes them on without parsing them."""
    return json.dumps(rows).encode()


def rows_answer(failed: Iterable[HostFailure], rows: bytes) -> Response:
    """{"generated_at", "failed", "vms"}, with where the rows stand in ROWS_HEADER."""
    head = json.dumps({"generated_at": datetime.now(UTC).isoformat(),
                       "failed": [f.as_json() for f in failed]}, separators=(",", ":"))
    prefix = (head[:-1] + ',"vms":').encode()
    return Response(content=b"".join((prefix, rows, b"}")), media_type="application/json",
                    headers={ROWS_HEADER: f"{len(prefix)}-{len(prefix) + len(rows)}"})
