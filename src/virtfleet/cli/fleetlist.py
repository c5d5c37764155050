"""What `virtfleet list` prints: the VMs a fleet/overview.py source gave, as a table or JSON.

Free of typer, so the quick path (cli/quick.py) answers a `list` without loading it: a warm
list from a running controller imports the standard library, this module and what
fleet/overview.py needs to reach the controller, nothing more. cli/vms.py's `list` command
calls the same function.
"""

from __future__ import annotations

from datetime import UTC, datetime

from virtfleet.cli.context import AppContext
from virtfleet.cli.fields import options_named
from virtfleet.cli.output import (
    age,
    emit,
    emit_encoded_json,
    emit_json,
    report_failures,
    table,
    warn,
)
from virtfleet.cli.progress import step_progress
from virtfleet.errors import InvalidInput


def observed(row: dict[str, object]) -> datetime | None:
    """When a row was read; None for one read live just now (in a list from several
    controllers, the sites nobody served are asked directly: those rows show "live")."""
    at = row.get("observed_at")
    return datetime.fromisoformat(at) if isinstance(at, str) else None


def show(actx: AppContext, *, site: str | None = None, pod: str | None = None,
         host: str | None = None, group: str | None = None, state: str | None = None,
         live: bool = False, cached: bool = False, json: bool = False) -> int:
    """List the VMs in scope; the exit code (1 when a host did not answer)."""
    from virtfleet.fleet.overview import ListRequest, OverviewService

    if live and cached:
        raise InvalidInput("--cached", "cannot be combined with --live")
    req = ListRequest(site, pod, host, group, state,
                      source="live" if live else "store" if cached else "auto")
    with options_named({"state": "--state"}), step_progress() as tick:
        found = OverviewService(actx.db_url, actx.store).list_vms(req, progress=tick)
    for note in found.notes:
        warn(note)
    if json:
        if found.encoded is not None:
            emit_encoded_json(found.encoded)
        else:
            emit_json(list(found.vms))
    else:
        rows = found.vms
        now = datetime.now(UTC)
        seen = found.source != "live"
        headers = ["Site", "Pod", "Host", "Id", "Name", "State", "vCPUs", "Memory"]
        emit(table(headers + (["Age"] if seen else []), [
            [v["site"], v["pod"], v["host"], v["id"], v["name"], v["state"], v["vcpus"],
             f"{v['memory_mib']} MiB"]
            + ([age(observed(v), now)] if seen else [])
            for v in rows]))
        # Every hypervisor asked counts, with or without VMs; those that did not answer are
        # said (their rows are missing, not zero).
        silent = f" ({len(found.failed)} did not answer)" if found.failed else ""
        where = {"controller": "from the controller", "live": "read live",
                 "store": "from the store"}[found.source]
        plural = "" if found.hosts == 1 else "s"
        warn(f"{len(rows)} VMs on {found.hosts} hypervisor{plural}{silent}, {where}")
    report_failures(found.failed, asked=found.hosts or None)
    return 1 if found.failed else 0
