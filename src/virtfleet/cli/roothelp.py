"""`virtfleet --help` drawn from the command table (cli/commands.py), without typer.

typer's own help would first import typer and its rich help module (Markdown and all), which
takes most of a second's fifth; this draws the same panels with rich alone, in typer's layout
and styles (typer/rich_utils.py), so the root's help looks like every other command's.
tests/unit/test_cli_startup.py compares the two outputs byte for byte, plain and in colour.
"""

from __future__ import annotations

import inspect
import os
import sys

from rich.align import Align
from rich.columns import Columns
from rich.console import Console, Group
from rich.highlighter import RegexHighlighter
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.theme import Theme

from virtfleet.cli.commands import COMMANDS, DB_HELP, ROOT_HELP
from virtfleet.cli.helpwidth import FoldingTable, help_width


class _Options(RegexHighlighter):
    highlights = [
        r"(^|\W)(?P<switch>\-\w+)(?![a-zA-Z0-9])",
        r"(^|\W)(?P<option>\-\-[\w\-]+)(?![a-zA-Z0-9])",
        r"(?P<types>\<[^\>]+\>)",
        r"(?P<usage>Usage: )",
    ]


class _Negative(RegexHighlighter):
    highlights = [
        r"(^|\W)(?P<negative_switch>\-\w+)(?![a-zA-Z0-9])",
        r"(^|\W)(?P<negative_option>\-\-[\w\-]+)(?![a-zA-Z0-9])",
    ]


class _Types(RegexHighlighter):
    highlights = [
        r"^(?P<types_sep>(\[|<))",
        r"(?P<types_sep>\|)",
        r"(?P<types_sep>(\]|>))(\.\.\.)?$",
    ]


_options, _negative, _types = _Options(), _Negative(), _Types()
_THEME = {"option": "bold cyan", "switch": "bold green", "negative_option": "bold magenta",
          "negative_switch": "bold red", "types": "bold yellow", "types_sep": "dim",
          "usage": "yellow"}


def program_name() -> str:
    """The command as click names it in usage lines: the script's name, or `python -m pkg`."""
    main = sys.modules["__main__"]
    path = sys.argv[0]
    package = getattr(main, "__package__", None)
    if package in (None, ""):
        return os.path.basename(path)
    name = os.path.splitext(os.path.basename(path))[0]
    module = package if name == "__main__" else f"{package}.{name}"
    return f"python -m {module.lstrip('.')}"


def _console() -> Console:
    # typer's settings, from the same variables
    force = True if (os.getenv("GITHUB_ACTIONS") or os.getenv("FORCE_COLOR")
                     or os.getenv("PY_COLORS")) else None
    if os.getenv("_TYPER_FORCE_DISABLE_TERMINAL"):
        force = False
    return Console(theme=Theme(_THEME), highlighter=_options, color_system="auto",
                   force_terminal=force, width=help_width())


def _text(markup: str) -> Text:
    return _options(Text.from_markup(markup, style=""))


def _panel(title: str, table: Table) -> Panel:
    return Panel(table, border_style="dim", title=title, title_align="left")


def _table(*, highlight: bool) -> Table:
    return FoldingTable(highlight=highlight, show_header=False, expand=True, box=None,
                 show_lines=False, leading=0, border_style=None, row_styles=None,
                 pad_edge=False, padding=(0, 1))


def print_root_help() -> None:
    """What `virtfleet --help` prints, on stdout."""
    console = _console()
    console.print(Padding(_options(f"Usage: {program_name()} [OPTIONS] COMMAND [ARGS]..."), 1),
                  style="bold")
    console.print(Padding(Align(Group(_text(ROOT_HELP)), pad=False), (0, 1, 1, 1)))
    options = _table(highlight=True)
    for opt, kind, help_text in (("--db", "<str>", DB_HELP),
                                 ("--help", "<bool>", "Show this message and exit.")):
        options.add_row(_options(opt), _options(""), _negative(""), _negative(""),
                        _types(Text(kind, style="bold yellow", overflow="fold")),
                        Columns([_text(help_text)]))
    console.print(_panel("Options", options))
    commands = _table(highlight=False)
    commands.add_column(style="bold cyan", no_wrap=True, width=max(map(len, COMMANDS)))
    commands.add_column("Description", justify="left", no_wrap=False, ratio=10)
    for name, entry in COMMANDS.items():
        first = inspect.cleandoc(entry.help).split("\n\n")[0]
        commands.add_row(Text(name), _text(first.strip()))
    console.print(_panel("Commands", commands))
    sys.stdout.write("\n")  # click's echo of the (empty) plain-text help after typer's panels
