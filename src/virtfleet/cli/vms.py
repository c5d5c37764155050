"""`virtfleet list`: every VM of the fleet (or of a site, pod, host or group) with its state.

Three sources, in the order a plain `list` tries them (fleet/overview.py):
- a running controller on this store: warm, each row as old as the controller's last reading;
- the hypervisors themselves (`--live`, or when no controller answers);
- the store (`--cached`): what the last sync or controller wrote, without asking anyone.
Rows from the controller and the store carry `observed_at`, and the table shows their age.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.fields import options_named
from virtfleet.cli.options import Group, HostOpt, Json, Pod, Site
from virtfleet.cli.output import age, emit, emit_json, report_failures, table, warn
from virtfleet.cli.progress import step_progress
from virtfleet.errors import InvalidInput
from virtfleet.inventory.records import STATES


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
    from virtfleet.fleet.overview import ListRequest, OverviewService

    if live and cached:
        raise InvalidInput("--cached", "cannot be combined with --live")
    actx = app_context(ctx)
    req = ListRequest(site, pod, host, group, state,
                      source="live" if live else "store" if cached else "auto")
    with options_named({"state": "--state"}), step_progress() as tick:
        found = OverviewService(actx.db_url, actx.store).list_vms(req, progress=tick)
    for note in found.notes:
        warn(note)
    rows = found.vms
    if json:
        emit_json(list(rows))
    else:
        now = datetime.now(UTC)
        seen = found.source != "live"
        headers = ["Site", "Pod", "Host", "Id", "Name", "State", "vCPUs", "Memory"]
        emit(table(headers + (["Age"] if seen else []), [
            [v["site"], v["pod"], v["host"], v["id"], v["name"], v["state"], v["vcpus"],
             f"{v['memory_mib']} MiB"]
            + ([age(datetime.fromisoformat(v["observed_at"]), now)] if seen else [])
            for v in rows]))
        hosts = len({v["host"] for v in rows})
        where = {"controller": "from the controller", "live": "read live",
                 "store": "from the store"}[found.source]
        warn(f"{len(rows)} VMs on {hosts} hypervisors, {where}")
    report_failures(found.failed)
    if found.failed:
        raise typer.Exit(1)
