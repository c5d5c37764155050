"""The controller registration read with the standard library only: the CLI's warm path.

Importing SQLAlchemy costs a third of a second, more than a whole warm `list` otherwise takes,
so a CLI on a SQLite store reads the `controller` row with sqlite3 and never imports it. The
columns are those of tables.ControllerRow; Store.controller() (inventory/controllers.py) reads the
same row through SQLAlchemy, for PostgreSQL and for a store not yet migrated.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

from virtfleet.inventory.records import ControllerRecord

SQLITE_PREFIX = "sqlite:///"


def registration_from_sqlite(db_url: str) -> ControllerRecord | None:
    """The registered controller of a SQLite store, or None when none is registered.

    Raises sqlite3.Error when the URL is not a SQLite file, or the file is missing or not
    migrated; callers then ask the Store, which knows how to create and migrate it.
    """
    if not db_url.startswith(SQLITE_PREFIX):
        raise sqlite3.Error(f"{db_url!r} is not a SQLite store")
    path = db_url.removeprefix(SQLITE_PREFIX)
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
        row = conn.execute("SELECT url, token, pid, hostname, started_at, heartbeat_at "
                           "FROM controller WHERE id = 1").fetchone()
    if row is None:
        return None
    return ControllerRecord(url=row[0], token=row[1], pid=int(row[2]), hostname=row[3],
                            started_at=_utc(row[4]), heartbeat_at=_utc(row[5]))


def _utc(text: str) -> datetime:
    """Stored as naive UTC text, as tables.UTCDateTime writes it."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
