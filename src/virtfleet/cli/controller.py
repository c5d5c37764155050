"""`virtfleet serve` (the controller) and `virtfleet sync` (one pass by hand)."""

from __future__ import annotations

import logging
import signal
import socket
import sys
from datetime import UTC, datetime
from typing import Annotated

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.options import Json
from virtfleet.cli.output import emit, emit_json, report_failures
from virtfleet.cli.progress import fleet_progress
from virtfleet.errors import InvalidInput
from virtfleet.inventory.records import HostStatus


def _parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    try:
        port_no = int(port)
    except ValueError:
        raise InvalidInput("--listen", "must be ADDRESS:PORT, e.g. 127.0.0.1:0") from None
    if not host or not 0 <= port_no <= 65535:
        raise InvalidInput("--listen", "must be ADDRESS:PORT with a port from 0 to 65535")
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
    controller = Controller(app_context(ctx).store(), interval=interval, full_resync=full_resync)
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
    """One pass by hand: ask every hypervisor for its VMs and record them in the store."""
    from virtfleet.queries import ask_fleet, domains_of, failures

    store = app_context(ctx).store()
    hosts = store.hypervisors()
    with fleet_progress(len(hosts), "sync") as tick:
        results = ask_fleet(hosts, domains_of, progress=tick)
    at = datetime.now(UTC)
    store.replace_many({r.host.name: r.value for r in results if r.value is not None}, at)
    failed = failures(results)
    for name, err in failed:
        store.set_host_status(HostStatus(name, False, err.message, at))
    vms = sum(len(r.value) for r in results if r.value is not None)
    if json:
        emit_json({"hosts": len(results), "vms": vms,
                   "failed": [{"host": h, "kind": e.kind, "error": e.message}
                              for h, e in failed]})
    else:
        emit(f"Synced {len(results) - len(failed)} of {len(results)} hypervisors, {vms} VMs\n")
    report_failures(failed)
    if failed:
        raise typer.Exit(1)
