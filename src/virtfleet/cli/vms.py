"""`virtfleet list`: every VM of the fleet (or of a site, pod, host or group) with its state.

Three sources, in the order a plain `list` tries them (fleet/overview.py):
- a running controller on this store: warm, each row as old as the controller's last reading;
- the hypervisors themselves (`--live`, or when no controller answers);
- the store (`--cached`): what the last sync or controller wrote, without asking anyone.
Rows from the controller and the store carry `observed_at`, and the table shows their age.
"""

from __future__ import annotations

from typing import Annotated

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.options import Group, HostOpt, Json, Pod, Site
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
    from virtfleet.cli.fleetlist import show

    code = show(app_context(ctx), site=site, pod=pod, host=host, group=group, state=state,
                live=live, cached=cached, json=json)
    if code:
        raise typer.Exit(code)
