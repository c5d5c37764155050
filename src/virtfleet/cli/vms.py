"""`virtfleet list`: every VM of the fleet (or of a site, pod, host or group) with its state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from virtfleet.cli.context import AppContext, app_context
from virtfleet.cli.options import Group, HostOpt, Json, Pod, Site
from virtfleet.cli.output import age, emit, emit_json, table, warn
from virtfleet.cli.progress import fleet_progress
from virtfleet.errors import HostUnavailable, InvalidInput, VirtfleetError

# virsh's words (virt/host.py STATE_WORDS); repeated here so the CLI need not import libvirt
# before it knows it has to.
STATES = ("running", "idle", "paused", "in shutdown", "shut off", "crashed", "pmsuspended",
          "no state")


class _Failure(VirtfleetError):
    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self._kind = kind

    @property
    def kind(self) -> str:
        return self._kind


Rows = list[dict[str, Any]]  # FleetVM.as_json() objects, the shape of `list --json`
Failed = list[tuple[str, VirtfleetError]]


def _from_controller(
    actx: AppContext, filters: dict[str, str | None]
) -> tuple[Rows, Failed] | None:
    """The fleet view from a running controller, or None if there is none to ask."""
    import sqlite3

    from virtfleet.controller.client import ControllerClient, is_live, registration_from_sqlite

    url = actx.db_url
    try:
        if not url.startswith("sqlite:///"):
            raise sqlite3.Error("not a SQLite store")
        rec = registration_from_sqlite(url)
    except sqlite3.Error:
        rec = actx.store().controller()
    if not is_live(rec):
        return None
    assert rec is not None
    try:
        data = ControllerClient(rec).vms(**filters)
    except HostUnavailable as exc:
        warn(f"{exc.message}; asking the hypervisors directly")
        return None
    failed: Failed = [(f["host"], _Failure(f["error"], f["kind"])) for f in data["failed"]]
    return data["vms"], failed


def _live(actx: AppContext, site: str | None, pod: str | None, host: str | None,
          group: str | None, state: str | None) -> tuple[Rows, Failed]:
    from virtfleet.queries import ask_fleet, domains_of, failures, fleet_vms

    hosts = actx.store().hypervisors(site=site, pod=pod, host=host, group=group)
    with fleet_progress(len(hosts), "list") as tick:
        results = ask_fleet(hosts, domains_of, progress=tick)
    rows = [v.as_json() for v in fleet_vms(results) if state is None or v.domain.state == state]
    return rows, failures(results)


def list_vms(
    ctx: typer.Context,
    site: Site = None,
    pod: Pod = None,
    host: HostOpt = None,
    group: Group = None,
    state: Annotated[str | None, typer.Option(
        "--state", help=f"Only VMs in this state ({', '.join(STATES)}).")] = None,
    live: Annotated[bool, typer.Option(
        "--live", help="Ask the hypervisors now even if a controller is running.")] = False,
    json: Json = False,
) -> None:
    """Every VM of the fleet with its state, like `virsh list --all` on every hypervisor."""
    from virtfleet.cli.output import report_failures

    if state is not None and state not in STATES:
        raise InvalidInput("--state", f"{state!r} is not one of: {', '.join(STATES)}")
    actx = app_context(ctx)
    filters = {"site": site, "pod": pod, "host": host, "group": group, "state": state}
    got = None if live else _from_controller(actx, filters)
    source = "controller"
    if got is None:
        got = _live(actx, site, pod, host, group, state)
        source = "live"
    vms, failed = got
    if json:
        emit_json(vms)
    else:
        emit(table(["Site", "Pod", "Host", "Id", "Name", "State", "vCPUs", "Memory"],
                   [(v["site"], v["pod"], v["host"], v["id"], v["name"], v["state"],
                     v["vcpus"], f"{v['memory_mib']} MiB") for v in vms]))
        hosts = len({v["host"] for v in vms})
        if source == "controller":
            seen = [datetime.fromisoformat(v["observed_at"]) for v in vms if v["observed_at"]]
            warn(f"{len(vms)} VMs on {hosts} hypervisors, from the controller; "
                 f"oldest reading {age(min(seen, default=None), datetime.now(UTC))} old")
        else:
            warn(f"{len(vms)} VMs on {hosts} hypervisors, read live")
    report_failures(failed)
    if failed:
        raise typer.Exit(1)
