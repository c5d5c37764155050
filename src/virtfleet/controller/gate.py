"""The API's front door, before any route runs: no token, no further (401 before a byte of the
body is read or a route is matched, so a stranger learns nothing of the API, not even which
paths exist); then a request body over the limit is refused (413) before it is read whole.
Both refusals of a write are recorded on the audit log.

A plain ASGI middleware: it sees the request before FastAPI parses anything, and it streams
nothing it has not checked to the app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from virtfleet.controller.audited import READS, record
from virtfleet.controller.auth import authenticate
from virtfleet.controller.errors import error_response
from virtfleet.errors import InvalidInput, VirtfleetError

GUARDED = "/api/"
DEFAULT_MAX_BODY = 64 * 1024  # bytes: the largest request body (a create is well under 2 KiB)


def _routes(node: Any) -> list[APIRoute]:
    """Every APIRoute under an app or router. FastAPI keeps an included router whole (its
    routes under `original_router`), so they are walked rather than read off `app.routes`."""
    found: list[APIRoute] = []
    for route in getattr(node, "routes", ()):
        if isinstance(route, APIRoute):
            found.append(route)
        inner = getattr(route, "original_router", None)
        if inner is not None:
            found.extend(_routes(inner))
    return found


def _action(scope: Scope) -> str:
    """The route's name (vm.start) if one matches, else METHOD PATH."""
    app = scope.get("app")
    router = getattr(app, "router", None)
    for route in _routes(router) if router is not None else ():
        match, _child = route.matches(scope)
        if match == Match.FULL:
            return route.name
    return f"{scope['method']} {scope['path']}"


class Gate:
    def __init__(self, app: ASGIApp, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(GUARDED):
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        write = scope["method"] not in READS
        try:
            await run_in_threadpool(authenticate, conn)
        except VirtfleetError as exc:
            await self._refuse(conn, scope, receive, send, exc, write, {})
            return
        if not write:
            await self.app(scope, receive, send)
            return
        body, size = await self._read(conn, receive)
        if body is None:
            too_big = InvalidInput("body", f"larger than {self.max_body} bytes")
            await self._refuse(conn, scope, receive, send, too_big, write,
                               {"body_bytes": size})
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, conn: HTTPConnection, receive: Receive) -> tuple[bytes | None, int]:
        """The whole body, or None (and how much was seen) once it passes the limit."""
        declared = conn.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            return None, int(declared)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None, size
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks), size

    async def _refuse(self, conn: HTTPConnection, scope: Scope, receive: Receive, send: Send,
                      exc: VirtfleetError, write: bool, params: dict[str, Any]) -> None:
        response = error_response(exc)
        if isinstance(exc, InvalidInput) and exc.field == "body":
            response.status_code = 413
        if write:
            await run_in_threadpool(record, conn, _action(scope), params,
                                    response.status_code, exc.message)
        await response(scope, receive, send)


def _replay(body: bytes, real: Receive) -> Callable[[], Awaitable[MutableMapping[str, Any]]]:
    """A receive that hands the app the body already read, then the connection's own (which
    says when the client goes)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await real()

    return receive
