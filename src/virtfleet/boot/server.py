"""`boot serve`'s HTTP side: the iPXE scripts, kickstarts, install files and the callback.

    GET  /boot.ipxe, /ipxe/boot.ipxe        any iPXE client: chains to its own script by MAC
    GET  /hosts/<mac>.ipxe, /ipxe/hosts/<mac>.ipxe
                                            the machine's script (issues its token)
    GET  /ks/<host>.ks?token=T              its kickstart (token needed)
    POST /callback                          form: host, mac, status, token[, error]
    GET  /files/<path>                      kernel, initrd, install tree, streamed from --files

Errors are one line of plain text: 400 bad input, 403 bad token, 404 unknown, 409 wrong state.
The access log is our own and leaves out query strings: tokens travel in them.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, PlainTextResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from virtfleet.boot.installs import BootService, Forbidden, check_base, one_line
from virtfleet.boot.ipxe import chain_script
from virtfleet.errors import Conflict, InvalidInput, NotFound, VirtfleetError

access = logging.getLogger("virtfleet.boot.access")
log = logging.getLogger("virtfleet.boot")

MAX_FORM = 8192  # a callback is a handful of short fields
IPXE = "text/plain; charset=utf-8"
_STATUS: tuple[tuple[type[VirtfleetError], int], ...] = (
    (InvalidInput, 400), (Forbidden, 403), (NotFound, 404), (Conflict, 409))


def _status_of(exc: VirtfleetError) -> int:
    return next((code for cls, code in _STATUS if isinstance(exc, cls)), 503)


class AccessLog:
    """One line per request: client, method, path (never the query: tokens), status.

    Plain ASGI rather than @app.middleware("http"), which would pass every chunk of a 50 MB
    image through an extra in-memory stream."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # unless the app starts a response

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            client = scope.get("client")
            access.info("%s %s %s %d", client[0] if client else "-", scope["method"],
                        scope["path"], status)


def create_app(service: BootService, public_url: str | None = None) -> FastAPI:
    app = FastAPI(title="virtfleet boot", docs_url=None, redoc_url=None, openapi_url=None)
    if public_url is not None:
        check_base(public_url, "--public-url")

    def base(request: Request) -> str:
        # The address the client used (10.0.2.2:PORT for a QEMU guest, the VIP behind HAProxy
        # with --public-url): the installer must reach us the same way.
        return public_url or str(request.base_url)

    @app.exception_handler(VirtfleetError)
    async def refused(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, VirtfleetError)
        return PlainTextResponse(one_line(exc.message) + "\n", status_code=_status_of(exc))

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)  # no such route, wrong method: still one line
        return PlainTextResponse(f"{exc.detail}\n", status_code=exc.status_code)

    app.add_middleware(AccessLog)

    @app.get("/boot.ipxe")
    @app.get("/ipxe/boot.ipxe")
    def boot_ipxe() -> Response:
        return PlainTextResponse(chain_script(), media_type=IPXE)

    @app.get("/hosts/{mac}.ipxe")
    @app.get("/ipxe/hosts/{mac}.ipxe")
    def host_ipxe(mac: str, request: Request) -> Response:
        return PlainTextResponse(service.script(mac, base(request)), media_type=IPXE)

    @app.get("/ks/{host}.ks")
    def kickstart(host: str, request: Request, token: str | None = None) -> Response:
        return PlainTextResponse(service.kickstart(host, token, base(request)))

    @app.post("/callback")
    async def callback(request: Request) -> Response:
        # Anyone on the provisioning network can post here: never hold more than MAX_FORM.
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_FORM:
            raise InvalidInput("callback", f"form is over {MAX_FORM} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM:
                raise InvalidInput("callback", f"form is over {MAX_FORM} bytes")
        try:
            form = {k: v[0] for k, v in parse_qs(body.decode("utf-8"), max_num_fields=16,
                                                   strict_parsing=bool(body)).items()}
        except (UnicodeDecodeError, ValueError):
            raise InvalidInput("callback", "must be a urlencoded form "
                               "(host=...&mac=...&status=...&token=...)") from None
        for name in ("host", "mac", "status"):
            if not form.get(name):
                raise InvalidInput(name, "missing from the callback form")
        from starlette.concurrency import run_in_threadpool

        rec = await run_in_threadpool(service.callback, form["host"], form["mac"],
                                      form.get("token"), form["status"], form.get("error", ""))
        if rec.state == "installed":  # in its own thread: the check may wait for the reboot
            threading.Thread(target=_enroll, args=(service, rec.host), daemon=True,
                             name=f"boot-enrol-{rec.host}").start()
        return PlainTextResponse(f"{rec.host} {rec.state}\n")

    @app.get("/files/{path:path}")
    def files(path: str) -> Response:
        root = service.files
        if root is None:
            raise NotFound("no --files directory is served")
        if "\x00" in path:
            raise NotFound("no such file under --files")
        target = (root / path).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            raise NotFound(f"no file {path[:200]!r} under --files")
        # Streamed in chunks from disk: a 50 MB initrd to 500 machines never sits in memory.
        return FileResponse(target)

    return app


def enroll_unfinished(service: BootService) -> threading.Thread:
    """Enrol, in the background, hosts a previous run accepted the callback of but did not
    get to enrol."""
    def work() -> None:
        for host in service.unfinished_enrolments():
            _enroll(service, host)
    thread = threading.Thread(target=work, name="boot-enrol", daemon=True)
    thread.start()
    return thread


def _enroll(service: BootService, host: str) -> None:
    try:
        service.enroll(host)
    except VirtfleetError as exc:  # nobody waits for this reply: the log is where it goes
        log.warning("enrolling %s: %s", host, exc.message)


def files_dir(value: Path | None) -> Path | None:
    if value is None:
        return None
    if not value.is_dir():
        raise InvalidInput("--files", f"{str(value)!r} is not a directory")
    return value
