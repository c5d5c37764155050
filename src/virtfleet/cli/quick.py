"""Commands answered before typer is loaded: the root's help, `list` and `boot status`.

Loading typer (and the pydantic it converts options with) costs more than a warm `list`
answered by a running controller takes altogether, so the forms scripts and operators run most
are recognised here first and run the same function their typer command runs. Anything else
(an option these tables do not know, `--help` of a command, a value that looks like an option,
an option given twice, `--`) goes to typer, which answers or words the error exactly as before.

tests/unit/test_cli_startup.py checks each table against the typer command it stands for
(option names, flags and the function's parameters), so the two cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import import_module

from virtfleet.cli.context import AppContext


@dataclass(frozen=True)
class Quick:
    """One command's options (each at most once; names as on the command line) and the
    `module:function` its typer command calls: function(AppContext, **options) -> exit code."""

    flags: frozenset[str]
    values: frozenset[str]
    run: str

    def parse(self, args: Sequence[str]) -> dict[str, str | bool] | None:
        """The options as the function's keyword arguments, or None to leave it to typer."""
        got: dict[str, str | bool] = {}
        rest = list(args)
        while rest:
            arg = rest.pop(0)
            name, eq, value = arg.partition("=")
            key = name.removeprefix("--").replace("-", "_")
            if key in got:
                return None
            if name in self.flags and not eq:
                got[key] = True
            elif name in self.values and (eq or rest):
                value = value if eq else rest.pop(0)
                if value.startswith("-"):
                    return None
                got[key] = value
            else:
                return None
        return got

    def function(self) -> Callable[..., int]:
        module, func = self.run.split(":")
        found: Callable[..., int] = getattr(import_module(module), func)
        return found


QUICK: dict[tuple[str, ...], Quick] = {
    ("list",): Quick(frozenset({"--live", "--cached", "--json"}),
                     frozenset({"--site", "--pod", "--host", "--group", "--state"}),
                     "virtfleet.cli.fleetlist:show"),
    ("boot", "status"): Quick(frozenset({"--json"}), frozenset(),
                              "virtfleet.cli.bootstatus:show"),
}


def _root_options(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """(--db's value if argv starts with it, the arguments after it)."""
    rest = list(argv)
    if rest and rest[0] == "--db" and len(rest) > 1 and not rest[1].startswith("-"):
        return rest[1], rest[2:]
    if rest and rest[0].startswith("--db="):
        return rest[0].removeprefix("--db="), rest[1:]
    return None, rest


def _rich_help() -> bool:
    # typer draws help with rich unless TYPER_USE_RICH says no; then its plain help is typer's
    raw = os.environ.get("TYPER_USE_RICH")
    return raw is None or raw.strip().lower() not in ("0", "false", "no", "off", "n", "f")


def run(argv: Sequence[str]) -> int | None:
    """Answer argv if it is one of the quick forms: the exit code; None when it is not."""
    db, rest = _root_options(argv)
    if not argv or rest == ["--help"]:
        if not _rich_help():
            return None
        from virtfleet.cli.roothelp import print_root_help

        print_root_help()
        return 0 if argv else 2  # no arguments at all: help, with click's usage-error code
    for path, quick in QUICK.items():
        if tuple(rest[:len(path)]) != path:
            continue
        options = quick.parse(rest[len(path):])
        if options is None:
            return None
        actx = AppContext(db=db)
        try:
            return quick.function()(actx, **options)
        finally:
            actx.close()
    return None
