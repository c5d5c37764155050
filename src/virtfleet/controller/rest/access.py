"""`/api/v1/users`, `/api/v1/tokens`, `/api/v1/grants`: who may use the API and what they may
do there (fleet/access.py), for admins on the whole estate (`user.manage`), as `virtfleet user`,
`token` and `grant` do. A new token is in the answer once and never again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Request, Response
from pydantic import Field

from virtfleet.controller.audited import AuditedRoute
from virtfleet.controller.auth import ESTATE, require
from virtfleet.controller.rest.common import PREFIX, Body, Name, answer, vf
from virtfleet.fleet.access import AccessService, AddUser, CreateToken, GrantRequest
from virtfleet.fleet.roles import Principal

router = APIRouter(prefix=PREFIX, tags=["access"], route_class=AuditedRoute)
Admin = Annotated[Principal, require("user.manage", ESTATE)]


class UserBody(Body):
    name: Name
    display_name: str = Field(default="", max_length=200)


class TokenBody(Body):
    user: Name
    description: str = Field(default="", max_length=200)
    expires_in_days: int | None = Field(default=90, ge=1, le=3650, description="None: until "
                                        "revoked.")


class GrantBody(Body):
    user: Name
    role: Literal["viewer", "operator", "admin"]
    scope: str = Field(max_length=260, description="all, site:NAME, pod:NAME or group:NAME")


def _access(request: Request) -> AccessService:
    return AccessService(vf(request).controller.store)


@router.get("/users", name="user.list")
def list_users(request: Request, caller: Admin) -> Response:
    return answer([u.as_json() for u in _access(request).users()])


@router.post("/users", name="user.add", status_code=201)
def add_user(request: Request, body: UserBody, caller: Admin) -> Response:
    """A local user; give it grants and a token next."""
    return answer(_access(request).add_user(AddUser(body.name, body.display_name)).as_json(),
                  201)


@router.post("/users/{name}/disable", name="user.disable")
def disable_user(request: Request, name: str, caller: Admin) -> Response:
    """None of the user's tokens works from the next request on."""
    return answer(_access(request).set_disabled(name, True).as_json())


@router.post("/users/{name}/enable", name="user.enable")
def enable_user(request: Request, name: str, caller: Admin) -> Response:
    return answer(_access(request).set_disabled(name, False).as_json())


@router.get("/tokens", name="token.list")
def list_tokens(request: Request, caller: Admin, user: str | None = None) -> Response:
    """Tokens by their public id, with their state; never the secret."""
    return answer([t.as_json() for t in _access(request).tokens(user)])


@router.post("/tokens", name="token.create", status_code=201)
def create_token(request: Request, body: TokenBody, caller: Admin) -> Response:
    """A new token for the user: `token` in this answer is the only time it is shown."""
    days = body.expires_in_days
    made = _access(request).create_token(CreateToken(
        body.user, body.description, timedelta(days=days) if days is not None else None))
    request.state.audit_detail = f"token {made.record.id} for {body.user}"
    return answer(made.as_json(), 201)


@router.delete("/tokens/{token_id}", name="token.revoke")
def revoke_token(request: Request, token_id: str, caller: Admin) -> Response:
    """Revoked at once: the next request with it is refused."""
    rec, changed = _access(request).revoke_token(token_id)
    return answer({**rec.as_json(), "revoked_now": changed})


@router.get("/grants", name="grant.list")
def list_grants(request: Request, caller: Admin, user: str | None = None) -> Response:
    return answer([g.as_json() for g in _access(request).grants(user)])


@router.post("/grants", name="grant.add", status_code=201)
def add_grant(request: Request, body: GrantBody, caller: Admin) -> Response:
    """`role` for `user` on `scope` (all, site:NAME, pod:NAME, group:NAME)."""
    made = _access(request).add_grant(GrantRequest(body.user, body.role, body.scope))
    return answer(made.as_json(), 201)


@router.delete("/grants", name="grant.remove")
def remove_grant(request: Request, caller: Admin, user: str, role: str,
                 scope: str) -> Response:
    gone = _access(request).remove_grant(GrantRequest(user, role, scope))
    return answer(gone.as_json())
