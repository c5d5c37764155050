"""What `virtfleet boot status` prints: every network install `boot serve` knows.

Kept apart from cli/boot.py and free of typer, so the command's quick path (cli/quick.py) runs
it without loading typer; cli/boot.py's `status` calls the same function.
"""

from __future__ import annotations

import sqlite3

from virtfleet.cli.context import AppContext
from virtfleet.cli.output import emit, emit_json, table
from virtfleet.inventory.installs_sqlite import installs_from_sqlite
from virtfleet.inventory.records import InstallRecord


def installs(actx: AppContext) -> list[InstallRecord]:
    """The store's installs, read with sqlite3 where it can be (no SQLAlchemy to import)."""
    try:
        return installs_from_sqlite(actx.db_url)
    except sqlite3.Error:
        return actx.store().installs()


def show(actx: AppContext, *, json: bool = False) -> int:
    """Print the installs as a table or JSON; the exit code (always 0)."""
    rows = installs(actx)
    if json:  # JSON escapes control characters itself
        emit_json([r.as_json() for r in rows])
        return 0
    from virtfleet.boot.status import COLUMNS, status_row

    emit(table(list(COLUMNS), [status_row(r) for r in rows]))
    refused, limited = sum(r.refused for r in rows), sum(r.limited for r in rows)
    if refused or limited:
        emit(f"Requests naming these hosts: {refused} refused, {limited} answered 429 (too "
             "many refusals); boot serve's log has the clients\n")
    return 0
