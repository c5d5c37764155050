"""How wide `--help` is drawn, and tables that fold a long word rather than cut it.

rich draws typer's help at the terminal's width, or at 80 columns when none of stdin, stdout
and stderr is a terminal (a pipe in a script, CI, `ssh host virtfleet ... --help`), and a
table cell too narrow for a word ends it with "…": option names (`--graphics-password-file`),
defaults and examples (`size=80G[,format=qcow2|raw]...`) came out cut. One rule for typer's
help and the root's (cli/roothelp.py, which must stay byte for byte typer's):

- the width: TERMINAL_WIDTH if set (typer's own setting); else the terminal's, as rich finds
  it (COLUMNS overrides it, as for rich); else, with no terminal at all, NO_TERMINAL_WIDTH;
- a word wider than its column is folded onto the next line, never cut.

Imported only when help is drawn (rich is loaded then anyway).
"""

from __future__ import annotations

import os
from typing import Any

from rich.table import Table
from rich.text import Text

# Wide enough for every command's option table at its widest word, narrow enough to read.
NO_TERMINAL_WIDTH = 120


def help_width() -> int | None:
    """The width to draw help at; None: rich's own (the terminal's, or COLUMNS)."""
    raw = os.environ.get("TERMINAL_WIDTH") or ""
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    if os.environ.get("COLUMNS", "").isdigit() or _terminal():
        return None
    return NO_TERMINAL_WIDTH


def _terminal() -> bool:
    # rich asks stdin, stdout and stderr for a terminal size, in that order
    for fd in (0, 1, 2):
        try:
            os.get_terminal_size(fd)
        except OSError:
            continue
        return True
    return False


class FoldingTable(Table):
    """A rich Table whose cells fold a word too wide for them instead of ending it with '…'."""

    def add_row(self, *renderables: Any, **kwargs: Any) -> None:
        for r in renderables:
            _fold(r)
        super().add_row(*renderables, **kwargs)
        for column in self.columns:  # add_row makes the columns it needs: ellipsis by default
            column.overflow = "fold"


def _fold(renderable: object) -> None:
    """Texts say how they overflow before their column does; typer puts an option's help in a
    Columns of Texts, whose own grid would cut them."""
    if isinstance(renderable, Text) and renderable.overflow is None:
        renderable.overflow = "fold"
    for inner in getattr(renderable, "renderables", ()):
        _fold(inner)


def fit_typer_help() -> None:
    """Make typer's help (typer/rich_utils.py, read when it draws) follow the rule above."""
    from typer import rich_utils

    rich_utils.MAX_WIDTH = help_width()
    rich_utils.Table = FoldingTable  # type: ignore[attr-defined]
