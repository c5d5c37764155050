"""A VM's serial console and VNC or SPICE screen in the browser, proxied through the
controller.

The page asks for a one-time ticket (POST /ui/vms/NAME/console/KIND, KIND serial, vnc or
spice, CSRF-checked, the operator's `vm.lifecycle` grant on the VM, audited) and opens the
websocket /ui/vms/NAME/console/KIND/ws?ticket=T with it. The controller redeems the ticket
(this session's, this VM's, unused, fresh), then relays bytes both ways: for serial, the VM's
console opened through libvirt (fleet/vms.py, virt/console.py); for vnc and spice, a TCP
connection from the controller to the display's port on the hypervisor (from the VM's live
XML). A SPICE client opens a websocket per channel with the same ticket (tickets.py). The
browser never talks to a hypervisor, and never learns the graphics port.
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
from virtfleet.controller.ui.tickets import KINDS, SCREENS, Tickets
from virtfleet.errors import Forbidden, InvalidInput, NotFound, Unauthorized, VirtfleetError

POLICY_VIOLATION = 1008  # the websocket close code of a refused ticket
GRAPHICS_CONNECT_SECONDS = 10.0
NOVNC_ROOT = Path("/usr/share/novnc")  # Debian's novnc package
SPICE_ROOT = Path("/usr/share/spice-html5")  # Debian's spice-html5 package


def _js_files(root: Path, subs: tuple[str, ...], recurse: bool) -> dict[str, bytes]:
    """A Debian package's JavaScript modules under `root`/`subs`, read once: the only files
    the console serves of it. Empty when the package is missing (the page then says so)."""
    out: dict[str, bytes] = {}
    for sub in subs:
        base = root / sub
        if base.is_dir():
            for f in sorted(base.rglob("*.js") if recurse else base.glob("*.js")):
                out[f.relative_to(root).as_posix()] = f.read_bytes()
    return out


NOVNC = _js_files(NOVNC_ROOT, ("core", "vendor"), recurse=True)
# spice-html5's ES modules and the five of thirdparty/ they import; not its 1.7 MB module
# loader for browsers without modules (thirdparty/browser-es-module-loader)
SPICE = _js_files(SPICE_ROOT, (".", "thirdparty"), recurse=False)


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
            display = None
            if kind in SCREENS:
                # a display of that kind running, else its one line now, on the page, not
                # a websocket closed after it opened ("closed: lost")
                found = _display(controller, name, host, kind)
                display = (found.address, found.port)
            secret = tickets.issue(who.cookie, who.name, name, host, kind, display)
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
            # audited as answered: a websocket refused before its accept is a 403 to the
            # browser, whatever the reason (no session, a bad ticket)
            await run_in_threadpool(audit, ws, caller, f"vm.console.{kind}"[:64],
                                    f"vm:{name}", {"path": {"name": name}}, 403, exc.message)
            await ws.close(POLICY_VIOLATION)  # before accept: the browser sees a 403
            return
        # spice-html5 asks for the 'binary' subprotocol, and a browser drops a connection
        # whose answer names none; noVNC asks for none
        offered = ws.scope.get("subprotocols") or []
        await ws.accept(subprotocol="binary" if "binary" in offered else None)
        if t.display is not None:
            await _graphics(ws, name, t.host, kind, t.display)
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

    def vendored(files: dict[str, bytes]) -> Callable[[str], Response]:
        def serve(path: str) -> Response:
            """A Debian package's module: a key into the table of its files, never a path
            opened as asked."""
            body = files.get(path)
            if body is None:
                return Response("not found", 404, media_type="text/plain")
            return Response(body, media_type="text/javascript; charset=utf-8",
                            headers={"Cache-Control": "public, max-age=3600",
                                     "X-Content-Type-Options": "nosniff"})
        return serve

    # noVNC's and spice-html5's modules, each package under its own name
    r.add_api_route("/ui/novnc/{path:path}", vendored(NOVNC), methods=["GET"])
    r.add_api_route("/ui/spice-html5/{path:path}", vendored(SPICE), methods=["GET"])

    return r


def _display(controller: Controller, name: str, host: str, kind: str) -> Any:
    from virtfleet.fleet.vms import VMService

    with VMService(controller.store, controller.pool) as vms:
        return vms.graphics_display(name, host, kind)


async def _graphics(ws: WebSocket, name: str, host: str, kind: str,
                    display: tuple[str, int]) -> None:
    """RFB or SPICE bytes between the browser's binary websocket and the VM's display (where
    the ticket found it): the controller connects to the hypervisor's graphics port, the
    browser only to the controller. Each SPICE channel is one such relay."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(*display), GRAPHICS_CONNECT_SECONDS)
    except (OSError, TimeoutError):
        await ws.close(1011, f"{host}/{name}: its {kind.upper()} display did not answer")
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
    # the browser may have gone already (uvicorn's ClientDisconnected is an OSError)
    with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
        await ws.close()
