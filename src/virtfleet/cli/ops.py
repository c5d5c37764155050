"""`virtfleet ops ...`: the journal of multi-step operations (create, clone, template)."""

from __future__ import annotations

from typing import Annotated

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.options import Json
from virtfleet.cli.output import emit, emit_json, table
from virtfleet.errors import InvalidInput, NotFound

app = typer.Typer(no_args_is_help=True,
                  help="Operations in progress or interrupted, and cleaning up after them.")


@app.command("list")
def list_ops(ctx: typer.Context, json: Json = False) -> None:
    """Running operations, and interrupted ones (their process died) with what they made."""
    from virtfleet.provision.journal import interrupted

    rows = []
    for rec in app_context(ctx).store().operations():
        state = "interrupted" if rec.state == "running" and interrupted(rec) else rec.state
        rows.append((rec, state))
    if json:
        emit_json([{"id": r.id, "kind": r.kind, "target": r.target, "state": s,
                    "hostname": r.hostname, "pid": r.pid, "started_at": r.started_at.isoformat(),
                    "made": [m.describe() for m in r.steps], "error": r.error}
                   for r, s in rows])
        return
    emit(table(["Id", "Kind", "Target", "State", "Started", "Made"],
               [(r.id[:12], r.kind, r.target, s, f"{r.started_at:%Y-%m-%d %H:%M:%S}",
                 "; ".join(m.describe() for m in r.steps) or "-") for r, s in rows]))


@app.command("cleanup")
def cleanup(
    ctx: typer.Context,
    op_id: Annotated[str | None, typer.Argument(metavar="ID", help="Operation id (or a unique "
                                                "prefix of it).", show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every interrupted operation.")] = False,
) -> None:
    """Undo what interrupted operations made (claims, volumes, domains), newest step first;
    an interrupted migration is settled where its VM runs."""
    from virtfleet.provision.journal import clean_up, interrupted
    from virtfleet.virt.fanout import ConnectionPool

    if (op_id is None) == (not all_):
        raise InvalidInput("ID", "name one operation, or use --all")
    store = app_context(ctx).store()
    ops = store.operations()
    if op_id is not None:
        ops = [o for o in ops if o.id.startswith(op_id.lower())]
        if not ops:
            raise NotFound(f"no operation {op_id!r} in the journal (see 'virtfleet ops list')")
        if len(ops) > 1:
            raise InvalidInput("ID", f"{op_id!r} matches {len(ops)} operations; give more of it")
    else:
        ops = [o for o in ops if interrupted(o)]
    pool = ConnectionPool()
    failed = False
    try:
        for rec in ops:
            left = clean_up(store, pool, rec)
            if left:
                failed = True
                emit(f"{rec.id[:12]} {rec.kind} {rec.target}: could not undo "
                     + "; ".join(f"{m.describe()} ({why})" for m, why in left) + "\n")
            else:
                emit(f"{rec.id[:12]} {rec.kind} {rec.target}: cleaned up ("
                     + (", ".join(m.describe() for m in reversed(rec.steps)) or "nothing made")
                     + ")\n")
    finally:
        pool.close()
    if failed:
        raise typer.Exit(1)
