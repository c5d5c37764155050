"""`virtfleet ha status|enable|disable|set|unset|power`: parse options, call the HA service
(fleet/ha.py), render its result. The fencing and restarting is the controller's (`serve`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.fields import options_named
from virtfleet.cli.options import Json
from virtfleet.cli.output import age, emit, emit_json, table, warn

if TYPE_CHECKING:
    from virtfleet.fleet.ha import HAService, Marked

app = typer.Typer(no_args_is_help=True, help="High availability: fencing and restart of HA "
                  "VMs when a hypervisor fails (run by `virtfleet serve`).")

FLAGS = {"vm": "VM", "pod": "POD", "priority": "--priority", "host": "HOST"}
VMArg = Annotated[str, typer.Argument(help="VM name.", show_default=False)]
PodArg = Annotated[str, typer.Argument(help="Pod name.", show_default=False)]


@contextmanager
def _service(ctx: typer.Context) -> Iterator[HAService]:
    from virtfleet.fleet.ha import HAService

    with HAService(app_context(ctx).store()) as service, options_named(FLAGS):
        yield service


def _said(m: Marked, json: bool) -> None:
    if json:
        emit_json(m.as_json())
        return
    if m.priority is None:
        emit(f"Domain '{m.vm}' is not HA any more\n")
    elif m.source == "marked":
        emit(f"Domain '{m.vm}' is HA, restart priority {m.priority} (on {m.host})\n")
    else:
        emit(f"Domain '{m.vm}' is still HA through its {m.source}'s policy, priority "
             f"{m.priority}\n")
    if m.autostart_turned_off:
        warn(f"{m.vm}: libvirt autostart turned off (a host that comes back must not start "
             "an HA VM by itself)")


@app.command("set")
def ha_set(ctx: typer.Context, vm: VMArg,
           priority: Annotated[int | None, typer.Option(
               "--priority", help="Restart priority, 0-1000: higher first (default 100).",
               show_default=False)] = None,
           json: Json = False) -> None:
    """Make a VM HA: restarted on another hypervisor of its pod when its own fails (after
    that one is fenced). Its libvirt autostart goes off."""
    from virtfleet.fleet.ha import MarkRequest

    with _service(ctx) as service:
        req = MarkRequest(vm=vm) if priority is None else MarkRequest(vm=vm, priority=priority)
        _said(service.mark(req), json)


@app.command("unset")
def ha_unset(ctx: typer.Context, vm: VMArg, json: Json = False) -> None:
    """Take a VM's HA mark away (its group's policy in the fleet file, if any, still applies).
    Its autostart stays off."""
    with _service(ctx) as service:
        _said(service.unmark(vm), json)


@app.command("enable")
def ha_enable(ctx: typer.Context, pod: PodArg,
              no_check: Annotated[bool, typer.Option(
                  "--no-check", help="Do not ask each BMC for its power status first.")]
              = False,
              json: Json = False) -> None:
    """Let the controller fence and restart in POD. Refused unless every hypervisor of the
    pod has a BMC in the fleet file (and, without --no-check, each BMC answers)."""
    from virtfleet.fleet.ha import EnableRequest

    with _service(ctx) as service:
        done = service.enable(EnableRequest(pod=pod, check_bmcs=not no_check))
    if json:
        emit_json(done.as_json())
        return
    for c in done.checked:
        emit(f"{c.host}: BMC answers ({c.agent}: power {c.power.value})\n")
    emit(f"HA {'was already' if done.was_enabled else 'is now'} enabled in pod {pod} "
         f"({len(done.hosts)} hypervisors)\n")


@app.command("disable")
def ha_disable(ctx: typer.Context, pod: PodArg) -> None:
    """Stop fencing and restarting in POD (a recovery under way pauses where it is)."""
    with _service(ctx) as service:
        was = service.disable(pod)
    emit(f"HA is now disabled in pod {pod}\n" if was else f"HA was not enabled in pod {pod}\n")


@app.command("power")
def ha_power(ctx: typer.Context,
             host: Annotated[str, typer.Argument(help="Hypervisor name.", show_default=False)],
             on: Annotated[bool, typer.Option(
                 "--on", help="Power it on (a fenced host coming back), then confirm.")] = False,
             json: Json = False) -> None:
    """A hypervisor's power through its BMC (the fleet file's bmc:, as HA fences it); with
    --on, power it on. Its HA VMs stay shut off there; the controller reconciles them."""
    with _service(ctx) as service:
        r = service.power(host, on=on)
    if json:
        emit_json(r.as_json())
        return
    emit(f"{host}: power {r.power.value}" + (" (powered on)" if on else "")
         + f" ({r.agent}, {r.seconds:.1f}s)\n")


@app.command("status")
def ha_status(ctx: typer.Context,
              pod: Annotated[str | None, typer.Option("--pod", help="Only this pod.")] = None,
              json: Json = False) -> None:
    """Each hypervisor's HA state (ok, suspect, fencing, fenced, restarting, recovered,
    fence-failed, maintenance) and where each HA VM is."""
    with _service(ctx) as service:
        st = service.status(pod)
    if json:
        emit_json(st.as_json())
        return
    if st.controller is None:
        warn("no controller is running for this store: nothing watches these hosts "
             "(start `virtfleet serve`)")
    emit(table(["Host", "Pod", "HA", "BMC", "State", "Since", "Detail"],
               [(h.host, h.pod, "on" if h.ha else "off", "yes" if h.bmc else "no", h.state,
                 age(h.since) if h.since else "-", h.detail or "-") for h in st.hosts]))
    if st.vms:
        emit("\n" + table(["VM", "Priority", "Why", "Host", "State", "Detail"],
                          [(v.vm, v.priority, v.source, v.host, v.state, v.detail or "-")
                           for v in st.vms]))
    for r in st.recoveries:
        last = r.steps[-1] if r.steps else None
        emit(f"\nrecovery of {r.host} under way since {age(r.started_at)}"
             + (f": last step {last.kind}" + (f" {last.vm}" if last.vm else "")
                + (f" on {last.host}" if last.host and last.host != r.host else "")
                if last else "") + "\n")
