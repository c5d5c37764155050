"""`virtfleet list`: every VM of the fleet (or of a site, pod, host or group) with its state.

Three sources, in the order a plain `list` tries them:
- a running controller on this store: warm, each row as old as the controller's last reading;
- the hypervisors themselves (`--live`, or when no controller answers);
- the store (`--cached`): what the last sync or controller wrote, without asking anyone.
Rows from the controller and the store carry `observed_at`, and the table shows their age.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from virtfleet.cli.context import AppContext, app_context
from virtfleet.cli.options import Group, HostOpt, Json, Pod, Site
from virtfleet.cli.output import age, emit, emit_json, report_failures, table, warn
from virtfleet.cli.progress import fleet_progress
from virtfleet.errors import HostUnavailable, InvalidInput, NotFound
from virtfleet.inventory.records import STATES, HostFailure


@dataclass
class Answer:
    rows: list[dict[str, Any]]  # FleetVM.as_json() objects: the shape of `list --json`
    failed: list[HostFailure]
    source: str  # "controller", "live" or "store"


def _from_controller(actx: AppContext, filters: dict[str, str | None]) -> Answer | None:
    """The fleet view from a running controller, or None if there is none to ask."""
    import sqlite3

    from virtfleet.controller.client import ControllerClient, heartbeat_fresh, is_dead, is_live
    from virtfleet.inventory.registration import registration_from_sqlite

    try:
        rec = registration_from_sqlite(actx.db_url)
    except sqlite3.Error:
        rec = actx.store().controller()
    if rec is None or not is_live(rec):
        if rec is not None and heartbeat_fresh(rec) and is_dead(rec):
            warn(f"the controller (pid {rec.pid}) is gone; asking the hypervisors directly")
        return None
    try:
        data = ControllerClient(rec).vms(**filters)
    except HostUnavailable as exc:
        warn(f"{exc.message}; asking the hypervisors directly")
        return None
    except NotFound:
        return None  # e.g. a host applied seconds ago that the controller has not loaded yet
    failed = [HostFailure(f["host"], f["kind"], f["error"]) for f in data["failed"]]
    return Answer(data["vms"], failed, "controller")


def _live(actx: AppContext, filters: dict[str, str | None]) -> Answer:
    from virtfleet.fleet.queries import ask_fleet, domains_of, failures, fleet_vms

    state = filters["state"]
    hosts = actx.store().hypervisors(site=filters["site"], pod=filters["pod"],
                                     host=filters["host"], group=filters["group"])
    with fleet_progress(len(hosts), "list") as tick:
        results = ask_fleet(hosts, domains_of, progress=tick)
    rows = [v.as_json() for v in fleet_vms(results) if state is None or v.domain.state == state]
    return Answer(rows, failures(results), "live")


def _from_store(actx: AppContext, filters: dict[str, str | None]) -> Answer:
    store = actx.store()
    vms = store.fleet_vms(**filters)
    failed = [HostFailure(s.host, "host-unavailable", s.error)
              for s in store.host_statuses() if not s.reachable]
    in_scope = {h.name for h in store.hypervisors(site=filters["site"], pod=filters["pod"],
                                                    host=filters["host"],
                                                    group=filters["group"])}
    return Answer([v.as_json() for v in vms], [f for f in failed if f.host in in_scope],
                  "store")


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
    cached: Annotated[bool, typer.Option(
        "--cached", help="Read the store only: what the last sync or controller saw.")] = False,
    json: Json = False,
) -> None:
    """Every VM of the fleet with its state, like `virsh list --all` on every hypervisor."""
    if state is not None and state not in STATES:
        raise InvalidInput("--state", f"{state!r} is not one of: {', '.join(STATES)}")
    if live and cached:
        raise InvalidInput("--cached", "cannot be combined with --live")
    actx = app_context(ctx)
    filters = {"site": site, "pod": pod, "host": host, "group": group, "state": state}
    if cached:
        answer = _from_store(actx, filters)
    else:
        answer = (None if live else _from_controller(actx, filters)) or _live(actx, filters)
    rows = answer.rows
    if json:
        emit_json(rows)
    else:
        now = datetime.now(UTC)
        seen = answer.source != "live"
        headers = ["Site", "Pod", "Host", "Id", "Name", "State", "vCPUs", "Memory"]
        emit(table(headers + (["Age"] if seen else []), [
            [v["site"], v["pod"], v["host"], v["id"], v["name"], v["state"], v["vcpus"],
             f"{v['memory_mib']} MiB"]
            + ([age(datetime.fromisoformat(v["observed_at"]), now)] if seen else [])
            for v in rows]))
        hosts = len({v["host"] for v in rows})
        where = {"controller": "from the controller", "live": "read live",
                 "store": "from the store"}[answer.source]
        warn(f"{len(rows)} VMs on {hosts} hypervisors, {where}")
    report_failures(answer.failed)
    if answer.failed:
        raise typer.Exit(1)
