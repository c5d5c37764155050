"""`virtfleet events`: what the running controller tells about the fleet (fleet/events.py)."""

from __future__ import annotations

import json as jsonlib
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.fields import options_named
from virtfleet.cli.output import emit, warn

FLAGS = {"kinds": "--kind", "since": "--since"}


def events(
    ctx: typer.Context,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing events as "
                                         "they come (like tail -f).")] = False,
    json: Annotated[bool, typer.Option("--json", help="One JSON object per line (JSON Lines), "
                                       "for scripts.")] = False,
    kind: Annotated[list[str] | None, typer.Option(
        "--kind", help="Only this kind (vm.state, host.down, ...) or family (vm, host, "
        "operation, ha); may be repeated.", show_default=False)] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="Only events after this event id (as --json prints it).",
        show_default=False)] = None,
) -> None:
    """The controller's events: VM state changes, hypervisors lost and back, operations, HA.

    Without --follow, prints the events the controller still keeps and exits.
    """
    from virtfleet.fleet.events import EventService, EventsRequest

    actx = app_context(ctx)
    req = EventsRequest(kinds=tuple(kind or ()), follow=follow, since=since)
    with options_named(FLAGS):
        for event in EventService(actx.db_url, actx.store).tail(req, note=warn):
            if event.kind.startswith("stream.") and not json:
                warn(f"{event.kind}: {event.body.get('data', {}).get('reason', '')}")
                continue
            emit(jsonlib.dumps(event.as_json()) + "\n" if json else line(event.body))
            sys.stdout.flush()  # a pipe would otherwise hold the events back


def line(body: dict[str, Any]) -> str:
    """One event as a person reads it: when, what, where, and what it says."""
    at = str(body.get("at", ""))[:19].replace("T", " ")
    where = "/".join(str(body[k]) for k in ("site", "pod", "host", "vm") if body.get(k))
    if body.get("operation"):
        where = f"operation {str(body['operation'])[:12]}"
    return f"{at}  {body.get('kind', ''):<18} {where:<40} {summary(body)}\n"


def summary(body: dict[str, Any]) -> str:
    """What the event says, in words: each kind its own sentence (`--json` keeps the data)."""
    d: dict[str, Any] = body.get("data") or {}
    kind = str(body.get("kind"))
    render = _RENDER.get(kind) or _RENDER.get(kind.split(".", 1)[0] + ".*")
    return render(d) if render is not None else _pairs(d)


def _vm_state(d: dict[str, Any]) -> str:
    now = d.get("state") or "undefined"
    return f"{d.get('event')} ({d.get('detail')}): {d.get('previous') or '-'} -> {now}"


def _host_up(d: dict[str, Any]) -> str:
    if d.get("again"):
        return f"answers again after {d.get('down_seconds', 0):.1f}s, {d.get('vms')} VMs"
    return f"reached, {d.get('vms')} VMs"


def _ha_host(d: dict[str, Any]) -> str:
    """A host's HA state (host.suspect, host.unknown, and ha.action without a VM)."""
    detail = f": {d['detail']}" if d.get("detail") else ""
    return f"HA {d.get('state', '?')}{detail}"


def _ha_action(d: dict[str, Any]) -> str:
    action = d.get("action")
    if action == "restart":
        return f"HA restarted it on {d.get('on', '?')}"
    if action == "reconcile":
        return f"HA undefined its stale copy here: {d.get('detail', '')}".rstrip(": ")
    if "state" in d:
        return _ha_host(d)
    return _pairs(d)


def _operation(d: dict[str, Any]) -> str:
    step = d.get("step") or d.get("what") or ""
    words = " ".join(str(x) for x in (d.get("kind", ""), d.get("target", ""), d.get("state", ""),
                                      step) if x)
    return f"{words}: {d['error']}" if d.get("error") else words


def _pairs(d: dict[str, Any]) -> str:
    """A kind without its own sentence (a newer controller's): key=value, never raw JSON."""
    return " ".join(f"{k}={v}" for k, v in d.items() if v not in (None, "", [], {}))


_RENDER: dict[str, Callable[[dict[str, Any]], str]] = {
    "vm.state": _vm_state,
    "host.up": _host_up,
    "host.down": lambda d: str(d.get("reason", "")),
    "host.suspect": _ha_host,
    "host.unknown": _ha_host,
    "ha.action": _ha_action,
    "operation.*": _operation,
    "stream.*": lambda d: str(d.get("reason", "")),
}
