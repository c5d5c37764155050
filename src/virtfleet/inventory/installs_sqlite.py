"""The network-install rows read with the standard library: `boot status` without SQLAlchemy.

Importing SQLAlchemy (and opening the Store, which checks its migrations) costs several times
what the whole command otherwise takes, so on a SQLite store at the newest migration the CLI
reads boot_installs with sqlite3 (inventory/sqlite_read.py). The
columns are InstallRecord's fields, which are those InstallStore.installs() selects, in the
same order (site, pod, host).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from virtfleet.inventory.records import InstallRecord
from virtfleet.inventory.sqlite_read import reading, utc

_COLUMNS = tuple(f.name for f in fields(InstallRecord))
_TIMES = frozenset(c for c in _COLUMNS if c.endswith("_at"))


def installs_from_sqlite(db_url: str) -> list[InstallRecord]:
    """Every install of a SQLite store, as Store.installs() returns them.

    Raises sqlite3.Error when the URL is not a SQLite file, the file is missing, or its schema
    is not the newest (sqlite_read.reading); callers then ask the Store.
    """
    with reading(db_url) as conn:
        rows = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM boot_installs "
                            "ORDER BY site, pod, host").fetchall()
    return [InstallRecord(**{c: _value(c, v) for c, v in zip(_COLUMNS, row, strict=True)})
            for row in rows]


def _value(column: str, value: object) -> Any:  # each column to its field's type
    if value is None:
        return None
    if column in _TIMES:
        # stored as naive UTC text, as tables.UTCDateTime writes it
        return utc(str(value))
    if column == "check_ok":
        return bool(value)
    return value
