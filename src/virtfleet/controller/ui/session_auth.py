"""Who is using the console, and whether a write may go ahead: the session cookie, the token
behind it (checked against the store on every request, as the API checks its bearer), the CSRF
token on every POST, and the audit record of every write, refusals included.

Cookies: `vf_session` (HttpOnly, SameSite=Strict, Path=/ui, Secure over HTTPS) holds the
session; `vf_login` holds the sign-in form's own CSRF token (double submit) until sign-in, so a
third site cannot sign a browser into someone else's account either.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from virtfleet.controller.audited import outcome
from virtfleet.controller.events import Event, Visible
from virtfleet.controller.ui.sessions import Session, Sessions, same_token
from virtfleet.errors import Forbidden, InvalidInput, Unauthorized, VirtfleetError
from virtfleet.fleet.access import Authenticator
from virtfleet.fleet.audit import AuditService, Write
from virtfleet.fleet.roles import Principal

COOKIE = "vf_session"
LOGIN_COOKIE = "vf_login"
CSRF_HEADER = "x-csrf-token"
MAX_FORM = 8 * 1024  # bytes: a sign-in form is well under 1 KiB
VIA = "ui"  # the audit log's `via` for the console's writes

log = logging.getLogger("virtfleet.controller.ui")


@dataclass(frozen=True)
class Caller:
    principal: Principal
    session: Session
    cookie: str

    @property
    def name(self) -> str:
        return self.principal.name


def stream_visible(sessions: Sessions, caller: Caller,
                   base: Callable[[Principal], Visible | None]) -> Visible:
    """What an open events stream of this session may still carry: what `base` lets its user
    see, and nothing at all once the session is closed (signed out), so a stream opened with
    a cookie goes quiet when the cookie dies, as every request of that cookie is refused."""
    narrowed = base(caller.principal)

    def visible(event: Event) -> bool:
        if not sessions.alive(caller.cookie):
            return False
        return narrowed is None or narrowed(event)

    return visible


def authenticator(conn: HTTPConnection) -> Authenticator:
    auth: Authenticator = conn.app.state.vf.authenticator
    return auth


def current(conn: HTTPConnection, sessions: Sessions) -> Caller | None:
    """The signed-in caller, or None. The session's token is authenticated again now: a
    revoked token or a disabled user ends the session here."""
    cookie = conn.cookies.get(COOKIE, "")
    session = sessions.get(cookie)
    if session is None:
        return None
    try:
        principal = authenticator(conn).authenticate(session.bearer)
    except Unauthorized:
        sessions.close(cookie)
        return None
    conn.state.principal = principal
    return Caller(principal, session, cookie)


def set_cookie(response: Response, conn: HTTPConnection, name: str, value: str,
               max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/ui", httponly=True,
                        samesite="strict", secure=conn.url.scheme == "https")


def clear_cookie(response: Response, conn: HTTPConnection, name: str) -> None:
    response.delete_cookie(name, path="/ui", httponly=True, samesite="strict",
                           secure=conn.url.scheme == "https")


def new_login_token() -> str:
    return secrets.token_urlsafe(32)


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded form of at most MAX_FORM bytes (InvalidInput past that, or for another
    content type): the console reads nothing larger, and no multipart parser is needed."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip()
    if ctype not in ("", "application/x-www-form-urlencoded"):
        raise InvalidInput("body", "a form (application/x-www-form-urlencoded)")
    size = 0
    chunks: list[bytes] = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM:
            raise InvalidInput("body", f"larger than {MAX_FORM} bytes")
        chunks.append(chunk)
    try:
        pairs = parse_qsl(b"".join(chunks).decode(), keep_blank_values=True,
                          max_num_fields=20, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("body", "a urlencoded form") from None
    return dict(pairs)


def same_origin(conn: HTTPConnection) -> bool:
    """A browser's Origin header, if sent, names this site (a second check beside CSRF)."""
    origin = conn.headers.get("origin")
    if origin is None:
        return True
    return origin == f"{conn.url.scheme}://{conn.headers.get('host', '')}"


def check_write(conn: HTTPConnection, caller: Caller | None, form_token: str = "") -> Caller:
    """A POST may go ahead: signed in, the session's CSRF token sent back (the X-CSRF-Token
    header htmx adds, or the form's field), from this site. Unauthorized or Forbidden."""
    if caller is None:
        raise Unauthorized("not signed in, or the session ended: sign in again")
    given = conn.headers.get(CSRF_HEADER, "") or form_token
    if not same_token(given, caller.session.csrf) or not same_origin(conn):
        raise Forbidden("the request's CSRF token is missing or wrong, or it came from "
                        "another site: reload the page and try again",
                        permission="csrf", target="session")
    return caller


def audit(conn: HTTPConnection, caller: Caller | Principal | None, action: str, target: str,
          params: dict[str, Any], status: int, detail: str = "") -> None:
    """One console write on the audit log, as the API records its own (fleet/audit.py masks
    secrets); a failure to record is logged by the service, never the user's."""
    principal = caller.principal if isinstance(caller, Caller) else caller
    name, via = (principal.name, principal.via) if principal is not None else ("-", "none")
    write = Write(name, VIA, action, target, {**params, "_credential": via})
    try:
        AuditService(conn.app.state.vf.controller.store).record(
            write, result=outcome(status), status=status, detail=detail)
    except VirtfleetError:
        log.error("could not record %s on %s by %s in the audit log", action, target, name)
