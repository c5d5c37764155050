"""`virtfleet ops ...`: the journal of multi-step operations (create, clone, template), through
the operations service (fleet/operations.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.fields import options_named
from virtfleet.cli.options import Json
from virtfleet.cli.output import emit, emit_json, table
from virtfleet.errors import InvalidInput

if TYPE_CHECKING:
    from virtfleet.fleet.operations import OperationService

app = typer.Typer(no_args_is_help=True,
                  help="Operations in progress or interrupted, and cleaning up after them.")


@contextmanager
def _operations(ctx: typer.Context) -> Iterator[OperationService]:
    from virtfleet.fleet.operations import OperationService

    with OperationService(app_context(ctx).store()) as service, options_named({"id": "ID"}):
        yield service


@app.command("list")
def list_ops(ctx: typer.Context, json: Json = False) -> None:
    """Running operations, and interrupted ones (their process died) with what they made."""
    with _operations(ctx) as ops:
        found = ops.operations()
    if json:
        emit_json([o.as_json() for o in found])
        return
    emit(table(["Id", "Kind", "Target", "State", "Started", "Made"],
               [(o.record.id[:12], o.record.kind, o.record.target, o.state,
                 f"{o.record.started_at:%Y-%m-%d %H:%M:%S}",
                 "; ".join(m.describe() for m in o.record.steps) or "-") for o in found]))


@app.command("cleanup")
def cleanup(
    ctx: typer.Context,
    op_id: Annotated[str | None, typer.Argument(metavar="ID", help="Operation id (or a unique "
                                                "prefix of it).", show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every interrupted operation.")] = False,
) -> None:
    """Undo what interrupted operations made (claims, volumes, domains), newest step first;
    an interrupted migration is settled where its VM runs."""
    from virtfleet.fleet.operations import CleanupRequest

    if (op_id is None) == (not all_):
        raise InvalidInput("ID", "name one operation, or use --all")
    with _operations(ctx) as ops:
        cleaned = ops.clean_up(CleanupRequest(op_id))
    for c in cleaned:
        head = f"{c.record.id[:12]} {c.record.kind} {c.record.target}: "
        if c.left:
            emit(head + "could not undo "
                 + "; ".join(f"{m.describe()} ({why})" for m, why in c.left) + "\n")
        else:
            emit(head + "cleaned up ("
                 + (", ".join(m.describe() for m in reversed(c.record.steps))
                    or "nothing made") + ")\n")
    if not all(c.ok for c in cleaned):
        raise typer.Exit(1)
