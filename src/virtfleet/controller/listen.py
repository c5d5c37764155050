"""The controller beyond its Unix socket: `--listen HOST:PORT` with `--tls-cert/--tls-key`.

The Unix socket stays the default and the CLI's way in. A TCP listener is for people and
scripts with user tokens (and Prometheus): it serves HTTPS with the given certificate, and an
address that is not loopback is refused without one, so a token never crosses a network in
clear. On it only user tokens work: the controller's own token is for the socket (app.py).

A loopback address may go without TLS (a Prometheus on the same machine); the port is only
the controller's while it runs, so any local user could bind it after, as issue 12 showed:
clients there must only send a token they could afford that user to see.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtfleet.errors import InvalidInput
from virtfleet.tlsfiles import tls_files

log = logging.getLogger("virtfleet.controller")


def closing_server(config: Any, before_shutdown: Callable[[], None]) -> Any:
    """A uvicorn.Server that calls `before_shutdown` as its shutdown begins. uvicorn waits for
    every open response before it returns from run(); the controller's events streams never
    end by themselves, so a SIGTERM with an events client connected (bench/scale's, a web
    console) kept the controller running, and renewing its leases, until that client left."""
    import uvicorn

    class ClosingServer(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            before_shutdown()
            await super().shutdown(sockets)

    return ClosingServer(config)


@dataclass(frozen=True)
class Listen:
    """Where to listen over TCP, and the certificate to serve (None: plain, loopback only)."""

    host: str
    port: int
    address: tuple[Any, ...]  # the resolved socket address to bind
    family: int
    cert: Path | None = None
    key: Path | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.cert else 'http'}://{host}:{self.port}"

    def bind(self) -> socket.socket:
        """The listening socket, bound now, so a port in use stops `serve` before it starts."""
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(self.address)
            sock.listen(1024)
        except OSError as exc:
            sock.close()
            raise InvalidInput("listen", f"cannot listen on {self.host}:{self.port}: "
                               f"{exc.strerror}") from None
        return sock


def _split(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InvalidInput("listen", f"{text!r} is not HOST:PORT (a port from 1 to 65535; "
                           "an IPv6 address in brackets: [::1]:8443)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def check_listen(text: str | None, cert: Path | None, key: Path | None) -> Listen | None:
    """The TCP listener asked for, checked: None for the Unix socket only. A non-loopback
    address without TLS is refused."""
    if text is None:
        if cert is not None or key is not None:
            raise InvalidInput("tls_cert" if cert is not None else "tls_key",
                               "goes with `listen` (the Unix socket needs no certificate)")
        return None
    host, port = _split(text)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InvalidInput("listen", f"cannot resolve {host!r}: {exc.strerror}") from None
    tls = tls_files(cert, key)
    loopback = all(ipaddress.ip_address(str(a[4][0]).split("%")[0]).is_loopback
                   for a in found)
    if tls is None and not loopback:
        raise InvalidInput("listen", f"{host} is not a loopback address: beyond loopback the "
                           "controller serves only HTTPS; give `tls_cert` and `tls_key`")
    family, _type, _proto, _name, address = found[0]
    return Listen(host, port, address, family, *(tls or (None, None)))


class TcpServer:
    """A uvicorn server for the TCP listener, in a thread of its own beside the socket's (the
    main thread's keeps the signals)."""

    def __init__(self, listen: Listen, sock: socket.socket, app: Any) -> None:
        import uvicorn

        self.listen = listen
        self._sock = sock
        config = uvicorn.Config(
            app, log_level="warning", access_log=False,
            ssl_certfile=str(listen.cert) if listen.cert else None,
            ssl_keyfile=str(listen.key) if listen.key else None)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="listen", daemon=True)

    def _run(self) -> None:
        self._server.run(sockets=[self._sock])

    def start(self) -> None:
        self._thread.start()
        log.info("also serving %s", self.listen.url)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        with contextlib.suppress(OSError):
            self._sock.close()
