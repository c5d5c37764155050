"""A progress bar on stderr for long fleet operations, silent when stderr is not a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from virtfleet.fleet.scope import Step


@contextmanager
def fleet_progress(total: int, what: str) -> Iterator[Callable[[Any], None]]:
    """Yield a callback to call once per finished host."""
    if total < 2 or not sys.stderr.isatty():
        yield lambda _result: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(f"[bold]{what}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True, console=_stderr_console()) as bar:
        task = bar.add_task(what, total=total)
        yield lambda _result: bar.advance(task)


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


@contextmanager
def step_progress() -> Iterator[Callable[[Step], None]]:
    """Yield a callback for a service's progress, which reports steps (`what`, `done` of
    `total` hosts): a bar per step over more than one host, on a terminal only."""
    if not sys.stderr.isatty():
        yield lambda _step: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress("[bold]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), transient=True, console=_stderr_console()) as bar:
        tasks: dict[str, Any] = {}

        def tick(step: Step) -> None:
            if step.total < 2:
                return
            if step.what not in tasks:
                tasks[step.what] = bar.add_task(step.what, total=step.total)
            bar.update(tasks[step.what], completed=step.done)
        yield tick


@contextmanager
def percent_progress(what: str) -> Iterator[Callable[[float], None]]:
    """Yield a callback taking a percentage (a tool's own figure): a bar on a terminal."""
    if not sys.stderr.isatty():
        yield lambda _pct: None
        return
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeElapsedColumn

    with Progress(f"[bold]{what}", BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                  transient=True, console=_stderr_console()) as bar:
        task = bar.add_task(what, total=100.0)
        yield lambda pct: bar.update(task, completed=pct)
