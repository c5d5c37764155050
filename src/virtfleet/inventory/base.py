"""What every part of the store shares: the engine, the schema upgrade on open, the transaction.

Each concern of the store (topology.py, observations.py, claims.py, vmlocks.py, journal.py,
installs.py, controllers.py, maintenance.py) is a subclass of StoreBase holding only its own
tables' reads and writes; store.Store combines them into the one object callers get. They all
go through `_tx`, so every public method is one transaction, and database failures come out as
StoreError (or Conflict when a constraint says no) with a one-line message, never a SQLAlchemy
traceback.

SQLite: foreign keys on, WAL, a 5 s busy timeout, and writers take the database lock up front
(BEGIN IMMEDIATE), so two processes that write at once queue instead of failing half-way.
PostgreSQL: writers that must not interleave (two applies, say) take an advisory lock that
lasts their transaction (`_pg_lock`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Insert,
    Table,
    create_engine,
    event,
    select,
    text,
)
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError

from virtfleet.errors import Conflict, InvalidInput, NotFound, StoreError
from virtfleet.inventory import fencing
from virtfleet.inventory import tables as t

# alembic and the pydantic fleet-file models are imported only where needed: a CLI whose store
# is already at the newest schema, asking a controller, should not pay for importing them.
HEAD_REVISION = "0013"  # newest file in migrations/versions (a unit test keeps them in step)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BUSY_TIMEOUT_MS = 5000
PG_CONNECT_TIMEOUT_S = 10
CHUNK = 500  # ids per IN (...) list: well under every backend's bind-parameter limit
# pg_advisory_xact_lock keys: one for schema migration, one for inventory writes.
PG_MIGRATE_LOCK = 0x76660001
PG_APPLY_LOCK = 0x76660002
_WRITE_OPTION = "virtfleet_write"

T = TypeVar("T")


def one_line(exc: BaseException) -> str:
    """A database error as one line: the driver's own words, without SQL or URLs."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        raw = str(exc.orig)
    elif isinstance(exc, SQLAlchemyError):
        raw = str(exc).split("\n(Background on this error")[0]
    else:
        raw = str(exc)
    parts = [line.strip() for line in raw.splitlines() if line.strip()]
    msg = "; ".join(parts) or type(exc).__name__
    return msg if len(msg) <= 400 else msg[:397] + "..."


def utc(value: object, field: str) -> datetime:
    """`value` in UTC; InvalidInput naming `field` unless it is a timezone-aware datetime (a
    naive one would be read differently by SQLite and PostgreSQL)."""
    if not isinstance(value, datetime):
        raise InvalidInput(field, "must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(field, "must be a timezone-aware datetime (UTC)")
    return value.astimezone(UTC)


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def unique(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def _on_sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # Take transaction control away from the sqlite3 module: SQLAlchemy's "begin" event below
    # emits BEGIN itself, so DDL is transactional and writers can BEGIN IMMEDIATE.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")  # with WAL: safe, and no fsync per commit
    finally:
        cur.close()


def _on_sqlite_begin(conn: Connection) -> None:
    write = conn.get_execution_options().get(_WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _owner_only(path: Path) -> None:
    """The store holds the controller's API token: a SQLite file we own is made 0600."""
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(OSError):
            if p.stat().st_uid == os.geteuid() and p.stat().st_mode & 0o077:
                p.chmod(0o600)


def _alembic_error() -> type[Exception]:
    from alembic.util.exc import CommandError

    return CommandError


class StoreBase:
    """One database, opened (and upgraded to the newest schema) once; every concern's methods
    run their statements through `_tx` on its engine."""

    # The leases a controller writes under (fencing.py); None: nothing is checked (the CLI,
    # `boot serve`, a lone controller on SQLite).
    _fence: fencing.ShardTokens | None = None

    def __init__(self, url: str) -> None:
        try:
            sa_url = make_url(url)
        except ArgumentError:
            raise StoreError(f"store: {url!r} is not a database URL") from None
        self.url = sa_url.render_as_string(hide_password=True)
        self._backend = sa_url.get_backend_name()
        if self._backend not in ("sqlite", "postgresql"):
            raise StoreError(
                f"store: {self.url}: only sqlite and postgresql databases are supported"
            )
        try:
            self._engine = self._create_engine(sa_url)
        except (ArgumentError, ImportError) as exc:
            raise StoreError(f"store: cannot use {self.url}: {one_line(exc)}") from None
        self._writer = self._engine.execution_options(**{_WRITE_OPTION: True})
        try:
            self._migrate()
        except (SQLAlchemyError, _alembic_error()) as exc:
            self._engine.dispose()
            raise StoreError(f"store: cannot open {self.url}: {one_line(exc)}") from None
        if self._backend == "sqlite" and sa_url.database not in (None, "", ":memory:"):
            _owner_only(Path(sa_url.database))

    def _create_engine(self, sa_url: URL) -> Engine:
        if self._backend == "sqlite":
            engine = create_engine(sa_url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
            event.listen(engine, "connect", _on_sqlite_connect)
            event.listen(engine, "begin", _on_sqlite_begin)
            return engine
        connect_args: dict[str, Any] = {}
        if "connect_timeout" not in sa_url.query:
            connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
        return create_engine(sa_url, connect_args=connect_args, pool_pre_ping=True)

    def _at_head(self) -> bool:
        try:
            with self._engine.connect() as conn:
                rev = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except SQLAlchemyError:
            return False  # a new database: no alembic_version table yet
        return rev == HEAD_REVISION

    def _migrate(self) -> None:
        if self._at_head():
            return
        # Alembic's INFO lines (its plugins, "Context impl", each revision) are its own
        # narration: under a controller's INFO logging a bad URL printed seven of them before
        # the one-line error. Quiet unless someone set alembic's level (its own CLI does).
        quiet = logging.getLogger("alembic")
        if quiet.level == logging.NOTSET:
            quiet.setLevel(logging.WARNING)
        from alembic import command
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
        # One transaction that holds the migration lock for its whole length: a second process
        # opening the same fresh database waits, then finds it at head and does nothing.
        with self._writer.begin() as conn:
            self._pg_lock(conn, PG_MIGRATE_LOCK)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def close(self) -> None:
        self._engine.dispose()

    @property
    def backend(self) -> str:
        """sqlite or postgresql."""
        return self._backend

    def fenced(self, tokens: fencing.ShardTokens) -> Self:
        """This store (same engine) with every write for a hypervisor checked against the
        leases in `tokens`: a controller's own writes. Do not close it: the engine is shared."""
        view = copy.copy(self)
        view._fence = tokens
        return view

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # ----------------------------------------------------------------- transactions

    @contextmanager
    def _tx(self, what: str, *, write: bool) -> Iterator[Connection]:
        """One transaction; `what` names it in the error if the database refuses."""
        engine = self._writer if write else self._engine
        try:
            with engine.begin() as conn:
                yield conn
        except IntegrityError as exc:
            raise Conflict(f"{what}: {one_line(exc)}") from None
        except SQLAlchemyError as exc:
            raise StoreError(f"{what}: {one_line(exc)}") from None

    def _guard(self, conn: Connection, hosts: Iterable[str]) -> None:
        """StaleLease unless this store's leases (if it is fenced) still cover `hosts`."""
        if self._fence is not None:
            fencing.check(conn, self._fence, hosts)

    def _pg_lock(self, conn: Connection, key: int) -> None:
        """On PostgreSQL, hold advisory lock `key` until the transaction ends (SQLite's
        writers already queue: BEGIN IMMEDIATE)."""
        if self._backend == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    def _upsert(self, table: Table, keys: list[str]) -> Insert:
        """INSERT ... ON CONFLICT (keys) DO UPDATE of every other column, in this backend's
        dialect."""
        ins: sqlite_dialect.Insert | pg_dialect.Insert
        if self._backend == "sqlite":
            ins = sqlite_dialect.insert(table)
        else:
            ins = pg_dialect.insert(table)
        cols = {c.name: ins.excluded[c.name] for c in table.columns if c.name not in keys
                and not (c.primary_key and c.name == "id")}
        return ins.on_conflict_do_update(index_elements=keys, set_=cols)

    # ----------------------------------------------------------------- lookups

    @staticmethod
    def _host_ids(conn: Connection, names: Sequence[str]) -> dict[str, int]:
        """name -> id for every named hypervisor; NotFound naming the first one that is not."""
        ids: dict[str, int] = {}
        for chunk in chunks(list(dict.fromkeys(names))):
            stmt = select(t.hypervisors.c.name, t.hypervisors.c.id).where(
                t.hypervisors.c.name.in_(chunk)
            )
            ids.update({n: i for n, i in conn.execute(stmt)})
        for name in names:
            if name not in ids:
                raise NotFound(f"hypervisor {name!r} is not in the inventory")
        return ids

    @staticmethod
    def _check_filters(conn: Connection, *, site: str | None, pod: str | None,
                       host: str | None, group: str | None) -> None:
        """NotFound naming a filter that matches nothing in the inventory."""
        for what, table, value in (("site", t.sites, site), ("pod", t.pods, pod),
                                   ("host", t.hypervisors, host),
                                   ("group", t.host_groups, group)):
            if value is None:
                continue
            if conn.execute(select(table.c.id).where(table.c.name == value)).first() is None:
                raise NotFound(f"{what} {value!r} is not in the inventory")

    @staticmethod
    def _host_conditions(*, site: str | None, pod: str | None, host: str | None,
                         group: str | None) -> list[ColumnElement[bool]]:
        """WHERE conditions on hypervisors joined to their pods and sites."""
        h, hg, g = t.hypervisors, t.hypervisor_groups, t.host_groups
        conds: list[ColumnElement[bool]] = []
        if site is not None:
            conds.append(t.sites.c.name == site)
        if pod is not None:
            conds.append(t.pods.c.name == pod)
        if host is not None:
            conds.append(h.c.name == host)
        if group is not None:
            conds.append(
                select(hg.c.hypervisor_id).join_from(hg, g)
                .where(hg.c.hypervisor_id == h.c.id, g.c.name == group).exists()
            )
        return conds
