"""Reading a SQLite store with the standard library: the CLI's quick paths.

Importing SQLAlchemy and opening the Store (which checks its migrations) costs more than a
warm `list` or a `boot status` takes altogether, so those read a SQLite store with sqlite3,
read-only, when it is at the newest migration. Anything else (PostgreSQL, a missing file, an
older schema) raises sqlite3.Error, and the caller asks the Store, which creates and migrates.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path

from virtfleet.inventory.registration import SQLITE_PREFIX

MIGRATIONS = Path(__file__).parent / "migrations" / "versions"


def newest_migration() -> str:
    """The revision a migrated store is at: the number of the newest migration file."""
    return max(p.name.split("_", 1)[0] for p in MIGRATIONS.glob("[0-9]*_*.py"))


@contextmanager
def reading(db_url: str) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the SQLite store at `db_url`, at the newest migration."""
    if not db_url.startswith(SQLITE_PREFIX):
        raise sqlite3.Error(f"{db_url!r} is not a SQLite store")
    path = db_url.removeprefix(SQLITE_PREFIX)
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as conn:
        rev = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        if rev is None or rev[0] != newest_migration():
            raise sqlite3.Error(f"{path}: not at migration {newest_migration()}")
        yield conn


def utc(text: str) -> datetime:
    """Stored as naive UTC text, as tables.UTCDateTime writes it."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
