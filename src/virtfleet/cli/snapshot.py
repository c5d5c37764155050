"""`virtfleet snapshot ...`: virsh's snapshot-create/list/info/dumpxml/revert/delete, for a VM
named anywhere in the fleet (the snapshot service, fleet/snapshots.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.fields import options_named
from virtfleet.cli.options import HostOpt, Json
from virtfleet.cli.output import emit, emit_json, fields, table
from virtfleet.errors import InvalidInput

if TYPE_CHECKING:
    from virtfleet.fleet.snapshots import SnapshotService

app = typer.Typer(no_args_is_help=True, help="VM snapshots (internal, qcow2), by VM name.")

FLAGS = {"vm": "NAME", "name": "--name", "description": "--description"}

VM = Annotated[str, typer.Argument(help="VM name.")]
SnapName = Annotated[str | None, typer.Argument(help="Snapshot name (or --current).",
                                                show_default=False)]
Current = Annotated[bool, typer.Option("--current", help="The current snapshot.")]


@contextmanager
def _snapshots(ctx: typer.Context) -> Iterator[SnapshotService]:
    from virtfleet.fleet.snapshots import SnapshotService

    with SnapshotService(app_context(ctx).store()) as service, options_named(FLAGS):
        yield service


def _which(name: str | None, current: bool) -> str | None:
    """The snapshot named, or None for the current one; exactly one of the two."""
    if (name is None) == (not current):
        raise InvalidInput("SNAPSHOT", "name a snapshot or give --current")
    return name


def _when(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S +0000")


@app.command("create")
def create(ctx: typer.Context, vm: VM,
           name: Annotated[str | None, typer.Option("--name", help="Default: the time.")] = None,
           description: Annotated[str | None, typer.Option("--description")] = None,
           host: HostOpt = None) -> None:
    """Take an internal snapshot (`virsh snapshot-create`); raw disks are refused."""
    from virtfleet.fleet.snapshots import SnapshotRequest

    with _snapshots(ctx) as snaps:
        made = snaps.create(SnapshotRequest(vm, name, description, host))
    emit(f"Domain snapshot {made} created\n")


@app.command("list")
def list_(ctx: typer.Context, vm: VM, host: HostOpt = None, json: Json = False) -> None:
    """Snapshots as a tree, parents first (`virsh snapshot-list --tree` with times)."""
    with _snapshots(ctx) as snaps:
        infos = snaps.snapshots(vm, host)
    if json:
        emit_json([i.as_json() for i in infos])
        return
    depth: dict[str, int] = {}
    rows = []
    for i in infos:
        depth[i.name] = depth[i.parent] + 1 if i.parent in depth else 0
        rows.append(("  " * depth[i.name] + i.name + (" *" if i.current else ""),
                     _when(i.created), i.state))
    emit(table(["Name", "Creation Time", "State"], rows))


@app.command("info")
def info(ctx: typer.Context, vm: VM, name: SnapName = None, current: Current = False,
         host: HostOpt = None, json: Json = False) -> None:
    """`virsh snapshot-info`."""
    which = _which(name, current)
    with _snapshots(ctx) as snaps:
        i = snaps.info(vm, which, host)
    if json:
        emit_json(i.as_json())
        return
    emit(fields([("Name", i.name), ("Domain", i.domain), ("Current", "yes" if i.current
                                                                   else "no"),
                 ("State", i.state), ("Location", i.location), ("Parent", i.parent or "-"),
                 ("Children", i.children), ("Descendants", i.descendants),
                 ("Created", _when(i.created)), ("Description", i.description or "-")]))


@app.command("dumpxml")
def dumpxml(ctx: typer.Context, vm: VM, name: SnapName = None, current: Current = False,
            host: HostOpt = None) -> None:
    """`virsh snapshot-dumpxml`."""
    which = _which(name, current)
    with _snapshots(ctx) as snaps:
        emit(snaps.dumpxml(vm, which, host))


@app.command("revert")
def revert(ctx: typer.Context, vm: VM, name: SnapName = None, current: Current = False,
           host: HostOpt = None) -> None:
    """`virsh snapshot-revert`: the VM returns to the snapshot's disks (and state)."""
    which = _which(name, current)
    with _snapshots(ctx) as snaps:
        done = snaps.revert(vm, which, host)
    emit(f"Domain '{vm}' reverted to snapshot {done}\n")


@app.command("delete")
def delete(ctx: typer.Context, vm: VM, name: SnapName = None, current: Current = False,
           children: Annotated[bool, typer.Option("--children",
                                                  help="Also delete its descendants.")] = False,
           host: HostOpt = None) -> None:
    """`virsh snapshot-delete` (children are kept and re-parented unless --children)."""
    which = _which(name, current)
    with _snapshots(ctx) as snaps:
        done = snaps.delete(vm, which, children, host)
    emit(f"Domain snapshot {done} deleted\n")
