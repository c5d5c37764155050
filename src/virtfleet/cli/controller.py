"""`virtfleet serve` (the controller) and `virtfleet sync` (one pass by hand)."""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.options import CpuRatioOpt, Json
from virtfleet.cli.output import emit, emit_json, report_failures, warn
from virtfleet.cli.plan import PolicyFile
from virtfleet.cli.progress import step_progress

if TYPE_CHECKING:
    import socket

    import uvicorn

    from virtfleet.config import HATimings
    from virtfleet.controller.listen import Listen


def serve(
    ctx: typer.Context,
    socket_dir: Annotated[Path | None, typer.Option(
        "--socket-dir", help="Directory (made 0700, or refused unless it is ours and 0700) for "
        "the API's Unix socket. Default: $VIRTFLEET_RUN_DIR, /run/virtfleet for root, else "
        "$XDG_RUNTIME_DIR/virtfleet or /tmp/virtfleet-UID.")] = None,
    interval: Annotated[float, typer.Option(help="Seconds between maintenance passes.", min=0.5)]
    = 10.0,
    full_resync: Annotated[float, typer.Option(help="Seconds between full resyncs.", min=5)]
    = 300.0,
    stuck_after: Annotated[float | None, typer.Option(
        help="Seconds a worker may go without progress before the controller stops "
        "heart-beating (default: twice the per-host deadline plus --interval).", min=1)]
    = None,
    stats_interval: Annotated[float, typer.Option(
        help="Seconds between bulk-stats passes over the fleet, which /metrics serves.",
        min=1)] = 15.0,
    ha_grace: Annotated[float | None, typer.Option(
        "--ha-grace", help="HA: seconds a lost hypervisor whose BMC says its power is on gets "
        "for libvirtd to come back before it is fenced (default 10, env VIRTFLEET_HA_GRACE).",
        min=0, max=3600, show_default=False)] = None,
    cpu_ratio: CpuRatioOpt = None, policy_file: PolicyFile = None,
    tcp: Annotated[str | None, typer.Option(
        "--listen", help="Also serve the API over TCP at HOST:PORT, for user tokens "
        "(docs/api.md); beyond loopback only with --tls-cert/--tls-key.")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate for --listen.")]
    = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key for --listen (mode "
                                                  "0600).")] = None,
    site: Annotated[list[str] | None, typer.Option(
        "--site", help="Act only for this site (repeatable), among several controllers on "
        "a PostgreSQL store (docs/scale-out.md); default: a fair share of every site.")]
    = None,
) -> None:
    """Run the controller: connections kept open, events followed, the store kept current,
    and HA in the pods where it is enabled (docs/ha.md): lost hypervisors fenced through their
    BMCs, their HA VMs restarted elsewhere (placed with --cpu-ratio/--policy)."""
    import uvicorn

    from virtfleet.cli.plan import _policy
    from virtfleet.controller.app import build_app
    from virtfleet.controller.listen import TcpServer, closing_server
    from virtfleet.controller.service import Controller
    from virtfleet.controller.sockets import default_run_dir, listen, private_dir

    bound = _bound(tcp, tls_cert, tls_key)
    policy = _policy(policy_file, cpu_ratio, None, False, None, None)

    directory = private_dir(socket_dir or default_run_dir(), "--socket-dir")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sock, path, url = listen(directory, "--socket-dir")
    server: uvicorn.Server | None = None

    def superseded() -> None:
        if server is not None:
            server.should_exit = True

    controller = Controller(app_context(ctx).store(), interval=interval,
                            full_resync=full_resync, stuck_after=stuck_after,
                            on_superseded=superseded, stats_interval=stats_interval,
                            ha=_ha_timings(ha_grace), policy=policy, sites=site or ())
    app = build_app(controller)  # events and metrics come in through controller/routers.py
    server = closing_server(uvicorn.Config(app, log_level="warning", access_log=False),
                            controller.events.end_streams)
    over_tcp = (TcpServer(*bound, build_app(controller, local_token=False, shared=app))
                if bound is not None else None)
    stopping = _on_signals(server)
    try:
        from virtfleet.cli.fields import options_named

        with options_named({"site": "--site"}):
            controller.start(url)
        failed = controller.state.failures()
        logging.getLogger("virtfleet.controller").info(
            "serving %s: %d hosts, %d unreachable", url, len(controller.state.hosts()),
            len(failed))
        stopping.serving = True
        if over_tcp is not None:
            over_tcp.start()
        if not server.should_exit:
            server.run(sockets=[sock])
    finally:
        if over_tcp is not None:
            over_tcp.stop()
        controller.stop()
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class _Stop:
    """SIGTERM: an orderly exit (registration removed, connections closed). While uvicorn runs
    it has its own handler and re-raises the signal once it is done; before, during the first
    sync, leave at once. Telling the server to exit as well covers a signal that lands where
    SystemExit is swallowed (a weakref callback, say) just before it starts."""

    def __init__(self, server: uvicorn.Server) -> None:
        self.server = server
        self.serving = False

    def __call__(self, *_: object) -> None:
        self.server.should_exit = True
        if not self.serving:
            sys.exit(0)


def _on_signals(server: uvicorn.Server) -> _Stop:
    stop = _Stop(server)
    signal.signal(signal.SIGTERM, stop)
    # `kill -USR1 PID` writes every thread's stack to the log (stderr): what a controller that
    # seems stuck is waiting on, without stopping it.
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    return stop


def _bound(tcp: str | None, cert: Path | None, key: Path | None
           ) -> tuple[Listen, socket.socket] | None:
    """--listen checked and its socket bound before the controller starts, so a bad address,
    a busy port or a bad TLS file is refused before anything runs."""
    from virtfleet.cli.fields import options_named
    from virtfleet.controller.listen import check_listen

    with options_named({"listen": "--listen", "tls_cert": "--tls-cert", "tls_key": "--tls-key"}):
        beyond = check_listen(tcp, cert, key)
        return (beyond, beyond.bind()) if beyond is not None else None


def _ha_timings(grace: float | None) -> HATimings:
    import dataclasses

    from virtfleet.config import HATimings

    timings = HATimings.from_env()
    return timings if grace is None else dataclasses.replace(timings, grace=grace)


def sync(ctx: typer.Context, json: Json = False) -> None:
    """One pass by hand: every hypervisor's VMs into the store (through the controller if one
    is running, so its own view is refreshed too)."""
    from virtfleet.fleet.overview import OverviewService

    actx = app_context(ctx)
    with step_progress() as tick:
        done = OverviewService(actx.db_url, actx.store).sync(progress=tick)
    for note in done.notes:
        warn(note)
    if json:
        emit_json(done.as_json())
    else:
        emit(f"Synced {done.hosts - len(done.failed)} of {done.hosts} hypervisors, "
             f"{done.vms} VMs\n")
    report_failures(done.failed, asked=done.hosts)
    if done.failed:
        raise typer.Exit(1)
