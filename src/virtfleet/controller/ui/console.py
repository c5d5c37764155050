"""A VM's serial console and VNC screen in the browser, proxied through the controller.

The page asks for a one-time ticket (POST /ui/vms/NAME/console/KIND, KIND serial or vnc,
CSRF-checked, the operator's `vm.lifecycle` grant on the VM, audited) and opens the websocket
/ui/vms/NAME/console/KIND/ws?ticket=T with it. The controller redeems the ticket (this
session's, this VM's, unused, fresh), then relays bytes both ways: for serial, the VM's console
opened through libvirt (fleet/vms.py, virt/console.py); for vnc, a TCP connection from the
controller to the display's port on the hypervisor (from the VM's live XML). The browser never
talks to a hypervisor, and never learns the graphics port.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations.

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, WebSocket
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocketDisconnect

from virtfleet.controller.errors import status_of
from virtfleet.controller.rest.common import common_target, vm_holders
from virtfleet.controller.service import Controller
from virtfleet.controller.ui.render import TERMINAL_CSP, page
from virtfleet.controller.ui.session_auth import Caller, audit, check_write, current
from virtfleet.controller.ui.sessions import Sessions
from virtfleet.controller.ui.tickets import Tickets
from virtfleet.errors import Forbidden, InvalidInput, NotFound, Unauthorized, VirtfleetError

KINDS = ("serial", "vnc")
POLICY_VIOLATION = 1008  # the websocket close code of a refused ticket
VNC_CONNECT_SECONDS = 10.0
NOVNC_ROOT = Path("/usr/share/novnc")  # Debian's novnc package


def _novnc_files() -> dict[str, bytes]:
    """noVNC's core and vendored modules (Debian's novnc), read once: the only files
    /ui/novnc/ serves. Empty when the package is missing (the VNC page then says so)."""
    out: dict[str, bytes] = {}
    for sub in ("core", "vendor"):
        base = NOVNC_ROOT / sub
        if base.is_dir():
            for f in sorted(base.rglob("*.js")):
                out[f.relative_to(NOVNC_ROOT).as_posix()] = f.read_bytes()
    return out


NOVNC = _novnc_files()


def _where(request: Request, caller: Caller, name: str, host: str | None) -> str:
    """The hypervisor of VM `name` if the caller may use its console (as a UI action: no
    grant anywhere is refused before the VM is looked up), else Forbidden/NotFound."""
    p = caller.principal
    if not p.holds("vm.lifecycle"):
        raise Forbidden(f"{p.name} lacks vm.lifecycle on any scope",
                        permission="vm.lifecycle", target="any")
    recs = vm_holders(request, name, host)
    p.check("vm.lifecycle", common_target("vm", name, recs))
    if len(recs) > 1:
        raise InvalidInput("host", f"{name} is defined on {len(recs)} hypervisors: name one")
    return recs[0].name


def console_router(controller: Controller, sessions: Sessions,
                   frame: Callable[[Caller, str], dict[str, Any]],
                   error: Callable[[VirtfleetError, Caller | None], Response],
                   tickets: Tickets | None = None) -> APIRouter:
    tickets = tickets if tickets is not None else Tickets()
    r = APIRouter(include_in_schema=False)

    @r.get("/ui/vms/{name}/console/{kind}")
    def console_page(request: Request, name: str, kind: str) -> Response:
        caller = current(request, sessions)
        if caller is None:
            return Response(status_code=303, headers={"Location": "/ui/login"})
        try:
            if kind not in KINDS:
                raise NotFound(f"no console {kind!r} (consoles: {', '.join(KINDS)})")
            host = _where(request, caller, name, request.query_params.get("host") or None)
        except VirtfleetError as exc:
            return error(exc, caller)
        csp = {"Content-Security-Policy": TERMINAL_CSP} if kind == "serial" else None
        return page("console.html", headers=csp, **frame(caller, "vms"), vm=name, host=host,
                    kind=kind)

    @r.post("/ui/vms/{name}/console/{kind}")
    def ticket(request: Request, name: str, kind: str) -> Response:
        """A one-time ticket for the console websocket, as JSON {ticket, url}."""
        caller = current(request, sessions)
        host = request.query_params.get("host") or None
        action, target = f"vm.console.{kind}"[:64], f"vm:{name}"
        params: dict[str, Any] = {"path": {"name": name, "kind": kind}}
        try:
            who = check_write(request, caller)
            if kind not in KINDS:
                raise NotFound(f"no console {kind!r} (consoles: {', '.join(KINDS)})")
            host = _where(request, who, name, host)
            target = f"vm:{name}@{host}"
            secret = tickets.issue(who.cookie, who.name, name, host, kind)
        except VirtfleetError as exc:
            status = status_of(exc)
            audit(request, caller, action, target, params, status, exc.message)
            return JSONResponse({"error": exc.message}, status)
        audit(request, caller, action, target, params, 200, "console ticket issued")
        return JSONResponse({"ticket": secret, "host": host,
                             "url": f"/ui/vms/{name}/console/{kind}/ws"},
                            headers={"Cache-Control": "no-store"})

    @r.websocket("/ui/vms/{name}/console/{kind}/ws")
    async def relay(ws: WebSocket, name: str, kind: str) -> None:
        caller = current(ws, sessions)
        try:
            if caller is None:
                raise Unauthorized("not signed in, or the session ended")
            t = tickets.redeem(ws.query_params.get("ticket", ""), caller.cookie, name, kind)
        except VirtfleetError as exc:
            await run_in_threadpool(audit, ws, caller, f"vm.console.{kind}"[:64],
                                    f"vm:{name}", {"path": {"name": name}}, status_of(exc),
                                    exc.message)
            await ws.close(POLICY_VIOLATION)  # before accept: the browser sees a 403
            return
        await ws.accept()
        if kind == "vnc":
            await _vnc(ws, controller, name, t.host)
            return
        try:
            con, stack = await run_in_threadpool(_open_serial, controller, name, t.host)
        except VirtfleetError as exc:
            await ws.close(1011, exc.message[:120])
            return
        try:
            await _pump(ws, con)
        finally:
            await run_in_threadpool(stack.close)

    @r.get("/ui/novnc/{path:path}")
    def novnc(path: str) -> Response:
        """noVNC's modules from Debian's package: a key into the table of its files, never a
        path opened as asked."""
        body = NOVNC.get(path)
        if body is None:
            return Response("not found", 404, media_type="text/plain")
        return Response(body, media_type="text/javascript; charset=utf-8",
                        headers={"Cache-Control": "public, max-age=3600",
                                 "X-Content-Type-Options": "nosniff"})

    return r


def _vnc_display(controller: Controller, name: str, host: str) -> Any:
    from virtfleet.fleet.vms import VMService

    with VMService(controller.store, controller.pool) as vms:
        return vms.vnc_display(name, host)


async def _vnc(ws: WebSocket, controller: Controller, name: str, host: str) -> None:
    """RFB bytes between the browser's binary websocket and the VM's VNC display: the
    controller connects to the hypervisor's graphics port, the browser only to the controller."""
    try:
        display = await run_in_threadpool(_vnc_display, controller, name, host)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(display.address, display.port), VNC_CONNECT_SECONDS)
    except VirtfleetError as exc:
        await ws.close(1011, exc.message[:120])
        return
    except (OSError, TimeoutError):
        await ws.close(1011, f"{host}/{name}: its VNC display did not answer")
        return

    async def down() -> None:
        while data := await reader.read(65536):
            await ws.send_bytes(data)

    async def up() -> None:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            if data := msg.get("bytes") or b"":
                writer.write(data)
                await writer.drain()

    await _both(ws, down(), up())
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def _open_serial(controller: Controller, name: str, host: str) -> tuple[Any, Any]:
    """The VM's console and what closes it (the service's connections too)."""
    from virtfleet.fleet.vms import ConsoleRequest, VMService

    stack = contextlib.ExitStack()
    try:
        vms = stack.enter_context(VMService(controller.store, controller.pool))
        con = stack.enter_context(vms.console(ConsoleRequest(name, host)))
        stack.callback(con.close)
    except BaseException:
        stack.close()
        raise
    return con, stack


async def _pump(ws: WebSocket, con: Any) -> None:
    """Console output to the browser as binary frames, its keystrokes to the console, until
    either side ends."""
    loop = asyncio.get_running_loop()
    out: asyncio.Queue[bytes] = asyncio.Queue()
    con.pump(lambda data: loop.call_soon_threadsafe(out.put_nowait, data))

    async def down() -> None:
        while data := await out.get():
            await ws.send_bytes(data)

    async def up() -> None:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            data = msg.get("bytes") or (msg.get("text") or "").encode()
            if data:
                await run_in_threadpool(con.send, data)

    await _both(ws, down(), up())


async def _both(ws: WebSocket, down: Coroutine[Any, Any, None],
                up: Coroutine[Any, Any, None]) -> None:
    """Runs both directions of a relay until either ends, then closes the websocket."""
    tasks = [asyncio.ensure_future(down), asyncio.ensure_future(up)]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    except WebSocketDisconnect:
        pass
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect,
                                     VirtfleetError, RuntimeError, OSError):
                await task
    with contextlib.suppress(RuntimeError):  # the browser may have gone already
        await ws.close()
