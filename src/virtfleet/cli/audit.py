"""`virtfleet audit`: read the audit log; `audit prune --before`: retention. And the CLI's
audit hook: every command that changes something is recorded as it ended, whether it went
through the controller or straight to libvirt (most do), through the same `record` the API's
routes use (fleet/audit.py).

The hook wraps `main` (cli/main.py: `@audited`). After the command, it reads the command line
again (click's own parser, without running anything) for the command's path and parameters,
and records them under the operating-system user who ran it, with the exit code and the
error's message. Commands that only read (listed below) are not recorded and cost nothing
more; any other command is, so a new command is audited unless someone says it only reads.
"""

from __future__ import annotations

import functools
import os
import pwd
import re
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.fields import options_named
from virtfleet.cli.options import Json
from virtfleet.cli.output import emit, emit_json, table, warn
from virtfleet.errors import InvalidInput, StoreError, VirtfleetError

app = typer.Typer(invoke_without_command=True,
                  help="The audit log of writes (API and CLI), and its retention.")

# Commands that change nothing: not recorded. `audit` is the group's own listing (its
# `prune` is a write); every command of `lab` builds or reads the local test lab only.
READS = frozenset({
    "list", "sync", "serve", "events", "audit",
    "host list", "host info", "host sysinfo", "host version", "host check",
    "host cpu-baseline", "vm dominfo", "vm dumpxml", "vm domstats", "template list",
    "template info", "ops list", "snapshot list", "snapshot info", "snapshot dumpxml",
    "plan reference", "plan capacity", "plan headroom", "boot render", "boot serve",
    "boot status", "net list", "net info", "net dumpxml", "net dhcp-leases", "pool list",
    "pool info", "pool check", "vol list", "vol info", "vol download", "vol disks",
    "image info", "image convert", "netcfg render", "user list", "token list", "grant list",
})
READ_GROUPS = frozenset({"lab"})
# Commands that write only with some option: recorded when it is given.
WRITES_WHEN: Mapping[str, Callable[[Mapping[str, Any]], bool]] = {
    "plan place": lambda params: bool(params.get("claim")),
}
# What the first word of a command acts on, as the audit log names targets.
_NOUNS = {"net": "network", "vol": "volume", "ops": "operation", "apply": "inventory",
          "snapshot": "vm"}
_ROOT_OPTIONS = {"--db"}  # the root callback's options that take a value


# ------------------------------------------------------------------ the hook


def _words(argv: list[str]) -> list[str]:
    """argv without the root's options, as far as the command's own words go."""
    words = list(argv)
    while words and words[0].startswith("-"):
        opt = words.pop(0)
        if opt in _ROOT_OPTIONS and words:
            words.pop(0)
    return words


def _maybe_write(words: list[str]) -> bool:
    """False for a command known to only read, told from its leading words alone (without
    building the command tree, so a read pays nothing for the hook)."""
    lead = []
    for word in words:
        if word.startswith("-"):
            break
        lead.append(word)
    if not lead or "--help" in words:
        return False
    if lead[0] in READ_GROUPS or " ".join(lead[:2]) in READS:
        return False
    return lead[0] not in READS or (lead[0] == "audit" and len(lead) > 1)


def _parse(argv: list[str]) -> tuple[str, dict[str, Any], str | None] | None:
    """(command path, its parameters, its first argument) by click's parser, run resiliently
    (no callback, no error); None for something that is not a command."""
    from virtfleet.cli.main import app as root_app

    root = typer.main.get_command(root_app)
    words = _words(argv)
    ctx = root.make_context("virtfleet", [], resilient_parsing=True)
    cmd: Any = root
    path: list[str] = []
    while words and hasattr(cmd, "get_command"):
        sub = cmd.get_command(ctx, words[0])
        if sub is None:
            return None
        path.append(words.pop(0))
        cmd = sub
    if not path or hasattr(cmd, "get_command"):
        return None
    leaf = cmd.make_context(" ".join(path), words, parent=ctx, resilient_parsing=True)
    first = next((leaf.params.get(p.name) for p in cmd.params
                  if p.param_type_name == "argument" and p.name), None)
    return " ".join(path), dict(leaf.params), str(first) if first is not None else None


def _target(path: str, params: Mapping[str, Any], first: str | None) -> str:
    noun = path.split()[0]
    noun = _NOUNS.get(noun, noun)
    if first:
        return f"{noun}:{first}"
    where = [f"{k} {params[k]}" for k in ("host", "pod", "site", "group") if params.get(k)]
    if params.get("all_") or params.get("all"):
        where.append("all")
    return f"{noun}s in {', '.join(where)}" if where else noun


def who() -> str:
    """The operating-system user running this command (sudo's caller noted)."""
    name = pwd.getpwuid(os.geteuid()).pw_name
    sudo = os.environ.get("SUDO_USER")
    return f"{name} (sudo from {sudo})" if sudo and sudo != name else name


def _outcome(code: int) -> str:
    return "ok" if code == 0 else ("denied" if code == 2 else "failed")


def _why(done: SystemExit) -> str:
    cause = done.__context__
    if isinstance(cause, VirtfleetError):
        return cause.message
    if isinstance(cause, KeyboardInterrupt):
        return "interrupted"
    if cause is not None:
        text = getattr(cause, "format_message", None)
        return str(text() if callable(text) else cause)
    return ""


def record_cli(argv: list[str], done: SystemExit) -> None:
    """Put one command on the audit log if it may have changed something."""
    if not _maybe_write(_words(argv)):
        return  # before any import: a warm `list` must not pay for SQLAlchemy
    if isinstance(done.__context__, StoreError):
        return  # the store itself failed: its one-line error says so; a second would not help
    from virtfleet.config import db_url
    from virtfleet.fleet.audit import AuditService, Write
    from virtfleet.inventory.store import Store

    parsed = _parse(argv)
    if parsed is None:
        return
    path, params, first = parsed
    if (path in READS or path.split()[0] in READ_GROUPS
            or (path in WRITES_WHEN and not WRITES_WHEN[path](params))):
        return
    code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    shown = {k: v for k, v in params.items() if v not in (None, False, (), [], "")}
    try:
        with Store(db_url(_root_db(argv))) as store:
            AuditService(store).record(Write(who(), "cli", path, _target(path, params, first),
                                             shown),
                                       result=_outcome(code), status=code, detail=_why(done))
    except VirtfleetError as exc:
        warn(f"could not record this command in the audit log: {exc.message}")


def _root_db(argv: list[str]) -> str | None:
    for i, word in enumerate(argv):
        if word == "--db" and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith("--db="):
            return word.removeprefix("--db=")
        if not word.startswith("-"):
            return None
    return None


def audited(main: Callable[[], None]) -> Callable[[], None]:
    """`main`, with every command that may write recorded as it ended."""
    @functools.wraps(main)
    def run() -> None:
        argv = sys.argv[1:]
        try:
            main()
        except SystemExit as done:
            record_cli(argv, done)
            raise
    return run


# ------------------------------------------------------------------ the commands

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
