"""Who is calling the controller's API, and whether they may: the one dependency every route
uses, `require(permission, scope_of=...)`.

    @router.post("/vms/{name}/start", name="vm.start")
    def start(name: str, caller: Annotated[Principal, require("vm.lifecycle", scope_of=vm)]): ...

The bearer token is checked on every request against the store (fleet/access.py): nothing is
cached, so a revoked token fails on the very next call. The controller's own registration
token (the one the CLI reads from the store) stands for `local`, an admin on the whole estate,
and only on the Unix socket: whoever can read the store can do anything anyway. A denial is a
Forbidden naming the permission missing; the target a check was made on is kept on the
request, so the audit log names it even for a call refused before its handler ran.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from virtfleet.errors import Forbidden, InvalidInput
from virtfleet.fleet.access import Authenticator
from virtfleet.fleet.roles import Grant, Principal, Target, check_permission

ScopeOf = Callable[[Request], Target]
LOCAL = "local"  # the principal the controller's own token stands for


class ControllerToken:
    """The token the controller registered in the store, for the CLI on this machine."""

    def __init__(self, token: str) -> None:
        self._token = token

    def identify(self, bearer: str, at: datetime) -> Principal | None:
        if secrets.compare_digest(bearer.encode(), self._token.encode()):
            return Principal(LOCAL, "controller token", (Grant("admin", "all"),))
        return None


def bearer_of(conn: HTTPConnection) -> str:
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def authenticate(conn: HTTPConnection) -> Principal:
    """The caller of this request (Unauthorized if none), found once per request."""
    found = getattr(conn.state, "principal", None)
    if isinstance(found, Principal):
        return found
    auth: Authenticator = conn.app.state.vf.authenticator
    principal = auth.authenticate(bearer_of(conn))
    conn.state.principal = principal
    return principal


def authorize(request: Request, principal: Principal, permission: str, target: Target) -> None:
    """Check `permission` on `target` inside a handler (a target only its body names, such as
    where a new VM goes); the target is noted for the audit log first."""
    request.state.target = target
    principal.check(permission, target)


def estate(_request: Request) -> Target:
    """scope_of for calls about the whole estate: only grants on `all` cover them."""
    return Target.estate()


ESTATE: ScopeOf = estate

# Declares the bearer scheme in the OpenAPI document; the checking is authenticate()'s.
_bearer = HTTPBearer(auto_error=False, description="A token from `virtfleet token create`.")
# id of each route -> the query parameters it declares, worked out once per route (routes
# are not hashable, and live as long as their app)
_known: dict[int, frozenset[str]] = {}


def _query_names(dependant: Dependant) -> frozenset[str]:
    """The query parameters a route declares, its dependencies' included."""
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return frozenset(names)


def known_query(request: Request) -> None:
    """InvalidInput for a query parameter the route does not declare: a misspelt filter
    (`?stat=running`) must not silently widen a list or a verb."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    names = _known.get(id(route))
    if names is None:
        names = _query_names(route.dependant)
        _known[id(route)] = names
    for key in request.query_params:
        if key not in names:
            raise InvalidInput(key, "unknown query parameter" + (
                f" (known: {', '.join(sorted(names))})" if names else " (it takes none)"))


def signed_in(request: Request, _credentials: Annotated[
        HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
    """Any caller with a good token, whatever it may do (who am I, the API's description)."""
    principal = authenticate(request)
    known_query(request)
    return principal


SignedIn = Annotated[Principal, Depends(signed_in)]


def require(permission: str, scope_of: ScopeOf | None = None) -> Any:
    """A FastAPI dependency (a `Depends`) giving the calling Principal once it holds
    `permission`: on the target `scope_of` finds in the request, or, without `scope_of`,
    anywhere (the handler then keeps what `principal.can` allows)."""
    check_permission(permission)

    def dependency(request: Request, _credentials: Annotated[
            HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
        principal = authenticate(request)
        known_query(request)
        # Someone without the permission anywhere is refused before the target is looked
        # up: a refusal must not say whether a VM of that name exists.
        if not principal.holds(permission):
            raise Forbidden(f"{principal.name} lacks {permission} on any scope",
                            permission=permission, target="any")
        if scope_of is not None:
            authorize(request, principal, permission, scope_of(request))
        return principal

    dependency.__name__ = f"require_{permission.replace('.', '_')}"
    return Depends(dependency)
