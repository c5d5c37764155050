"""The typer root of `virtfleet`: the --db option, and each command loaded when it is named.

The root lists every command of cli/commands.py but imports a command's module only when that
command is looked up (to run it, or for its own --help), so `virtfleet vm start` never imports
the boot server or the planner. Each command is built exactly as an eagerly assembled root
would build it (commands.mount on a throwaway Typer, then typer's own conversion), so options,
help and errors are typer's as before.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator, MutableMapping
from typing import Annotated, Any

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

from virtfleet.cli.commands import COMMANDS, DB_HELP, ROOT_HELP, mount
from virtfleet.cli.context import AppContext


def _build(name: str) -> Any:
    """The click command for `name`, as typer converts a root with it registered."""
    holder = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    mount(name, holder)
    return typer.main.get_group(holder).commands[name]


class _LazyCommands(MutableMapping[str, Any]):
    """The root's commands: every name of the table, each built on first lookup; commands
    registered on the root itself (tests add some) come after and win on a clash."""

    def __init__(self, registered: MutableMapping[str, Any]) -> None:
        self._loaded: dict[str, Any] = dict(registered)

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded:
            if name not in COMMANDS:
                raise KeyError(name)
            self._loaded[name] = _build(name)
        return self._loaded[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        yield from COMMANDS
        yield from (n for n in self._loaded if n not in COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS) + sum(1 for n in self._loaded if n not in COMMANDS)

    def __contains__(self, name: object) -> bool:
        return name in COMMANDS or name in self._loaded

    def loaded(self, name: str) -> Any | None:
        return self._loaded.get(name)


class LazyGroup(TyperGroup):
    """A TyperGroup whose commands are imported when looked up. Its own help lists them from
    the table's one-line helps, so `virtfleet --help` imports none of them."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _LazyCommands(self.commands)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        lazy = self.commands
        assert isinstance(lazy, _LazyCommands)
        shown = copy.copy(self)
        shown.commands = {n: lazy.loaded(n) or TyperCommand(n, help=COMMANDS[n].help)
                          for n in lazy}
        TyperGroup.format_help(shown, ctx, formatter)


def _fitting(format_help: Any) -> Any:
    def drawn(self: Any, ctx: Any, formatter: Any) -> None:
        from virtfleet.cli.helpwidth import fit_typer_help

        fit_typer_help()
        format_help(self, ctx, formatter)

    return drawn


# Every command's help, each group's and the root's: at a width that cuts nothing
# (cli/helpwidth.py). typer builds its commands from these classes; rich is loaded only when
# help is drawn, so the rule is applied then.
for _cls in (TyperCommand, TyperGroup):
    _cls.format_help = _fitting(_cls.format_help)  # type: ignore[method-assign]


app = typer.Typer(
    cls=LazyGroup,
    name="virtfleet",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help=ROOT_HELP,
)


@app.callback()
def root(
    ctx: typer.Context,
    db: Annotated[str | None, typer.Option("--db", help=DB_HELP, show_default=False)] = None,
) -> None:
    ctx.obj = AppContext(db=db)
    ctx.call_on_close(ctx.obj.close)


def _usage_errors() -> tuple[type[Exception], ...]:
    # typer from 0.2x carries its own click, whose errors are TyperExceptions; older releases
    # raise the click package's.
    own = getattr(typer, "TyperException", None)
    if own is not None:
        return (own,)
    import click

    return (click.ClickException,)


def _option_rule(exc: Exception) -> str | None:
    """A value typer's pydantic refused (`--vms abc`), as `--vms: must be a whole number`
    rather than pydantic's "Invalid value for '--vms': Input should be a valid integer, ..."."""
    errors = getattr(exc.__cause__, "errors", None)
    param = getattr(exc, "param", None)
    if not callable(errors) or param is None:
        return None
    found = errors()
    if not found:
        return None
    from virtfleet.pydantic_errors import rule

    opts = [o for o in getattr(param, "opts", ()) if o.startswith("-")]
    name = opts[0] if opts else str(getattr(param, "human_readable_name", param.name)).upper()
    return f"{name}: {rule(found[0])}"


# The last bad option or argument's message, for the audit hook (cli/audithook.py)
usage_error = ""


def run(argv: list[str]) -> int:
    """Run `virtfleet ARGV` through typer; the exit code. Bad options or arguments are one line
    on stderr and exit 2, like click's own; an abort is a KeyboardInterrupt to the caller."""
    global usage_error
    # standalone_mode=False: errors come back here, so every one is a single line on stderr
    # (click's own usage errors included) with the README's exit code; never a traceback.
    try:
        code = app(args=argv, standalone_mode=False)
    except _usage_errors() as exc:
        message = usage_error = (_option_rule(exc)
                                 or str(getattr(exc, "format_message", exc.__str__)()))
        if message:  # empty when a bare group printed its help instead
            ctx = getattr(exc, "ctx", None)
            where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            sys.stderr.write(f"virtfleet: error: {message}{where}\n")
        return int(getattr(exc, "exit_code", 2))
    except typer.Abort:
        raise KeyboardInterrupt from None
    return code if isinstance(code, int) else 0
