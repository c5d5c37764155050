"""The network-install rows read with the standard library: `boot status` without SQLAlchemy.

Importing SQLAlchemy (and opening the Store, which checks its migrations) costs several times
what the whole command otherwise takes, so on a SQLite store at the newest migration the CLI
reads boot_installs with sqlite3, as inventory/registration.py reads the controller row. The
columns are InstallRecord's fields, which are those InstallStore.installs() selects, in the
same order (site, pod, host).
"""

from __future__ import annotations

import sqlite3
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from virtfleet.inventory.records import InstallRecord
from virtfleet.inventory.registration import SQLITE_PREFIX

MIGRATIONS = Path(__file__).parent / "migrations" / "versions"
_COLUMNS = tuple(f.name for f in fields(InstallRecord))
_TIMES = frozenset(c for c in _COLUMNS if c.endswith("_at"))


def newest_migration() -> str:
    """The revision a migrated store is at: the number of the newest migration file."""
    return max(p.name.split("_", 1)[0] for p in MIGRATIONS.glob("[0-9]*_*.py"))


def installs_from_sqlite(db_url: str) -> list[InstallRecord]:
    """Every install of a SQLite store, as Store.installs() returns them.

    Raises sqlite3.Error when the URL is not a SQLite file, the file is missing, or its schema
    is not the newest; callers then ask the Store, which creates and migrates it.
    """
    if not db_url.startswith(SQLITE_PREFIX):
        raise sqlite3.Error(f"{db_url!r} is not a SQLite store")
    path = db_url.removeprefix(SQLITE_PREFIX)
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
        rev = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        if rev is None or rev[0] != newest_migration():
            raise sqlite3.Error(f"{path}: not at migration {newest_migration()}")
        rows = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM boot_installs "
                            "ORDER BY site, pod, host").fetchall()
    return [InstallRecord(**{c: _value(c, v) for c, v in zip(_COLUMNS, row, strict=True)})
            for row in rows]


def _value(column: str, value: object) -> Any:  # each column to its field's type
    if value is None:
        return None
    if column in _TIMES:
        # stored as naive UTC text, as tables.UTCDateTime writes it
        return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)
    if column == "check_ok":
        return bool(value)
    return value
