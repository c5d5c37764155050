"""The CLI's audit hook: every command that changes something is recorded as it ended, whether
it went through the controller or straight to libvirt (most do), through the same `record` the
API's routes use (fleet/audit.py).

The hook wraps `main` (cli/main.py: `@audited`), so it covers the quick paths (cli/quick.py)
and the typer root (cli/app.py) alike. After the command, it reads the command line again
(click's own parser on the lazy root, without running anything) for the command's path and
parameters, and records them under the operating-system user who ran it, with the exit code
and the error's message. Commands that only read (listed below) are not recorded and cost
nothing more: this module imports neither typer nor the store until it knows a command may
write, so a warm `list` or a `--help` still loads neither. Any other command is recorded, so a
new command is audited unless someone says it only reads.
"""

from __future__ import annotations

import functools
import os
import pwd
import sys
from collections.abc import Callable, Mapping
from typing import Any

from virtfleet.errors import StoreError, VirtfleetError

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
    "ha power": lambda params: bool(params.get("on")),
}
# What the first word of a command acts on, as the audit log names targets.
_NOUNS = {"net": "network", "vol": "volume", "ops": "operation", "apply": "inventory",
          "snapshot": "vm"}
_ROOT_OPTIONS = {"--db"}  # the root callback's options that take a value


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
    import typer.main

    from virtfleet.cli.app import app as root_app

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
    # A bad option or argument: the typer root (cli/app.py) printed it and returned 2
    root = sys.modules.get("virtfleet.cli.app")
    return str(getattr(root, "usage_error", ""))


def record_cli(argv: list[str], done: SystemExit) -> None:
    """Put one command on the audit log if it may have changed something."""
    if not _maybe_write(_words(argv)):
        return  # before any import: a warm `list` must not pay for SQLAlchemy
    if isinstance(done.__context__, StoreError):
        return  # the store itself failed: its one-line error says so; a second would not help
    from virtfleet.cli.output import warn
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
