"""`boot serve`'s HTTP side: the iPXE scripts, kickstarts, install files and the callback.

    GET  /boot.ipxe, /ipxe/boot.ipxe        any iPXE client: chains to its own script by MAC
    GET  /hosts/<mac>.ipxe, /ipxe/hosts/<mac>.ipxe
                                            the machine's script (issues its token)
    GET  /ks/<host>.ks?token=T              its kickstart (token needed)
    POST /callback                          form: host, mac, status, token[, error]
    GET  /files/<path>                      kernel, initrd, install tree from --files, sent by
                                            sendfile(2); HEAD, a single Range (files.py)
    GET  /healthz                           200 while the store answers (HAProxy's check)

Errors are one line of plain text: 400 bad input, 403 refused (an address that may not speak
for the host, a bad token), 404 unknown, 409 wrong state, 429 too many refusals, 503 the store
is unreachable. The access log is our own: it leaves out query strings (tokens travel in them),
escapes control characters and caps error lines per client.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from virtfleet.boot import haproxy
from virtfleet.boot.files import FileBody, open_under
from virtfleet.boot.installs import BootService, Forbidden, TooManyRequests, check_base
from virtfleet.boot.ipxe import chain_script
from virtfleet.boot.text import one_line, printable
from virtfleet.boot.trust import Address, Clients
from virtfleet.boot.zerocopy import boot_protocol
from virtfleet.errors import Conflict, InvalidInput, NotFound, VirtfleetError

access = logging.getLogger("virtfleet.boot.access")
log = logging.getLogger("virtfleet.boot")

MAX_FORM = 8192  # a callback is a handful of short fields
IPXE = "text/plain; charset=utf-8"
REQUEST_TIMEOUT = 10.0  # seconds for a request's head and body to arrive
STALL_TIMEOUT = 60.0  # seconds a client may read nothing of a response
_STATUS: tuple[tuple[type[VirtfleetError], int], ...] = (
    (InvalidInput, 400), (Forbidden, 403), (NotFound, 404), (Conflict, 409),
    (TooManyRequests, 429))


_LOGGED = "virtfleet.refusal_logged"  # scope key: the service's own line says it all


def _status_of(exc: VirtfleetError) -> int:
    return next((code for cls, code in _STATUS if isinstance(exc, cls)), 503)


def _one_line_reply(text: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return PlainTextResponse(one_line(text) + "\n", status_code=status, headers=headers)


class ClientsAndAccessLog:
    """Resolves each request's client (trust.Clients: X-Forwarded-For only from a trusted
    proxy) into scope["client"], then logs one line per request: client, method, path (never
    the query: tokens), status. Error lines are capped per client (BootService.log_refusal);
    a passing health check is not logged.

    Plain ASGI rather than @app.middleware("http"), which would pass every chunk of a 50 MB
    image through an extra in-memory stream."""

    def __init__(self, app: ASGIApp, clients: Clients, service: BootService) -> None:
        self.app = app
        self.clients = clients
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        peer = scope.get("client")
        peer_addr = peer[0] if peer else "-"
        forwarded = [v.decode("latin-1") for k, v in scope["headers"]
                     if k == b"x-forwarded-for"]
        try:
            client: Address | str = self.clients.client(peer_addr, forwarded)
        except InvalidInput as exc:
            client = peer_addr
            response = _one_line_reply(exc.message, 400)
            await response(scope, receive, send)
            self._log(scope, client, peer_addr, 400)
            return
        scope["client"] = (str(client), peer[1] if peer else 0)
        status = 500  # unless the app starts a response

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            self._log(scope, client, peer_addr, status)

    def _log(self, scope: Scope, client: Address | str, peer: str, status: int) -> None:
        if status == 200 and scope["path"] == haproxy.HEALTH_PATH:
            return
        if scope.get(_LOGGED):
            return  # the service logged why it refused this request
        via = f" via {peer}" if peer != str(client) else ""
        line = f"{client}{via} {scope['method']} {scope['path']} {status}"
        if status >= 400:
            self.service.log_refusal(client, line, access)  # capped, escaped
        else:
            access.info("%s", printable(line))


def create_app(service: BootService, public_url: str | None = None,
               clients: Clients | None = None) -> FastAPI:
    app = FastAPI(title="virtfleet boot", docs_url=None, redoc_url=None, openapi_url=None)
    if public_url is not None:
        check_base(public_url, "public_url")

    def base(request: Request) -> str:
        # The address the client used (10.0.2.2:PORT for a QEMU guest, the VIP behind HAProxy
        # with --public-url): the installer must reach us the same way.
        return public_url or str(request.base_url)

    def client(request: Request) -> Address:
        from ipaddress import ip_address

        assert request.client is not None  # set by ClientsAndAccessLog
        return ip_address(request.client.host)

    @app.exception_handler(VirtfleetError)
    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, VirtfleetError)
        if getattr(exc, "logged", False):
            request.scope[_LOGGED] = True
        headers = ({"Retry-After": str(exc.retry_after)}
                   if isinstance(exc, TooManyRequests) else None)
        return _one_line_reply(exc.message, _status_of(exc), headers)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)  # no such route, wrong method: still one line
        return _one_line_reply(str(exc.detail), exc.status_code)

    app.add_middleware(ClientsAndAccessLog, clients=clients or Clients(), service=service)

    @app.get(haproxy.HEALTH_PATH)
    def healthz() -> Response:
        # What a request needs: the store. An unreachable store is a StoreError (503).
        hosts = service.store.count_installs()
        return PlainTextResponse(f"ok: {hosts} installs recorded\n")

    @app.get("/boot.ipxe")
    @app.get("/ipxe/boot.ipxe")
    def boot_ipxe() -> Response:
        return PlainTextResponse(chain_script(), media_type=IPXE)

    @app.get("/hosts/{mac}.ipxe")
    @app.get("/ipxe/hosts/{mac}.ipxe")
    def host_ipxe(mac: str, request: Request) -> Response:
        return PlainTextResponse(service.script(mac, base(request), client(request)),
                                 media_type=IPXE)

    @app.get("/ks/{host}.ks")
    def kickstart(host: str, request: Request, token: str | None = None) -> Response:
        return PlainTextResponse(service.kickstart(host, token, base(request), client(request)))

    @app.post("/callback")
    async def callback(request: Request) -> Response:
        # Anyone on the provisioning network can post here: never hold more than MAX_FORM.
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_FORM:
            raise InvalidInput("callback", f"form is over {MAX_FORM} bytes")
        body = b""
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_FORM:
                    raise InvalidInput("callback", f"form is over {MAX_FORM} bytes")
        except ClientDisconnect:  # it went away (or was too slow: see slowclients)
            return Response(status_code=400)
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
                                      form.get("token"), form["status"], form.get("error", ""),
                                      client(request))
        if rec.state == "installed":  # in its own thread: the check may wait for the reboot
            threading.Thread(target=_enroll, args=(service, rec.host), daemon=True,
                             name=f"boot-enrol-{rec.host}").start()
        return PlainTextResponse(f"{rec.host} {rec.state}\n")

    @app.api_route("/files/{path:path}", methods=["GET", "HEAD"])
    def files(path: str) -> Response:
        root = service.files
        if root is None:
            raise NotFound("no --files directory is served")
        # Sent by sendfile(2) from the page cache (zerocopy): a 50 MB initrd to 500 machines
        # neither sits in memory nor passes through Python.
        return FileBody(open_under(root, path), path)

    return app


def server_config(app: FastAPI, *, request_timeout: float = REQUEST_TIMEOUT,
                  stall_timeout: float = STALL_TIMEOUT, tls_cert: Path | None = None,
                  tls_key: Path | None = None) -> Any:
    """uvicorn's Config for boot serve: slow clients timed out, uvicorn's own X-Forwarded-For
    handling off (it trusts 127.0.0.1 by default; ours trusts only --trusted-proxy), HTTPS with
    a certificate and key."""
    import uvicorn

    return uvicorn.Config(app, log_level="warning", access_log=False, proxy_headers=False,
                          http=boot_protocol(request_timeout, stall_timeout),
                          ssl_certfile=str(tls_cert) if tls_cert else None,
                          ssl_keyfile=str(tls_key) if tls_key else None)


def enroll_unfinished(service: BootService) -> threading.Thread:
    """Enrol, in the background, hosts a previous run accepted the callback of but did not
    get to enrol."""
    def work() -> None:
        for host in service.unfinished_enrolments():
            _enroll(service, host)
    thread = threading.Thread(target=work, name="boot-enrol", daemon=True)
    thread.start()
    return thread


def _enroll(service: BootService, host: str, why: str = "") -> None:
    try:
        service.enroll(host, why=why)
    except VirtfleetError as exc:  # nobody waits for this reply: the log is where it goes
        log.warning("enrolling %s: %s", host, printable(exc.message))


def sweep_enrolments_every(service: BootService, seconds: float,
                           stop: threading.Event) -> threading.Thread:
    """Replicas on one PostgreSQL store: every `seconds`, enrol the hosts that called back at
    least `seconds` ago and are still `installed` with nobody's claim on them: the replica
    that took their callback died before enrolling them (kill -9, a lost machine). A claim
    held by a live replica makes this skip the host."""
    settled = timedelta(seconds=seconds)

    def work() -> None:
        while not stop.wait(seconds):
            try:
                hosts = service.unfinished_enrolments(settled=settled)
            except VirtfleetError as exc:
                log.warning("looking for unfinished enrolments: %s", printable(exc.message))
                continue
            for host in hosts:
                if stop.is_set():
                    return
                _enroll(service, host, f"it called back over {seconds:g} s ago and nobody "
                        "is enrolling it (the boot serve that took its callback stopped?)")
    thread = threading.Thread(target=work, name="boot-enrol-sweep", daemon=True)
    thread.start()
    return thread


def flush_counts_every(service: BootService, seconds: float,
                       stop: threading.Event) -> threading.Thread:
    """Write the refusal counts to the store every `seconds` until `stop`, and once after."""
    def work() -> None:
        while not stop.wait(seconds):
            _flush(service)
        _flush(service)
    thread = threading.Thread(target=work, name="boot-counts", daemon=True)
    thread.start()
    return thread


def _flush(service: BootService) -> None:
    try:
        service.flush_counts()
    except VirtfleetError as exc:  # the store is down: the counts wait for the next try
        log.warning("recording refusal counts: %s", printable(exc.message))


def files_dir(value: Path | None) -> Path | None:
    if value is None:
        return None
    if not value.is_dir():
        raise InvalidInput("files", f"{str(value)!r} is not a directory")
    return value
