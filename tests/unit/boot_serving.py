"""`boot serve` in this process for unit tests: a real uvicorn on 127.0.0.1 with the same
configuration the CLI uses (server_config: slow-client timeouts, no uvicorn proxy headers), a
real store, and a clock the test moves. Requests can be made from any 127.0.0.0/8 source
address, so a test can be the machine (its reserved address) or a stranger."""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn

from tests.unit.boot_fleet import boot_fleet, mac_of
from tests.unit.nodes import node_uri
from virtfleet.boot.installs import BootService
from virtfleet.boot.server import create_app, server_config
from virtfleet.boot.trust import Clients, parse_proxies
from virtfleet.inventory.fleetfile import parse_fleet
from virtfleet.inventory.store import Store

T0 = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
MAC1 = mac_of(1)
HYP1 = MAC1.replace(":", "-")


class Clock:
    def __init__(self) -> None:
        self.t = T0
        self.mono = 1000.0  # the rate limiter's clock

    def now(self) -> datetime:
        return self.t

    def monotonic(self) -> float:
        return self.mono


@dataclass
class Reply:
    status: int
    text: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Served:
    url: str
    store: Store
    clock: Clock
    service: BootService

    @property
    def port(self) -> int:
        return int(self.url.rstrip("/").rsplit(":", 1)[1])

    def request(self, method: str, path: str, body: bytes | None = None, *,
                source: str = "127.0.0.1", headers: dict[str, str] | None = None) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30,
                                          source_address=(source, 0))
        try:
            hdrs = dict(headers or {})
            if body is not None:
                hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
            conn.request(method, "/" + path, body=body, headers=hdrs)
            resp = conn.getresponse()
            return Reply(resp.status, resp.read().decode(),
                         {k.lower(): v for k, v in resp.getheaders()})
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, form: dict[str, str] | bytes, **kw: Any) -> Reply:
        data = form if isinstance(form, bytes) else urllib.parse.urlencode(form).encode()
        return self.request("POST", path, data, **kw)

    def script(self, mac: str = HYP1, **kw: Any) -> tuple[Reply, str | None]:
        r = self.get(f"hosts/{mac}.ipxe", **kw)
        m = re.search(r"token=([A-Za-z0-9_-]+)", r.text)
        return r, (m.group(1) if m else None)

    def wait_state(self, host: str, state: str) -> Any:
        deadline = time.monotonic() + 60
        while True:
            rec = self.store.install(host)
            if rec is not None and rec.state == state:
                return rec
            assert time.monotonic() < deadline, f"{host} stayed {rec.state if rec else None}"
            time.sleep(0.05)


def loopback_fleet(uris: list[str], relays: Sequence[str] = ()) -> dict[str, Any]:
    """boot_fleet on 127.0.0.0/24 without the NAT relay: hvN's reserved address is
    127.0.0.(20+N), so a request from there is the machine, and from elsewhere is not."""
    data = boot_fleet(uris, subnet="127.0.0.0/24", relays=tuple(relays))
    net = data["sites"][0]["networks"][0]
    net.update(gateway="127.0.0.254", pool={"start": "127.0.0.100", "end": "127.0.0.200"})
    for i, hv in enumerate(data["sites"][0]["pods"][0]["hypervisors"], start=1):
        hv["provision"]["ip"] = f"127.0.0.{20 + i}"
    return data


@contextmanager
def serving(tmp_path: Path, uris: list[str] | None = None,
            ttl: timedelta = timedelta(hours=1), *, fleet: dict[str, Any] | None = None,
            proxies: Sequence[str] = (), request_timeout: float = 10.0,
            stall_timeout: float = 60.0, plain_uvicorn: bool = False,
            **service_kw: Any) -> Iterator[Served]:
    """plain_uvicorn: uvicorn's own h11 protocol instead of boot serve's (no zero-copy send,
    no slow-client timeouts), to check the app alone."""
    files = tmp_path / "files"
    files.mkdir(exist_ok=True)
    (files / "vmlinuz").write_bytes(b"kernel" * 1000)
    uris = uris or [node_uri(tmp_path, "empty.xml", "hv1.xml")]
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    clock = Clock()
    service = BootService(parse_fleet(fleet or boot_fleet(uris)), store, files=files,
                          token_ttl=ttl, now=clock.now, monotonic=clock.monotonic,
                          **service_kw)
    service.plan()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    app = create_app(service, clients=Clients(parse_proxies(proxies)))
    config = (uvicorn.Config(app, log_level="warning", http="h11") if plain_uvicorn else
              server_config(app, request_timeout=request_timeout, stall_timeout=stall_timeout))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive()
            time.sleep(0.02)
        yield Served(f"http://127.0.0.1:{sock.getsockname()[1]}/", store, clock, service)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        store.close()


def install_form(token: str | None, **kw: str) -> dict[str, str]:
    form = {"host": "hv1", "mac": MAC1, "status": "installed", **kw}
    if token is not None:
        form["token"] = token
    return form
