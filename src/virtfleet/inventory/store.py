"""The inventory store: desired state (the fleet file) and observed state (what libvirt reported).

SQLite by default, PostgreSQL by URL. Opening a Store upgrades its database to the newest schema
(alembic migrations shipped in this package, run in code; no alembic.ini). Every public method is
one transaction; database failures come out as StoreError (or Conflict when a constraint says
no), with a one-line message, never a SQLAlchemy traceback.

Reads and writes go through Core statements on the tables in tables.py, in bulk: a sync of 1,500
hypervisors is a handful of statements, and fleet_vms is one query whatever the fleet's size.

SQLite: foreign keys on, WAL, a 5 s busy timeout, and writers take the database lock up front
(BEGIN IMMEDIATE), so two processes that write at once queue instead of failing half-way.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Insert,
    Select,
    Table,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError

from virtfleet.errors import Busy, Conflict, InvalidInput, NotFound, StoreError
from virtfleet.inventory import tables as t
from virtfleet.inventory.controllers import ControllerRegistry
from virtfleet.inventory.ha import HAStore
from virtfleet.inventory.installs import InstallStore
from virtfleet.inventory.maintenance import MaintenanceStore
from virtfleet.inventory.records import (
    ApplyPlan,
    DomainRecord,
    FleetVM,
    HostRecord,
    HostStatus,
    Made,
    OperationRecord,
    VMLock,
)
from virtfleet.validate import check_name

if TYPE_CHECKING:
    from virtfleet.inventory.fleetfile import Fleet, Hypervisor, PodStorage

# alembic and the pydantic fleet-file models are imported only where needed: a CLI whose store
# is already at the newest schema, asking a controller, should not pay for importing them.
HEAD_REVISION = "0008"  # newest file in migrations/versions (a unit test keeps them in step)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BUSY_TIMEOUT_MS = 5000
PG_CONNECT_TIMEOUT_S = 10
_CHUNK = 500  # ids per IN (...) list: well under every backend's bind-parameter limit
# pg_advisory_xact_lock keys: one for schema migration, one for inventory writes.
_PG_MIGRATE_LOCK = 0x76660001
_PG_APPLY_LOCK = 0x76660002
_WRITE_OPTION = "virtfleet_write"

T = TypeVar("T")


# --------------------------------------------------------------------------- helpers


def _one_line(exc: BaseException) -> str:
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


def _utc(value: object, field: str) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidInput(field, "must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(field, "must be a timezone-aware datetime (UTC)")
    return value.astimezone(UTC)


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def _list(names: Sequence[str]) -> str:
    return "[" + ", ".join(names) + "]"


def _fmt_storage(st: PodStorage | None) -> str:
    if st is None:
        return "none"
    out = f"{st.type} {st.source or '-'} at {st.target}"
    return out + (f" pool {st.pool}" if st.pool else "")


def _storage_cols(st: PodStorage | None) -> dict[str, str | None]:
    if st is None:
        return {"storage_type": None, "storage_source": None, "storage_target": None,
                "storage_pool": None}
    return {"storage_type": st.type, "storage_source": st.source, "storage_target": st.target,
            "storage_pool": st.pool}


def _domain_row(hypervisor_id: int, d: DomainRecord, at: datetime) -> dict[str, Any]:
    return {
        "hypervisor_id": hypervisor_id,
        "uuid": d.uuid,
        "name": d.name,
        "state": d.state,
        "libvirt_id": d.id,
        "vcpus": d.vcpus,
        "memory_mib": d.memory_mib,
        "observed_at": at,
    }


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


# --------------------------------------------------------------------------- placement claims

DEFAULT_CLAIM_TTL = timedelta(minutes=15)


@dataclass(frozen=True)
class ClaimRequest:
    """Room wanted on `host` for `vm`, and the host's limits under the placement policy."""

    host: str
    vm: str
    vcpus: int
    memory_mib: int
    vcpu_limit: int
    memory_limit_mib: int


@dataclass(frozen=True)
class PlacementClaim:
    host: str
    vm: str
    vcpus: int
    memory_mib: int
    created_at: datetime
    expires_at: datetime

    def as_json(self) -> dict[str, object]:
        return {"host": self.host, "vm": self.vm, "vcpus": self.vcpus,
                "memory_mib": self.memory_mib, "created_at": self.created_at.isoformat(),
                "expires_at": self.expires_at.isoformat()}


# --------------------------------------------------------------------------- inventory snapshot


@dataclass(frozen=True)
class _PodSnap:
    id: int
    site: str
    storage: PodStorage | None


@dataclass(frozen=True)
class _HostSnap:
    id: int
    uri: str
    pod: str
    groups: tuple[str, ...]
    maintenance: bool


@dataclass(frozen=True)
class _Snap:
    groups: dict[str, tuple[int, str]]  # name -> (id, description)
    sites: dict[str, tuple[int, str]]
    pods: dict[str, _PodSnap]
    hosts: dict[str, _HostSnap]


@dataclass(frozen=True)
class _Desired:
    groups: dict[str, str]  # name -> description
    sites: dict[str, str]
    pods: dict[str, tuple[str, PodStorage | None]]  # name -> (site, storage)
    hosts: dict[str, tuple[str, Hypervisor]]  # name -> (pod, hypervisor)

    @classmethod
    def of(cls, fleet: Fleet) -> _Desired:
        declared = {g.name: g.description for g in fleet.groups}
        return cls(
            groups={n: declared.get(n, "") for n in fleet.group_names()},
            sites={s.name: s.description for s in fleet.sites},
            pods={p.name: (s.name, p.storage) for s in fleet.sites for p in s.pods},
            hosts={h.name: (p.name, h) for _, p, h in fleet.hypervisors()},
        )


def _plan(snap: _Snap, want: _Desired, vm_counts: dict[int, int]) -> ApplyPlan:
    plan = ApplyPlan()
    for name in sorted(want.sites):
        desc = want.sites[name]
        if name not in snap.sites:
            plan.added.append(("site", name, desc))
        elif snap.sites[name][1] != desc:
            plan.changed.append(("site", name, f"description: {snap.sites[name][1]!r} -> {desc!r}"))
    for name in sorted(want.pods):
        site, storage = want.pods[name]
        have = snap.pods.get(name)
        if have is None:
            plan.added.append(("pod", name, f"in site {site}"))
            continue
        if have.site != site:
            plan.changed.append(("pod", name, f"moved to site {site}"))
        if have.storage != storage:
            plan.changed.append(
                ("pod", name, f"storage: {_fmt_storage(have.storage)} -> {_fmt_storage(storage)}")
            )
    for name in sorted(want.hosts):
        pod, hv = want.hosts[name]
        groups = _unique(hv.groups)
        h = snap.hosts.get(name)
        if h is None:
            plan.added.append(("hypervisor", name, f"in pod {pod}: {hv.uri}"))
            continue
        if h.uri != hv.uri:
            plan.changed.append(("hypervisor", name, f"uri: {h.uri} -> {hv.uri}"))
        if h.pod != pod:
            plan.changed.append(("hypervisor", name, f"moved to pod {pod}"))
        if h.groups != groups:
            plan.changed.append(
                ("hypervisor", name, f"groups: {_list(h.groups)} -> {_list(groups)}")
            )
        if h.maintenance != hv.maintenance:
            onoff = {True: "on", False: "off"}
            plan.changed.append(
                ("hypervisor", name,
                 f"maintenance: {onoff[h.maintenance]} -> {onoff[hv.maintenance]}")
            )
    for name in sorted(want.groups):
        desc = want.groups[name]
        if name not in snap.groups:
            plan.added.append(("group", name, desc))
        elif snap.groups[name][1] != desc:
            plan.changed.append(
                ("group", name, f"description: {snap.groups[name][1]!r} -> {desc!r}")
            )

    for name in sorted(set(snap.sites) - set(want.sites)):
        plan.removed.append(("site", name, ""))
    for name in sorted(set(snap.pods) - set(want.pods)):
        plan.removed.append(("pod", name, f"in site {snap.pods[name].site}"))
    for name in sorted(set(snap.hosts) - set(want.hosts)):
        h = snap.hosts[name]
        n = vm_counts.get(h.id, 0)
        detail = f"in pod {h.pod}" + (f"; forgets {n} observed VM{'s' * (n != 1)}" if n else "")
        plan.removed.append(("hypervisor", name, detail))
    for name in sorted(set(snap.groups) - set(want.groups)):
        plan.removed.append(("group", name, ""))
    return plan


# --------------------------------------------------------------------------- the store


def _owner_only(path: Path) -> None:
    """The store holds the controller's API token: a SQLite file we own is made 0600."""
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(OSError):
            if p.stat().st_uid == os.geteuid() and p.stat().st_mode & 0o077:
                p.chmod(0o600)


def _alembic_error() -> type[Exception]:
    from alembic.util.exc import CommandError

    return CommandError


class Store(InstallStore, ControllerRegistry, MaintenanceStore, HAStore):
    """The inventory and observed state of the fleet, in one SQL database (network installs:
    the InstallStore methods, in installs.py; the controller registration: controllers.py; host
    maintenance: maintenance.py; high availability: ha.py)."""

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
            raise StoreError(f"store: cannot use {self.url}: {_one_line(exc)}") from None
        self._writer = self._engine.execution_options(**{_WRITE_OPTION: True})
        try:
            self._migrate()
        except (SQLAlchemyError, _alembic_error()) as exc:
            self._engine.dispose()
            raise StoreError(f"store: cannot open {self.url}: {_one_line(exc)}") from None
        if self._backend == "sqlite" and sa_url.database not in (None, "", ":memory:"):
            _owner_only(Path(sa_url.database))
        self._upsert_domain = self._upsert(t.domains, ["hypervisor_id", "uuid"])
        self._upsert_status = self._upsert(t.host_status, ["hypervisor_id"])

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
        from alembic import command
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
        # One transaction that holds the migration lock for its whole length: a second process
        # opening the same fresh database waits, then finds it at head and does nothing.
        with self._writer.begin() as conn:
            if self._backend == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATE_LOCK})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def _upsert(self, table: Table, keys: list[str]) -> Insert:
        ins: sqlite_dialect.Insert | pg_dialect.Insert
        if self._backend == "sqlite":
            ins = sqlite_dialect.insert(table)
        else:
            ins = pg_dialect.insert(table)
        cols = {c.name: ins.excluded[c.name] for c in table.columns if c.name not in keys
                and not (c.primary_key and c.name == "id")}
        return ins.on_conflict_do_update(index_elements=keys, set_=cols)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # ----------------------------------------------------------------- transactions

    @contextmanager
    def _tx(self, what: str, *, write: bool) -> Iterator[Connection]:
        engine = self._writer if write else self._engine
        try:
            with engine.begin() as conn:
                yield conn
        except IntegrityError as exc:
            raise Conflict(f"{what}: {_one_line(exc)}") from None
        except SQLAlchemyError as exc:
            raise StoreError(f"{what}: {_one_line(exc)}") from None

    def _pg_lock(self, conn: Connection, key: int) -> None:
        if self._backend == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    # ----------------------------------------------------------------- lookups

    @staticmethod
    def _host_ids(conn: Connection, names: Sequence[str]) -> dict[str, int]:
        """name -> id for every named hypervisor; NotFound naming the first one that is not."""
        ids: dict[str, int] = {}
        for chunk in _chunks(list(dict.fromkeys(names))):
            stmt = select(t.hypervisors.c.name, t.hypervisors.c.id).where(
                t.hypervisors.c.name.in_(chunk)
            )
            ids.update({n: i for n, i in conn.execute(stmt)})
        for name in names:
            if name not in ids:
                raise NotFound(f"hypervisor {name!r} is not in the inventory")
        return ids

    @staticmethod
    def _name_ids(conn: Connection, table: Table,
                  names: Sequence[str] | None = None) -> dict[str, int]:
        stmt = select(table.c.name, table.c.id)
        if names is not None:
            stmt = stmt.where(table.c.name.in_(names))
        return {n: i for n, i in conn.execute(stmt)}

    @staticmethod
    def _check_filters(conn: Connection, *, site: str | None, pod: str | None,
                       host: str | None, group: str | None) -> None:
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

    @staticmethod
    def _snapshot(conn: Connection) -> _Snap:
        from virtfleet.inventory.fleetfile import PodStorage

        groups = {n: (i, d) for i, n, d in conn.execute(
            select(t.host_groups.c.id, t.host_groups.c.name, t.host_groups.c.description))}
        sites = {n: (i, d) for i, n, d in conn.execute(
            select(t.sites.c.id, t.sites.c.name, t.sites.c.description))}
        p = t.pods
        pods: dict[str, _PodSnap] = {}
        for row in conn.execute(
            select(p.c.id, p.c.name, t.sites.c.name, p.c.storage_type, p.c.storage_source,
                   p.c.storage_target, p.c.storage_pool).join_from(p, t.sites)
        ):
            storage = None
            if row[3] is not None:
                storage = PodStorage(type=row[3], source=row[4] or "",
                                     target=row[5] or "/", pool=row[6])
            pods[row[1]] = _PodSnap(id=row[0], site=row[2], storage=storage)
        member: dict[int, list[str]] = {}
        for hid, gname in conn.execute(
            select(t.hypervisor_groups.c.hypervisor_id, t.host_groups.c.name)
            .join_from(t.hypervisor_groups, t.host_groups)
            .order_by(t.hypervisor_groups.c.hypervisor_id, t.hypervisor_groups.c.position)
        ):
            member.setdefault(hid, []).append(gname)
        h = t.hypervisors
        hosts = {
            name: _HostSnap(id=hid, uri=uri, pod=pname, groups=tuple(member.get(hid, ())),
                            maintenance=bool(maint))
            for hid, name, uri, maint, pname in conn.execute(
                select(h.c.id, h.c.name, h.c.uri, h.c.maintenance, t.pods.c.name)
                .join_from(h, t.pods))
        }
        return _Snap(groups=groups, sites=sites, pods=pods, hosts=hosts)

    @staticmethod
    def _vm_counts(conn: Connection, host_ids: Sequence[int]) -> dict[int, int]:
        counts: dict[int, int] = {}
        d = t.domains
        for chunk in _chunks(host_ids):
            counts.update({hid: n for hid, n in conn.execute(
                select(d.c.hypervisor_id, func.count()).where(d.c.hypervisor_id.in_(chunk))
                .group_by(d.c.hypervisor_id))})
        return counts

    # ----------------------------------------------------------------- inventory

    def fleet(self) -> Fleet:
        """The whole inventory as a Fleet: groups, then sites, pods and hypervisors by name."""
        from virtfleet.inventory.fleetfile import (
            Fleet,
            GroupHA,
            HostGroup,
            Hypervisor,
            Pod,
            Site,
        )

        with self._tx("read the inventory", write=False) as conn:
            snap = self._snapshot(conn)
            bmcs, group_ha = self._ha_fleet_parts(conn)
        hosts_by_pod: dict[str, list[str]] = {}
        for name, h in snap.hosts.items():
            hosts_by_pod.setdefault(h.pod, []).append(name)
        pods_by_site: dict[str, list[str]] = {}
        for name, p in snap.pods.items():
            pods_by_site.setdefault(p.site, []).append(name)
        sites = []
        for sname in sorted(snap.sites):
            pods = []
            for pname in sorted(pods_by_site.get(sname, [])):
                hvs = tuple(
                    Hypervisor(name=n, uri=snap.hosts[n].uri, groups=snap.hosts[n].groups,
                               maintenance=snap.hosts[n].maintenance, bmc=bmcs.get(n))
                    for n in sorted(hosts_by_pod.get(pname, []))
                )
                pods.append(Pod(name=pname, storage=snap.pods[pname].storage, hypervisors=hvs))
            sites.append(Site(name=sname, description=snap.sites[sname][1], pods=tuple(pods)))
        groups = tuple(HostGroup(name=n, description=snap.groups[n][1],
                                 ha=GroupHA(priority=group_ha[n]) if n in group_ha else None)
                       for n in sorted(snap.groups))
        return Fleet(groups=groups, sites=tuple(sites))

    def plan_apply(self, fleet: Fleet) -> ApplyPlan:
        """What apply(fleet) would add, change and remove. Writes nothing."""
        with self._tx("plan the inventory change", write=False) as conn:
            snap = self._snapshot(conn)
            want = _Desired.of(fleet)
            gone = [h.id for n, h in snap.hosts.items() if n not in want.hosts]
            plan = _plan(snap, want, self._vm_counts(conn, gone))
            self._plan_ha(conn, fleet, plan, set(snap.hosts), set(snap.groups))
            return plan

    def apply(self, fleet: Fleet) -> ApplyPlan:
        """Make the inventory equal `fleet`, all in one transaction, and say what changed.

        What the fleet no longer has is removed, with the observed VMs and status of removed
        hypervisors. Observed VMs of hypervisors that stay (even in another pod) are kept.
        """
        with self._tx("apply the fleet file", write=True) as conn:
            self._pg_lock(conn, _PG_APPLY_LOCK)
            snap = self._snapshot(conn)
            want = _Desired.of(fleet)
            gone = [h.id for n, h in snap.hosts.items() if n not in want.hosts]
            plan = _plan(snap, want, self._vm_counts(conn, gone))
            self._plan_ha(conn, fleet, plan, set(snap.hosts), set(snap.groups))
            if not plan.empty:
                self._apply(conn, snap, want, gone)
                self._apply_ha(conn, fleet)
            return plan

    def _apply(self, conn: Connection, snap: _Snap, want: _Desired, gone: list[int]) -> None:
        sites, pods, groups, hyp, hg = t.sites, t.pods, t.host_groups, t.hypervisors, \
            t.hypervisor_groups

        # Groups and sites first: pods and hypervisors refer to them.
        new = [{"name": n, "description": d} for n, d in want.groups.items()
               if n not in snap.groups]
        if new:
            conn.execute(groups.insert(), new)
        upd = [{"b_id": snap.groups[n][0], "b_desc": d} for n, d in want.groups.items()
               if n in snap.groups and snap.groups[n][1] != d]
        if upd:
            conn.execute(update(groups).where(groups.c.id == bindparam("b_id"))
                         .values(description=bindparam("b_desc")), upd)
        new = [{"name": n, "description": d} for n, d in want.sites.items() if n not in snap.sites]
        if new:
            conn.execute(sites.insert(), new)
        upd = [{"b_id": snap.sites[n][0], "b_desc": d} for n, d in want.sites.items()
               if n in snap.sites and snap.sites[n][1] != d]
        if upd:
            conn.execute(update(sites).where(sites.c.id == bindparam("b_id"))
                         .values(description=bindparam("b_desc")), upd)
        site_ids = self._name_ids(conn, sites)
        group_ids = self._name_ids(conn, groups)

        # Pods: new ones, and those that moved site or changed storage.
        new_pods: list[dict[str, Any]] = [
            {"name": n, "site_id": site_ids[s], **_storage_cols(st)}
            for n, (s, st) in want.pods.items() if n not in snap.pods
        ]
        if new_pods:
            conn.execute(pods.insert(), new_pods)
        upd_pods: list[dict[str, Any]] = []
        for n, (s, st) in want.pods.items():
            have_pod = snap.pods.get(n)
            if have_pod is not None and (have_pod.site != s or have_pod.storage != st):
                cols = _storage_cols(st)
                upd_pods.append({"b_id": have_pod.id, "b_site": site_ids[s],
                                 **{f"b_{k}": v for k, v in cols.items()}})
        if upd_pods:
            conn.execute(
                update(pods).where(pods.c.id == bindparam("b_id")).values(
                    site_id=bindparam("b_site"),
                    **{k: bindparam(f"b_{k}") for k in _storage_cols(None)},
                ),
                upd_pods,
            )
        pod_ids = self._name_ids(conn, pods)

        # Hypervisors: drop the removed (their VMs, status and group rows go by cascade), then
        # change the kept, then add the new, so a uri can pass from one hypervisor to another.
        for chunk in _chunks(gone):
            conn.execute(delete(hyp).where(hyp.c.id.in_(chunk)))
        changed = []
        regroup: list[tuple[int, tuple[str, ...]]] = []
        for n, (p, hv) in want.hosts.items():
            have = snap.hosts.get(n)
            if have is None:
                continue
            if (have.uri, have.pod, have.maintenance) != (hv.uri, p, hv.maintenance):
                changed.append((have, p, hv))
            if have.groups != _unique(hv.groups):
                regroup.append((have.id, _unique(hv.groups)))
        moving_uri = [{"b_id": have.id, "b_uri": f"~moving~{have.id}"}
                      for have, _, hv in changed if have.uri != hv.uri]
        if moving_uri:  # park changing uris on unique placeholders first (swaps)
            conn.execute(update(hyp).where(hyp.c.id == bindparam("b_id"))
                         .values(uri=bindparam("b_uri")), moving_uri)
        if changed:
            conn.execute(
                update(hyp).where(hyp.c.id == bindparam("b_id")).values(
                    uri=bindparam("b_uri"), pod_id=bindparam("b_pod"),
                    maintenance=bindparam("b_maint"),
                ),
                [{"b_id": have.id, "b_uri": hv.uri, "b_pod": pod_ids[p],
                  "b_maint": hv.maintenance} for have, p, hv in changed],
            )
        new_hosts = [(n, p, hv) for n, (p, hv) in want.hosts.items() if n not in snap.hosts]
        if new_hosts:
            conn.execute(hyp.insert(), [
                {"name": n, "uri": hv.uri, "pod_id": pod_ids[p], "maintenance": hv.maintenance}
                for n, p, hv in new_hosts
            ])
            ids = self._host_ids(conn, [n for n, _, _ in new_hosts])
            regroup.extend((ids[n], _unique(hv.groups)) for n, _, hv in new_hosts if hv.groups)
        if regroup:
            for chunk in _chunks([hid for hid, _ in regroup]):
                conn.execute(delete(hg).where(hg.c.hypervisor_id.in_(chunk)))
            rows = [{"hypervisor_id": hid, "group_id": group_ids[g], "position": i}
                    for hid, gs in regroup for i, g in enumerate(gs)]
            if rows:
                conn.execute(hg.insert(), rows)

        # Now nothing refers to what is left over.
        for table, have_names, want_names in (
            (pods, {n: p.id for n, p in snap.pods.items()}, want.pods),
            (sites, {n: s[0] for n, s in snap.sites.items()}, want.sites),
            (groups, {n: g[0] for n, g in snap.groups.items()}, want.groups),
        ):
            drop = [i for n, i in have_names.items() if n not in want_names]
            for chunk in _chunks(drop):
                conn.execute(delete(table).where(table.c.id.in_(chunk)))

    def add_hypervisor(self, site: str, pod: str, hv: Hypervisor) -> None:
        """Add one hypervisor, creating its site, pod and groups if they do not exist yet."""
        check_name("site", site)
        check_name("pod", pod)
        hyp = t.hypervisors
        with self._tx(f"add hypervisor {hv.name!r}", write=True) as conn:
            self._pg_lock(conn, _PG_APPLY_LOCK)
            if conn.execute(select(hyp.c.id).where(hyp.c.name == hv.name)).first() is not None:
                raise Conflict(f"hypervisor {hv.name!r} is already in the inventory")
            other = conn.execute(select(hyp.c.name).where(hyp.c.uri == hv.uri)).scalar()
            if other is not None:
                raise Conflict(f"uri {hv.uri!r} already belongs to hypervisor {other!r}")
            site_id = conn.execute(select(t.sites.c.id).where(t.sites.c.name == site)).scalar()
            if site_id is None:
                site_id = conn.execute(
                    t.sites.insert().values(name=site, description="")
                    .returning(t.sites.c.id)).scalar_one()
            row = conn.execute(
                select(t.pods.c.id, t.sites.c.name).join_from(t.pods, t.sites)
                .where(t.pods.c.name == pod)).first()
            if row is None:
                pod_id = conn.execute(
                    t.pods.insert().values(name=pod, site_id=site_id, **_storage_cols(None))
                    .returning(t.pods.c.id)).scalar_one()
            elif row[1] != site:
                raise Conflict(f"pod {pod!r} is in site {row[1]!r}, not {site!r}")
            else:
                pod_id = row[0]
            host_id = conn.execute(
                hyp.insert().values(name=hv.name, uri=hv.uri, pod_id=pod_id,
                                    maintenance=hv.maintenance)
                .returning(hyp.c.id)).scalar_one()
            names = _unique(hv.groups)
            if names:
                g = t.host_groups
                have = self._name_ids(conn, g, names)
                missing = [{"name": n, "description": ""} for n in names if n not in have]
                if missing:
                    conn.execute(g.insert(), missing)
                    have = self._name_ids(conn, g, names)
                conn.execute(t.hypervisor_groups.insert(), [
                    {"hypervisor_id": host_id, "group_id": have[n], "position": i}
                    for i, n in enumerate(names)
                ])

    def remove_hypervisor(self, name: str) -> None:
        """Remove a hypervisor with its observed VMs and status. NotFound if it is not there."""
        hyp = t.hypervisors
        with self._tx(f"remove hypervisor {name!r}", write=True) as conn:
            if conn.execute(delete(hyp).where(hyp.c.name == name)).rowcount == 0:
                raise NotFound(f"hypervisor {name!r} is not in the inventory")

    def hypervisors(self, *, site: str | None = None, pod: str | None = None,
                    host: str | None = None, group: str | None = None) -> list[HostRecord]:
        """Hypervisors matching every filter given, sorted by site, pod and name. A host is in
        maintenance if the fleet file or an operator (`host maintenance`) says so."""
        h, hg, g = t.hypervisors, t.hypervisor_groups, t.host_groups
        conds = self._host_conditions(site=site, pod=pod, host=host, group=group)
        operator = select(t.host_maintenance.c.hypervisor_id).where(
            t.host_maintenance.c.hypervisor_id == h.c.id).exists()
        with self._tx("list hypervisors", write=False) as conn:
            self._check_filters(conn, site=site, pod=pod, host=host, group=group)
            base = h.join(t.pods, h.c.pod_id == t.pods.c.id).join(
                t.sites, t.pods.c.site_id == t.sites.c.id)
            rows = conn.execute(
                select(h.c.id, h.c.name, h.c.uri, t.sites.c.name, t.pods.c.name,
                       h.c.maintenance | operator)
                .select_from(base).where(*conds)
                .order_by(t.sites.c.name, t.pods.c.name, h.c.name)
            ).all()
            member: dict[int, list[str]] = {}
            ids = select(h.c.id).select_from(base).where(*conds)
            for hid, gname in conn.execute(
                select(hg.c.hypervisor_id, g.c.name).join_from(hg, g)
                .where(hg.c.hypervisor_id.in_(ids))
                .order_by(hg.c.hypervisor_id, hg.c.position)
            ):
                member.setdefault(hid, []).append(gname)
        return [
            HostRecord(name=name, uri=uri, site=sname, pod=pname,
                       groups=tuple(member.get(hid, ())), maintenance=bool(maint))
            for hid, name, uri, sname, pname, maint in rows
        ]

    # ----------------------------------------------------------------- observed state

    def replace_host_domains(self, host: str, domains: list[DomainRecord],
                             observed_at: datetime) -> None:
        """Record `domains` as the host's full VM list, seen at `observed_at`; mark it reachable."""
        self.replace_many({host: domains}, observed_at)

    def replace_many(self, results: dict[str, list[DomainRecord]], observed_at: datetime, *,
                     skip_unknown: bool = False) -> None:
        """replace_host_domains for many hosts in one transaction (what a fleet sync writes).

        NotFound (and nothing written) if a host is not in the inventory, unless
        `skip_unknown`: a sync that raced with `apply` then records the hosts that remain.
        """
        at = _utc(observed_at, "observed_at")
        if not results:
            return
        h, d = t.hypervisors, t.domains
        names = list(results)
        seen = {name: {dom.uuid for dom in doms} for name, doms in results.items()}
        with self._tx("record observed VMs", write=True) as conn:
            # One query gives each host's id and the uuids it had until now.
            ids: dict[str, int] = {}
            stale: dict[int, list[str]] = {}
            for chunk in _chunks(names):
                for hid, name, uuid in conn.execute(
                    select(h.c.id, h.c.name, d.c.uuid)
                    .select_from(h.outerjoin(d, d.c.hypervisor_id == h.c.id))
                    .where(h.c.name.in_(chunk))
                ):
                    ids[name] = hid
                    if uuid is not None and uuid not in seen[name]:
                        stale.setdefault(hid, []).append(uuid)
            for name in names:
                if name not in ids and not skip_unknown:
                    raise NotFound(f"hypervisor {name!r} is not in the inventory")
            rows = [_domain_row(ids[host], dom, at)
                    for host, doms in results.items() if host in ids
                    for dom in {dm.uuid: dm for dm in doms}.values()]
            for hid, uuids in stale.items():
                for uuid_chunk in _chunks(uuids):
                    conn.execute(delete(d).where(d.c.hypervisor_id == hid,
                                                 d.c.uuid.in_(uuid_chunk)))
            if rows:
                conn.execute(self._upsert_domain, rows)
            conn.execute(self._upsert_status, [
                {"hypervisor_id": hid, "reachable": True, "error": "", "observed_at": at}
                for hid in ids.values()
            ])

    def upsert_domain(self, host: str, domain: DomainRecord, observed_at: datetime) -> None:
        """One VM as just seen on `host` (a lifecycle event). Other hosts' rows are left alone:
        a migration's source reports its own undefine or stop."""
        at = _utc(observed_at, "observed_at")
        with self._tx(f"record VM {domain.name!r}", write=True) as conn:
            hid = self._host_ids(conn, [host])[host]
            conn.execute(self._upsert_domain, [_domain_row(hid, domain, at)])

    def delete_domain(self, host: str, uuid: str) -> None:
        """Forget the VM `uuid` on `host` (undefined there). A no-op if the host lacks it."""
        d = t.domains
        with self._tx(f"forget VM {uuid}", write=True) as conn:
            hid = self._host_ids(conn, [host])[host]
            conn.execute(delete(d).where(d.c.uuid == uuid, d.c.hypervisor_id == hid))

    def set_host_status(self, status: HostStatus) -> None:
        at = None if status.observed_at is None else _utc(status.observed_at, "observed_at")
        with self._tx(f"record status of {status.host!r}", write=True) as conn:
            hid = self._host_ids(conn, [status.host])[status.host]
            conn.execute(self._upsert_status, [{
                "hypervisor_id": hid, "reachable": status.reachable, "error": status.error,
                "observed_at": at,
            }])

    def host_statuses(self) -> list[HostStatus]:
        """Every recorded host status, sorted by host name."""
        s, h = t.host_status, t.hypervisors
        with self._tx("read host status", write=False) as conn:
            rows = conn.execute(
                select(h.c.name, s.c.reachable, s.c.error, s.c.observed_at)
                .join_from(s, h).order_by(h.c.name)
            ).all()
        return [HostStatus(host=n, reachable=bool(r), error=e or "", observed_at=at)
                for n, r, e, at in rows]

    def fleet_vms(self, *, site: str | None = None, pod: str | None = None,
                  host: str | None = None, group: str | None = None,
                  state: str | None = None, name: str | None = None) -> list[FleetVM]:
        """Observed VMs with their host, pod and site, sorted by site, pod, host and name.
        `name` finds one VM (wherever it was seen) without loading the whole fleet."""
        d, h = t.domains, t.hypervisors
        conds = self._host_conditions(site=site, pod=pod, host=host, group=group)
        if state is not None:
            conds.append(d.c.state == state)
        if name is not None:
            conds.append(d.c.name == name)
        stmt: Select[Any] = (
            select(h.c.name, t.sites.c.name, t.pods.c.name, d.c.name, d.c.uuid, d.c.state,
                   d.c.libvirt_id, d.c.vcpus, d.c.memory_mib,
                   d.c.observed_at)
            .select_from(d.join(h, d.c.hypervisor_id == h.c.id)
                         .join(t.pods, h.c.pod_id == t.pods.c.id)
                         .join(t.sites, t.pods.c.site_id == t.sites.c.id))
            .where(*conds)
            .order_by(t.sites.c.name, t.pods.c.name, h.c.name, d.c.name, d.c.uuid)
        )
        with self._tx("list VMs", write=False) as conn:
            self._check_filters(conn, site=site, pod=pod, host=host, group=group)
            rows = conn.execute(stmt).all()
        return [
            FleetVM(host=hn, site=sn, pod=pn, observed_at=at,
                    domain=DomainRecord(name=name, uuid=uuid, state=st, id=lid, vcpus=vcpus,
                                        memory_mib=mem))
            for hn, sn, pn, name, uuid, st, lid, vcpus, mem, at in rows
        ]

    # ----------------------------------------------------------------- placement claims

    def claim_placements(self, wanted: Sequence[ClaimRequest], *,
                         ttl: timedelta = DEFAULT_CLAIM_TTL,
                         now: datetime | None = None) -> list[PlacementClaim]:
        """Hold room for every VM in `wanted`, or for none (Conflict naming the host and the
        resource that would be overbooked).

        The check and the insert are one transaction that holds the hosts: SQLite's BEGIN
        IMMEDIATE takes the database write lock, PostgreSQL locks the hypervisor rows (in id
        order, so two batches cannot deadlock). A host's usage is its observed VMs plus its live
        claims; a VM that is both observed and claimed counts once.
        """
        at = _utc(now or datetime.now(UTC), "now")
        if ttl <= timedelta(0):
            raise InvalidInput("ttl", "must be positive")
        for w in wanted:
            check_name("vm", w.vm)
            for what, v in (("vcpus", w.vcpus), ("memory_mib", w.memory_mib)):
                if v <= 0:
                    raise InvalidInput(what, f"must be positive (got {v})")
        if not wanted:
            return []
        h, d, c = t.hypervisors, t.domains, t.placement_claims
        names = list(dict.fromkeys(w.host for w in wanted))
        with self._tx("claim placement", write=True) as conn:
            ids = self._host_ids(conn, names)
            if self._backend == "postgresql":
                conn.execute(select(h.c.id).where(h.c.id.in_(sorted(ids.values())))
                             .order_by(h.c.id).with_for_update())
            live = c.c.expires_at > at
            used: dict[int, list[int]] = {i: [0, 0] for i in ids.values()}
            for hid, cpu, mem in conn.execute(
                select(c.c.hypervisor_id, func.sum(c.c.vcpus), func.sum(c.c.memory_mib))
                .where(c.c.hypervisor_id.in_(list(ids.values())), live)
                .group_by(c.c.hypervisor_id)):
                used[hid] = [int(cpu), int(mem)]
            claimed = (select(c.c.id).where(c.c.hypervisor_id == d.c.hypervisor_id,
                                            c.c.vm_name == d.c.name, live).exists())
            for hid, cpu, mem in conn.execute(
                select(d.c.hypervisor_id, func.sum(d.c.vcpus), func.sum(d.c.memory_mib))
                .where(d.c.hypervisor_id.in_(list(ids.values())), ~claimed)
                .group_by(d.c.hypervisor_id)):
                used[hid][0] += int(cpu)
                used[hid][1] += int(mem)
            # A VM being claimed that is already observed there is counted by its claim.
            batch = {(ids[w.host], w.vm) for w in wanted}
            for chunk in _chunks(sorted({w.vm for w in wanted})):
                for hid, name, cpu, mem in conn.execute(
                    select(d.c.hypervisor_id, d.c.name, d.c.vcpus, d.c.memory_mib)
                    .where(d.c.hypervisor_id.in_(list(ids.values())), d.c.name.in_(chunk),
                           ~claimed)):
                    if (hid, name) in batch:
                        used[hid][0] -= cpu
                        used[hid][1] -= mem
            rows = []
            for w in wanted:
                u = used[ids[w.host]]
                for k, (what, need, limit) in enumerate((("vcpus", w.vcpus, w.vcpu_limit), (
                        "memory", w.memory_mib, w.memory_limit_mib))):
                    if u[k] + need > limit:
                        raise Conflict(f"claim {w.vm!r} on {w.host}: {what} would be overbooked "
                                       f"({u[k]} used or claimed + {need} > limit {limit})")
                u[0] += w.vcpus
                u[1] += w.memory_mib
                rows.append({"hypervisor_id": ids[w.host], "vm_name": w.vm, "vcpus": w.vcpus,
                             "memory_mib": w.memory_mib, "created_at": at,
                             "expires_at": at + ttl})
            # An expired claim for the same VM would block the insert; it no longer counts.
            conn.execute(delete(c).where(c.c.hypervisor_id.in_(list(ids.values())), ~live))
            conn.execute(c.insert(), rows)
        return [PlacementClaim(host=w.host, vm=w.vm, vcpus=w.vcpus, memory_mib=w.memory_mib,
                               created_at=at, expires_at=at + ttl) for w in wanted]

    def release_placement(self, host: str, vm: str) -> bool:
        """Give back `vm`'s room on `host` (done, or failed). False if there was no claim."""
        c = t.placement_claims
        with self._tx(f"release claim {vm!r}", write=True) as conn:
            hid = self._host_ids(conn, [host])[host]
            n = conn.execute(delete(c).where(c.c.hypervisor_id == hid,
                                             c.c.vm_name == vm)).rowcount
        return bool(n)

    def settle_placement(self, host: str, domain: DomainRecord,
                         observed_at: datetime | None = None) -> bool:
        """`domain` is now defined on `host`: it is recorded as observed there and its claim
        goes, in one transaction, so its room stays counted (by the observation) and its name
        stays taken fleet-wide without waiting for a sync. False if there was no claim."""
        at = _utc(observed_at or datetime.now(UTC), "observed_at")
        c = t.placement_claims
        with self._tx(f"settle claim {domain.name!r}", write=True) as conn:
            hid = self._host_ids(conn, [host])[host]
            conn.execute(self._upsert_domain, [_domain_row(hid, domain, at)])
            n = conn.execute(delete(c).where(c.c.hypervisor_id == hid,
                                             c.c.vm_name == domain.name)).rowcount
        return bool(n)

    def forget_vm(self, host: str, name: str, uuid: str | None = None) -> None:
        """`name` is no longer defined on `host` (undefined, or rolled back): its observation
        and any claim for it there go, so its name and room are free again at once."""
        c, d = t.placement_claims, t.domains
        with self._tx(f"forget VM {name!r}", write=True) as conn:
            hid = self._host_ids(conn, [host])[host]
            conn.execute(delete(c).where(c.c.hypervisor_id == hid, c.c.vm_name == name))
            gone = d.c.name == name if uuid is None else or_(d.c.uuid == uuid, d.c.name == name)
            conn.execute(delete(d).where(d.c.hypervisor_id == hid, gone))

    def placement_claims(self, *, host: str | None = None,
                         now: datetime | None = None) -> list[PlacementClaim]:
        """Live (unexpired) claims, by host and VM name."""
        at = _utc(now or datetime.now(UTC), "now")
        c, h = t.placement_claims, t.hypervisors
        stmt = (select(h.c.name, c.c.vm_name, c.c.vcpus, c.c.memory_mib, c.c.created_at,
                       c.c.expires_at).join_from(c, h).where(c.c.expires_at > at)
                .order_by(h.c.name, c.c.vm_name))
        if host is not None:
            stmt = stmt.where(h.c.name == host)
        with self._tx("list placement claims", write=False) as conn:
            if host is not None:
                self._host_ids(conn, [host])
            rows = conn.execute(stmt).all()
        return [PlacementClaim(host=r[0], vm=r[1], vcpus=r[2], memory_mib=r[3],
                               created_at=r[4], expires_at=r[5]) for r in rows]

    # ----------------------------------------------------------------- VM locks

    def lock_vm(self, vm: str, operation: str, hostname: str, pid: int, at: datetime,
                stale: Callable[[VMLock], bool]) -> None:
        """Take `vm` for `operation`, or raise Busy naming who holds it.

        A holder `stale` judges dead (its process is gone, or it is far too old) is replaced,
        in the same transaction, so a killed CLI never blocks a VM for good.
        """
        when = _utc(at, "at")
        lk = t.vm_locks
        with self._tx(f"lock VM {vm!r}", write=True) as conn:
            row = conn.execute(select(lk.c.operation, lk.c.hostname, lk.c.pid,
                                      lk.c.acquired_at).where(lk.c.vm_name == vm)).first()
            if row is not None:
                held = VMLock(vm, row[0], row[1], int(row[2]), row[3])
                if not stale(held):
                    raise Busy(f"VM {vm!r} is busy: {held.operation} by pid {held.pid} on "
                               f"{held.hostname} since {held.acquired_at:%H:%M:%S} UTC; "
                               "try again when it is done")
                conn.execute(delete(lk).where(lk.c.vm_name == vm))
            conn.execute(lk.insert().values(vm_name=vm, operation=operation, hostname=hostname,
                                            pid=pid, acquired_at=when))

    def unlock_vm(self, vm: str, hostname: str, pid: int) -> None:
        """Release `vm` if this holder has it (a replaced stale holder releases nothing)."""
        lk = t.vm_locks
        with self._tx(f"unlock VM {vm!r}", write=True) as conn:
            conn.execute(delete(lk).where(lk.c.vm_name == vm, lk.c.hostname == hostname,
                                          lk.c.pid == pid))

    # The operations journal: see provision/journal.py.

    def begin_operation(self, rec: OperationRecord) -> None:
        with self._tx(f"journal {rec.kind} {rec.target}", write=True) as conn:
            conn.execute(t.operations.insert().values(
                id=rec.id, kind=rec.kind, target=rec.target, hostname=rec.hostname,
                pid=rec.pid, started_at=_utc(rec.started_at, "started_at"), state=rec.state,
                steps=_steps_json(rec.steps), error=rec.error))

    def record_step(self, op_id: str, steps: Sequence[Made]) -> None:
        """Replace the operation's list of what it made (written before each step's undo is
        needed, so a crash right after the step still leaves it on record)."""
        o = t.operations
        with self._tx("journal a step", write=True) as conn:
            conn.execute(update(o).where(o.c.id == op_id).values(steps=_steps_json(steps)))

    def fail_operation(self, op_id: str, steps: Sequence[Made], error: str) -> None:
        """Keep the operation on record: its rollback left `steps` behind."""
        o = t.operations
        with self._tx("journal a failure", write=True) as conn:
            conn.execute(update(o).where(o.c.id == op_id).values(
                state="failed", steps=_steps_json(steps), error=error))

    def end_operation(self, op_id: str) -> None:
        """Completed, or rolled back in full: nothing left to do or undo."""
        o = t.operations
        with self._tx("journal the end of an operation", write=True) as conn:
            conn.execute(delete(o).where(o.c.id == op_id))

    def operations(self) -> list[OperationRecord]:
        o = t.operations
        with self._tx("read the operations journal", write=False) as conn:
            rows = conn.execute(select(o.c.id, o.c.kind, o.c.target, o.c.hostname, o.c.pid,
                                       o.c.started_at, o.c.state, o.c.steps, o.c.error)
                                .order_by(o.c.started_at)).all()
        return [OperationRecord(id=r[0], kind=r[1], target=r[2], hostname=r[3], pid=int(r[4]),
                                started_at=r[5], state=r[6], steps=_steps_from(r[7]),
                                error=r[8]) for r in rows]


__all__ = ["MIGRATIONS_DIR", "ClaimRequest", "PlacementClaim", "Store"]


def _steps_json(steps: Sequence[Made]) -> str:
    return json.dumps([[m.kind, m.host, m.ref] for m in steps])


def _steps_from(text: str) -> tuple[Made, ...]:
    return tuple(Made(str(k), str(h), str(r)) for k, h, r in json.loads(text))
