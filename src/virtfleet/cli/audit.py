"""`virtfleet audit`: read the audit log; `audit prune --before`: retention.

The CLI's own audit hook (every command that may write, recorded as it ended) is
cli/audithook.py: it wraps `main`, which must not import this command module (or typer) to
answer a `list` or a `--help`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.fields import options_named
from virtfleet.cli.options import Json
from virtfleet.cli.output import emit, emit_json, table
from virtfleet.errors import InvalidInput

app = typer.Typer(invoke_without_command=True,
                  help="The audit log of writes (API and CLI), and its retention.")

_RELATIVE = re.compile(r"(\d+)([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def when(text: str, field: str) -> datetime:
    """An ISO date or time (UTC unless it says otherwise), or a time ago: 30m, 12h, 7d, 2w."""
    m = _RELATIVE.fullmatch(text)
    if m is not None:
        return datetime.now(UTC) - timedelta(**{_UNITS[m[2]]: int(m[1])})
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(field, f"{text!r} is not a date (2026-12-01, 2026-12-01T08:00) "
                           "or a time ago (30m, 12h, 7d, 2w)") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@app.callback()
def audit(ctx: typer.Context,
          since: Annotated[str | None, typer.Option(
              "--since", help="From this date or time (UTC), or this long ago: 12h, 7d.")]
          = None,
          user: Annotated[str | None, typer.Option("--user", help="Only this actor's.")]
          = None,
          target: Annotated[str | None, typer.Option(
              "--target", help="Only on this target: vm:web01, or just its name.")] = None,
          limit: Annotated[int, typer.Option("--limit", min=1, max=100_000,
                                             help="The newest this many.")] = 1000,
          json: Json = False) -> None:
    """Who changed what, when, through what, and how it ended (oldest first)."""
    if ctx.invoked_subcommand is not None:
        return
    from virtfleet.fleet.audit import AuditQuery, AuditService

    with options_named({"since": "--since", "limit": "--limit"}):
        start = when(since, "since") if since is not None else None
        entries = AuditService(app_context(ctx).store()).entries(
            AuditQuery(since=start, actor=user, target=target, limit=limit))
    if json:
        emit_json([e.as_json() for e in entries])
        return
    emit(table(["Time (UTC)", "Actor", "Via", "Action", "Target", "Result", "Detail"],
               [(f"{e.at:%Y-%m-%d %H:%M:%S}", e.actor, e.via, e.action, e.target,
                 f"{e.result} ({e.status})", e.detail or "-") for e in entries]))


@app.command("prune")
def prune(ctx: typer.Context, before: Annotated[str, typer.Option(
        "--before", help="Remove entries older than this date (UTC), or than this long ago: "
        "365d.")], json: Json = False) -> None:
    """Retention: remove entries older than --before. Only for whoever may write the store
    (an admin); the prune itself is recorded."""
    from virtfleet.fleet.audit import AuditService, PruneRequest

    with options_named({"before": "--before"}):
        done = AuditService(app_context(ctx).store()).prune(
            PruneRequest(when(before, "before")))
    if json:
        emit_json(done.as_json())
    else:
        emit(f"Removed {done.removed} audit entries older than {done.before:%Y-%m-%d %H:%M} "
             "UTC\n")
