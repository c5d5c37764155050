"""`virtfleet hostkey ...`: the ssh host keys virtfleet pinned for qemu+ssh hypervisors.

`host add` and `apply` pin new hosts' keys through `host_key_step` (below); these commands
list what is pinned, check hosts against it, and forget a key a reinstalled host replaced.
The logic is transport/pinning.py's; this module only words it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.fields import options_named
from virtfleet.cli.options import Group, Json, Pod, Site
from virtfleet.cli.output import emit, emit_json, table, warn
from virtfleet.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from virtfleet.transport.pinning import PinPlan, PinResult

app = typer.Typer(no_args_is_help=True, help="ssh host keys of qemu+ssh hypervisors.")

AcceptNew = Annotated[bool, typer.Option(
    "--accept-new", help="Pin the ssh host key of each host not pinned yet, after showing its "
    "fingerprint (compare it with the host's own first). Without it a new key is refused.")]
Names = Annotated[list[str] | None, typer.Argument(help="Hypervisor names (default: all).")]
FLAGS = {"accept_new": "--accept-new", "uri": "--uri"}

_WORDS = {"pinned": "pinned", "accepted": "pinned now", "new": "NOT PINNED (needs --accept-new)",
          "changed": "CHANGED", "unreachable": "not pinned (the host did not answer)"}


def _line(r: PinResult, dry_run: bool) -> str:
    from virtfleet.transport.pinning import ACCEPTED, CHANGED, host_label

    key = r.key
    word = "would be pinned" if dry_run and r.state == ACCEPTED else _WORDS[r.state]
    shown = key.describe() if key else "none seen,"
    if r.state == CHANGED and r.pinned is not None:
        shown = f"{shown} (pinned: {r.pinned.describe()})"
    return f"ssh host key of {host_label(r)}: {shown} {word}\n"


@dataclass
class HostKeyStep:
    """The host-key part of `host add` / `apply`: shown, refused or accepted before the store
    changes, pinned by commit()."""

    plan: PinPlan
    dry_run: bool

    @property
    def text(self) -> str:
        return "".join(_line(r, self.dry_run) for r in self.plan.results if r.state != "pinned")

    def rows(self) -> list[dict[str, object]]:
        return self.plan.rows()

    def commit(self) -> None:
        if not self.dry_run:
            self.plan.commit()
        for r in self.plan.of("unreachable"):
            warn(f"{r.host}: ssh host key not pinned: {r.address}:{r.port} did not answer; "
                 f"run `virtfleet hostkey pin {r.host} --accept-new` once it does")


def host_key_step(hosts: Sequence[tuple[str, str]], accept_new: bool,
                  dry_run: bool = False, need_answer: bool = False) -> HostKeyStep:
    """Scan the (name, uri) qemu+ssh hosts whose key is not pinned yet; refuse (nothing is
    changed) a new key without --accept-new, or a changed one, unless `dry_run`; with
    `need_answer`, a host that did not answer too (`host add`)."""
    from virtfleet.transport.pinning import plan_pins

    plan = plan_pins(hosts, accept_new=accept_new)
    if need_answer:
        plan.require_answered()
    step = HostKeyStep(plan, dry_run)
    if not dry_run and (plan.of("new") or plan.of("changed")):
        for line in step.text.splitlines():  # the fingerprints to compare, then the refusal
            warn(line)
        with options_named(FLAGS):
            plan.require_decided()
    return step


def _hosts(ctx: typer.Context, names: list[str] | None, site: str | None, pod: str | None,
           group: str | None) -> list[tuple[str, str]]:
    from virtfleet.fleet.hosts import HostQuery, HostService

    with HostService(app_context(ctx).store()) as hosts:
        query = HostQuery(tuple(names or ()), site, pod, group)
        return [(h.name, h.uri) for h in hosts.select(query)]


@app.command("list")
def list_keys(ctx: typer.Context, names: Names = None, site: Site = None, pod: Pod = None,
              group: Group = None, json: Json = False) -> None:
    """The key pinned for each qemu+ssh hypervisor (no host is asked)."""
    from virtfleet.transport.hostkeys import KnownHosts, preferred
    from virtfleet.transport.paths import TransportDir
    from virtfleet.transport.pinning import ssh_target

    td = TransportDir.from_env().ensure()
    known = KnownHosts(td.known_hosts)
    rows = []
    for name, uri in _hosts(ctx, names, site, pod, group):
        target = ssh_target(uri)
        if target is None:
            continue
        key = preferred(known.keys_for(*target))
        rows.append({"host": name, "address": target[0], "port": target[1],
                     "type": key.short_type if key else None,
                     "fingerprint": key.fingerprint if key else None})
    if json:
        emit_json({"known_hosts": str(td.known_hosts), "hosts": rows})
        return
    emit(table(["Host", "Address", "Port", "Type", "Fingerprint"],
               [(r["host"], r["address"], r["port"], r["type"],
                 r["fingerprint"] or "not pinned") for r in rows]))
    emit(f"\nknown_hosts: {td.known_hosts}\n")


@app.command("pin")
def pin(ctx: typer.Context, names: Names = None, site: Site = None, pod: Pod = None,
        group: Group = None, accept_new: AcceptNew = False, json: Json = False) -> None:
    """Ask each qemu+ssh hypervisor for its host key: pin a new one (--accept-new), confirm a
    pinned one, and refuse a changed one (exit 4; `hostkey forget` it first)."""
    from virtfleet.transport.pinning import plan_pins

    plan = plan_pins(_hosts(ctx, names, site, pod, group), accept_new=accept_new, rescan=True)
    if json:
        emit_json(plan.rows())
    else:
        emit("".join(_line(r, False) for r in plan.results))
    with options_named(FLAGS):
        plan.require_decided()
    HostKeyStep(plan, dry_run=False).commit()
    if plan.of("unreachable"):
        raise typer.Exit(1)


@app.command("forget")
def forget(ctx: typer.Context,
           name: Annotated[str, typer.Argument(help="Hypervisor name.")]) -> None:
    """Forget the key pinned for a hypervisor (after it was reinstalled); pin it again next."""
    from virtfleet.transport.pinning import forget as forget_key
    from virtfleet.transport.pinning import ssh_target

    hosts = app_context(ctx).store().hypervisors(host=name)
    if not hosts:
        raise NotFound(f"hypervisor {name!r} is not in the inventory")
    target = ssh_target(hosts[0].uri)
    if target is None:
        raise InvalidInput("NAME", f"{name} is not reached over qemu+ssh ({hosts[0].uri})")
    n = forget_key(*target)
    emit(f"Forgot {n} ssh host key(s) of {name} ({target[0]}:{target[1]})\n")
