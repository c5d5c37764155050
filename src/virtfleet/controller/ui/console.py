"""A VM's serial console in the browser, proxied through the controller.

The page asks for a one-time ticket (POST /ui/vms/NAME/console/serial, CSRF-checked, the
operator's `vm.lifecycle` grant on the VM, audited) and opens the websocket
/ui/vms/NAME/console/serial/ws?ticket=T with it. The controller redeems the ticket (this
session's, this VM's, unused, fresh), opens the VM's console through libvirt on its
hypervisor (fleet/vms.py, virt/console.py) and relays bytes both ways; the browser never talks
to a hypervisor.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations.

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, WebSocket
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocketDisconnect

from virtfleet.controller.errors import status_of
from virtfleet.controller.rest.common import common_target, vm_holders
from virtfleet.controller.service import Controller
from virtfleet.controller.ui.render import page
from virtfleet.controller.ui.session_auth import Caller, audit, check_write, current
from virtfleet.controller.ui.sessions import Sessions
from virtfleet.controller.ui.tickets import Tickets
from virtfleet.errors import Forbidden, InvalidInput, NotFound, Unauthorized, VirtfleetError

KINDS = ("serial",)  # VNC is not built yet (docs/ui.md)
POLICY_VIOLATION = 1008  # the websocket close code of a refused ticket


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
        return page("console.html", **frame(caller, "vms"), vm=name, host=host, kind=kind)

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
        try:
            con, stack = await run_in_threadpool(_open_serial, controller, name, t.host)
        except VirtfleetError as exc:
            await ws.close(1011, exc.message[:120])
            return
        try:
            await _pump(ws, con)
        finally:
            await run_in_threadpool(stack.close)

    return r


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

    tasks = [asyncio.ensure_future(down()), asyncio.ensure_future(up())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    except WebSocketDisconnect:
        pass
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect,
                                     VirtfleetError, RuntimeError):
                await task
    with contextlib.suppress(RuntimeError):  # the browser may have gone already
        await ws.close()
