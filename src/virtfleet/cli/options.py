"""Options several commands share, so they read the same everywhere."""

from __future__ import annotations

from typing import Annotated

import typer

Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
Site = Annotated[str | None, typer.Option("--site", help="Only this site.")]
Pod = Annotated[str | None, typer.Option("--pod", help="Only this pod.")]
HostOpt = Annotated[str | None, typer.Option("--host", help="Only this hypervisor.")]
Group = Annotated[str | None, typer.Option("--group", help="Only hypervisors in this host group.")]
CpuRatioOpt = Annotated[float | None, typer.Option(
    "--cpu-ratio", help="vCPUs per host thread the scheduler allows (default 1.0, or the "
    "--policy file's).", show_default=False)]
HAOpt = Annotated[bool, typer.Option(
    "--ha", help="HA: restarted on another hypervisor of its pod when its own fails (after "
    "that one is fenced; docs/ha.md). Libvirt autostart stays off.")]
HAPriorityOpt = Annotated[int | None, typer.Option(
    "--ha-priority", help="With --ha: restart priority 0-1000, higher first (default 100).",
    show_default=False)]

# How the fleet services' `scope` fields read on the command line (cli/fields.py).
SCOPE_FLAGS = {"scope": "--host/--pod/--site/--group/--all", "scope.all": "--all",
               "scope.host": "--host", "scope.pod": "--pod", "scope.site": "--site",
               "scope.group": "--group"}
