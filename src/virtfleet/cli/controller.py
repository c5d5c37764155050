"""`virtfleet serve` (the controller) and `virtfleet sync` (one pass by hand)."""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.options import Json
from virtfleet.cli.output import emit, emit_json, report_failures
from virtfleet.cli.progress import fleet_progress
from virtfleet.errors import InvalidInput
from virtfleet.inventory.records import HostFailure

if TYPE_CHECKING:
    from virtfleet.inventory.store import Store


def _parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        port_no = int(port)
    except ValueError:
        raise InvalidInput("--listen", "must be ADDRESS:PORT, e.g. 127.0.0.1:0") from None
    if not host or not 0 <= port_no <= 65535:
        raise InvalidInput("--listen", "must be ADDRESS:PORT with a port from 0 to 65535")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        # Plain HTTP with a bearer token: fine on loopback, not on a network.
        raise InvalidInput("--listen", f"{host!r} is not a loopback address; the API serves "
                           "plain HTTP and listens on 127.0.0.1 or ::1 only")
    return host, port_no


def serve(
    ctx: typer.Context,
    listen: Annotated[str, typer.Option(help="Address:port for the API (0 = any free port).")]
    = "127.0.0.1:0",
    interval: Annotated[float, typer.Option(help="Seconds between maintenance passes.", min=0.5)]
    = 10.0,
    full_resync: Annotated[float, typer.Option(help="Seconds between full resyncs.", min=5)]
    = 300.0,
) -> None:
    """Run the controller: connections kept open, events followed, the store kept current."""
    import uvicorn

    from virtfleet.controller.api import create_app
    from virtfleet.controller.service import Controller

    host, port = _parse_listen(listen)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise InvalidInput("--listen", f"cannot bind {listen}: {exc.strerror}") from None
    sock.listen(1024)  # before registering, so a CLI that finds us can connect at once
    bound_host, bound_port = sock.getsockname()[:2]
    url = f"http://{'[' + bound_host + ']' if ':' in bound_host else bound_host}:{bound_port}"
    server: uvicorn.Server | None = None

    def superseded() -> None:
        if server is not None:
            server.should_exit = True

    controller = Controller(app_context(ctx).store(), interval=interval,
                            full_resync=full_resync, on_superseded=superseded)
    # SIGTERM is an orderly exit (registration removed, connections closed) from here on,
    # including after uvicorn, which re-raises the signal it stopped on once it is done.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        controller.start(url)
        failed = controller.state.failures()
        logging.getLogger("virtfleet.controller").info(
            "serving %s: %d hosts, %d unreachable", url, len(controller.state.hosts()),
            len(failed))
        server = uvicorn.Server(uvicorn.Config(create_app(controller), log_level="warning",
                                               access_log=False))
        server.run(sockets=[sock])
    finally:
        controller.stop()


def sync(ctx: typer.Context, json: Json = False) -> None:
    """One pass by hand: every hypervisor's VMs into the store (through the controller if one
    is running, so its own view is refreshed too)."""
    from virtfleet.controller.client import ControllerClient, is_live

    store = app_context(ctx).store()
    rec = store.controller()
    if rec is not None and is_live(rec):
        data = ControllerClient(rec, timeout=600).sync()
        hosts, vms = int(data["hosts"]), int(data["vms"])
        failed = [HostFailure(f["host"], f["kind"], f["error"]) for f in data["failed"]]
    else:
        hosts, vms, failed = _sync_here(store)
    if json:
        emit_json({"hosts": hosts, "vms": vms, "failed": [f.as_json() for f in failed]})
    else:
        emit(f"Synced {hosts - len(failed)} of {hosts} hypervisors, {vms} VMs\n")
    report_failures(failed, asked=hosts)
    if failed:
        raise typer.Exit(1)


def _sync_here(store: Store) -> tuple[int, int, list[HostFailure]]:
    from virtfleet.observed import record
    from virtfleet.queries import ask_fleet, domains_of, failures

    hosts = store.hypervisors()
    with fleet_progress(len(hosts), "sync") as tick:
        results = ask_fleet(hosts, domains_of, progress=tick)
    record(store, results)
    vms = sum(len(r.value) for r in results if r.value is not None)
    return len(results), vms, failures(results)
