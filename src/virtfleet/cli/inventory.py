"""`virtfleet apply -f FILE`: make the inventory what the fleet file says."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.hostkey import AcceptNew, host_key_step
from virtfleet.cli.options import Json
from virtfleet.cli.output import emit, emit_json
from virtfleet.inventory.records import ApplyPlan


def _plan_text(plan: ApplyPlan, dry_run: bool) -> str:
    if plan.empty:
        return "Inventory already matches the fleet file; nothing to do.\n"
    verb = "Would" if dry_run else "Did"
    lines = []
    for sign, items in (("+", plan.added), ("~", plan.changed), ("-", plan.removed)):
        for kind, name, detail in items:
            lines.append(f"{sign} {kind} {name}" + (f": {detail}" if detail else ""))
    counts = f"{len(plan.added)} to add, {len(plan.changed)} to change, " \
             f"{len(plan.removed)} to remove"
    summary = f"{verb}: {counts}" if dry_run else f"Applied: {counts.replace(' to ', ' ')}"
    return "\n".join(lines) + f"\n{summary}\n"


def apply(
    ctx: typer.Context,
    file: Annotated[Path, typer.Option("-f", "--file", help="Fleet file (YAML).")],
    dry_run: Annotated[bool, typer.Option("--dry-run",
                                          help="Show what would change; write nothing.")] = False,
    json: Json = False,
    accept_new: AcceptNew = False,
) -> None:
    """Validate a fleet file and record it in the store (adds, changes, removes)."""
    from virtfleet.cli.net import check_networks
    from virtfleet.inventory.fleetfile import load_fleet  # pydantic models: slow to import

    fleet = load_fleet(file)
    # New qemu+ssh hosts' keys: shown, refused unless accepted, pinned before the networks
    # below connect (docs/transports.md).
    keys = host_key_step([(hv.name, hv.uri) for _, _, hv in fleet.hypervisors()], accept_new,
                         dry_run)
    keys.commit()
    # libvirt networks the file declares go onto its hypervisors (docs/networks.md); a
    # dry pass first, so bad input stops apply before the store or any host changes
    pending = check_networks(fleet)
    store = app_context(ctx).store()
    plan = store.plan_apply(fleet) if dry_run else store.apply(fleet)
    nets = pending.finish(dry_run) if pending is not None else None
    if json:
        def rows(items: list[tuple[str, str, str]]) -> list[dict[str, str]]:
            return [{"kind": k, "name": n, "detail": d} for k, n, d in items]
        emit_json({"dry_run": dry_run, "added": rows(plan.added), "changed": rows(plan.changed),
                   "removed": rows(plan.removed), **({"networks": nets.rows} if nets else {}),
                   "host_keys": keys.rows()})
    else:
        emit(_plan_text(plan, dry_run) + keys.text + (nets.text if nets else ""))
    if nets is not None and nets.failed:
        raise typer.Exit(1)
