"""`boot serve` from its settings to serving: every setting checked, the sockets bound and the
installs planned before the first request, so a bad setting fails at once with nothing started
and nothing recorded; then served until stopped.

Settings are named by ServeRequest's fields (`tls_key`, `public_url`); the CLI words them as
its options.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from virtfleet.boot.installs import BootService, check_base
from virtfleet.boot.server import (
    create_app,
    enroll_unfinished,
    files_dir,
    flush_counts_every,
    server_config,
    sweep_enrolments_every,
)
from virtfleet.boot.tftp import TftpService, start_tftp
from virtfleet.boot.trust import Clients, Network, parse_proxies
from virtfleet.errors import InvalidInput
from virtfleet.tlsfiles import tls_files

if TYPE_CHECKING:
    from virtfleet.inventory.store import Store

log = logging.getLogger("virtfleet.boot")

MAX_GUESSES = 10_000
MAX_WAIT = timedelta(days=7)  # the longest token, check wait or client timeout
COUNTS_EVERY_S = 1.0  # refusal counts go to the store about once a second
SWEEP_EVERY_S = 5.0  # replicas on PostgreSQL: enrol what a dead replica left installed


@dataclass(frozen=True)
class ServeRequest:
    fleet_file: Path  # the hypervisors with a provision section
    files: Path | None = None  # served under /files/
    listen: str = "127.0.0.1"
    port: int = 8069  # 0: any free port
    token_ttl: timedelta = timedelta(hours=2)
    check_wait: timedelta = timedelta(minutes=30)  # retry `host check` after the callback
    tftp: Path | None = None  # also served read-only over TFTP
    tftp_port: int = 69
    public_url: str | None = None  # the base URL installers reach us by
    trusted_proxies: tuple[str, ...] = ()  # whose X-Forwarded-For names the client
    guess_limit: int = 10  # refusals per client, wrong tokens per host, in any minute
    client_timeout: timedelta = timedelta(seconds=10)  # to send a whole request
    tls_cert: Path | None = None
    tls_key: Path | None = field(default=None, repr=False)

    def check(self) -> None:
        """The numbers and the public URL; the rest is checked as the server opens."""
        for name, port in (("port", self.port), ("tftp_port", self.tftp_port)):
            if not 0 <= port <= 65535:
                raise InvalidInput(name, f"{port} is not a port number (0 to 65535)")
        if not 1 <= self.guess_limit <= MAX_GUESSES:
            raise InvalidInput("guess_limit", f"must be from 1 to {MAX_GUESSES}")
        for name, span, least in (("token_ttl", self.token_ttl, 1),
                                  ("check_wait", self.check_wait, 0),
                                  ("client_timeout", self.client_timeout, 1)):
            if not least <= span.total_seconds() <= MAX_WAIT.total_seconds():
                raise InvalidInput(name, f"must be between {least} second"
                                   f"{'' if least == 1 else 's'} and 7 days")
        if self.public_url is not None:
            check_base(self.public_url, "public_url")


class BootServer:
    """`boot serve` with its sockets bound and its installs planned; run() serves."""

    def __init__(self, req: ServeRequest, service: BootService, sock: socket.socket,
                 proxies: tuple[Network, ...], tls: tuple[Path, Path] | None,
                 tftp: TftpService | None, new: int) -> None:
        self.req = req
        self.service = service
        self.sock = sock
        self.proxies = proxies
        self.tls = tls
        self.tftp = tftp
        self.new = new  # installs newly planned by this start

    @classmethod
    def open(cls, req: ServeRequest, store: Callable[[], Store]) -> BootServer:
        """`store` is opened only once every setting has passed: a bad one leaves no database
        behind."""
        from virtfleet.inventory.fleetfile import load_fleet

        req.check()
        proxies = parse_proxies(req.trusted_proxies, "trusted_proxies")
        tls = tls_files(req.tls_cert, req.tls_key)
        try:
            ipaddress.ip_address(req.listen)
        except ValueError:
            raise InvalidInput("listen", f"{req.listen!r} is not an IP address") from None
        root = files_dir(req.files)
        fleet = load_fleet(req.fleet_file)
        if not any(hv.provision is not None for _s, _p, hv in fleet.hypervisors()):
            raise InvalidInput("fleet_file", f"{str(req.fleet_file)!r} has no hypervisor with "
                               "a provision section: nothing to install")
        service = BootService(fleet, store(), files=root, token_ttl=req.token_ttl,
                              check_wait=req.check_wait, guesses=req.guess_limit)
        sock = _bind(req.listen, req.port)
        tftp = None
        try:
            if req.tftp is not None:
                tftp = start_tftp(req.tftp, req.listen, req.tftp_port)
            new = service.plan()
        except BaseException:
            sock.close()
            if tftp is not None:
                tftp.stop()
            raise
        return cls(req, service, sock, proxies, tls, tftp, new)

    def prepare(self) -> int:
        """Build and check every host's kickstart before the first request, so an install
        wave only fills in callback URLs and tokens (pykickstart takes about 5 ms a host); logs
        how many and how long. Called once logging is set up: a host whose kickstart cannot be
        built is logged here, and its request says why."""
        started = time.monotonic()
        prepared = self.service.prepare_kickstarts()
        log.info("%d kickstarts built and checked in %.1f s", prepared,
                 time.monotonic() - started)
        return prepared

    @property
    def url(self) -> str:
        """Where installers reach us directly (the port the system gave, for port 0)."""
        host = f"[{self.req.listen}]" if ":" in self.req.listen else self.req.listen
        return f"{'https' if self.tls else 'http'}://{host}:{self.sock.getsockname()[1]}/"

    @property
    def tftp_address(self) -> str | None:
        if self.tftp is None:
            return None
        host = f"[{self.req.listen}]" if ":" in self.req.listen else self.req.listen
        return f"{host}:{self.tftp.port}"

    def run(self) -> None:
        """Serve until uvicorn stops (Ctrl-C, SIGTERM as the caller maps it): uvicorn stops
        taking requests and finishes the running ones; the counts and TFTP stop after it."""
        import uvicorn

        enroll_unfinished(self.service)
        stop_counts = threading.Event()
        counts = flush_counts_every(self.service, COUNTS_EVERY_S, stop_counts)
        if self.service.store.backend == "postgresql":  # the store replicas share
            sweep_enrolments_every(self.service, SWEEP_EVERY_S, stop_counts)
        app = create_app(self.service, self.req.public_url, Clients(self.proxies))
        server = uvicorn.Server(server_config(
            app, request_timeout=self.req.client_timeout.total_seconds(),
            tls_cert=self.tls[0] if self.tls else None,
            tls_key=self.tls[1] if self.tls else None))
        try:
            server.run(sockets=[self.sock])
        finally:
            stop_counts.set()
            counts.join(10)
            if self.tftp is not None:
                self.tftp.stop()


def _bind(listen: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ipaddress.ip_address(listen).version == 6 else socket.AF_INET
    sock = socket.socket(family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((listen, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise InvalidInput("port", f"cannot bind {listen}:{port}: {exc.strerror}") from None
    return sock
