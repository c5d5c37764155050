"""The store's part for network installs: one boot_installs row per hypervisor `boot serve` knows.

Every state change is one conditional UPDATE (`... WHERE state IN (expected)`), so two requests
for the same host cannot both move it, on SQLite or PostgreSQL. Several `boot serve` replicas
share one PostgreSQL store: planning takes an advisory lock (they start at once), and enrolling a
host is claimed with a session advisory lock (`enrolment_claim`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from virtfleet.errors import Conflict, InvalidInput, NotFound, StoreError
from virtfleet.inventory import tables as t
from virtfleet.inventory.base import StoreBase, one_line, utc
from virtfleet.inventory.records import InstallPlan as InstallPlan
from virtfleet.inventory.records import InstallRecord as InstallRecord

# InstallPlan and InstallRecord live in records.py, so `boot status` reads them without
# SQLAlchemy (installs_sqlite.py); they are imported here under their old home's names too.
STATES = t.INSTALL_STATES
# Once a host has been installed, network-booting it again must not reinstall it.
DONE_STATES = ("installed", "enrolled")
# Advisory lock keys: planning (one bigint key), and enrolment claims (two int4 keys, a space
# of their own: this class and a hash of the host name; a collision only makes two hosts wait).
PG_PLAN_LOCK = 0x76660010
PG_ENROL_CLASS = 0x76660011


_COLS = ("host", "mac", "site", "pod", "profile", "state", "token_hash", "token_expires_at",
         "planned_at", "booting_at", "installing_at", "installed_at", "enrolled_at",
         "failed_at", "updated_at", "error", "check_ok", "check_detail", "refused", "limited")


def _record(row: Row[Any]) -> InstallRecord:
    return InstallRecord(**dict(zip(_COLS, row, strict=True)))


def _select() -> Any:
    bi = t.boot_installs
    return select(*(bi.c[c] for c in _COLS))


class InstallStore(StoreBase):
    """boot_installs reads and writes."""

    def plan_installs(self, plans: Sequence[InstallPlan], at: datetime) -> int:
        """Make sure every planned host has a row (new ones start `planned`); keep the state
        of those that have one, updating their MAC, site, pod and profile from the fleet file.
        Returns how many rows were new."""
        when = utc(at, "at")
        bi = t.boot_installs
        new = 0
        with self._tx("plan network installs", write=True) as conn:
            # Replicas started together would otherwise all insert the same new rows.
            self._pg_lock(conn, PG_PLAN_LOCK)
            have = {r[0]: r[1:] for r in conn.execute(
                select(bi.c.host, bi.c.mac, bi.c.site, bi.c.pod, bi.c.profile))}
            owner = {v[0]: h for h, v in have.items()}
            for p in plans:
                other = owner.get(p.mac)
                if other is not None and other != p.host:
                    raise Conflict(f"MAC {p.mac} of {p.host!r} is recorded for {other!r}'s "
                                   "install; remove that host's install record first")
                if p.host not in have:
                    conn.execute(bi.insert().values(
                        host=p.host, mac=p.mac, site=p.site, pod=p.pod, profile=p.profile,
                        state="planned", planned_at=when, updated_at=when, error="",
                        check_detail=""))
                    new += 1
                elif have[p.host] != (p.mac, p.site, p.pod, p.profile):
                    conn.execute(update(bi).where(bi.c.host == p.host).values(
                        mac=p.mac, site=p.site, pod=p.pod, profile=p.profile, updated_at=when))
                owner[p.mac] = p.host
        return new

    def install(self, host: str) -> InstallRecord | None:
        bi = t.boot_installs
        with self._tx(f"read the install of {host!r}", write=False) as conn:
            row = conn.execute(_select().where(bi.c.host == host)).first()
        return _record(row) if row is not None else None

    def install_by_mac(self, mac: str) -> InstallRecord | None:
        bi = t.boot_installs
        with self._tx(f"read the install of MAC {mac}", write=False) as conn:
            row = conn.execute(_select().where(bi.c.mac == mac)).first()
        return _record(row) if row is not None else None

    def installs(self) -> list[InstallRecord]:
        bi = t.boot_installs
        with self._tx("list network installs", write=False) as conn:
            rows = conn.execute(_select().order_by(bi.c.site, bi.c.pod, bi.c.host)).all()
        return [_record(r) for r in rows]

    def issue_install_token(self, host: str, token_hash: str, expires_at: datetime,
                            at: datetime) -> InstallRecord:
        """Give `host` a new token (the previous one stops working) and mark it booting.

        A host already installed or enrolled is returned unchanged, without a token.
        """
        when, until = utc(at, "at"), utc(expires_at, "expires_at")
        bi = t.boot_installs
        with self._tx(f"start the install of {host!r}", write=True) as conn:
            done = conn.execute(update(bi).where(
                bi.c.host == host, bi.c.state.not_in(DONE_STATES)).values(
                state="booting", token_hash=token_hash, token_expires_at=until,
                booting_at=when, installing_at=None, installed_at=None, failed_at=None,
                updated_at=when, error="", check_ok=None, check_detail="")).rowcount
            row = conn.execute(_select().where(bi.c.host == host)).first()
        if row is None:
            raise NotFound(f"no install is planned for {host!r}")
        rec = _record(row)
        assert done or rec.state in DONE_STATES
        return rec

    def move_install(self, host: str, to: str, at: datetime, *, expect: Sequence[str],
                     error: str | None = None, clear_token: bool = False,
                     check: tuple[bool, str] | None = None, token_hash: str | None = None,
                     token_expires_at: datetime | None = None) -> InstallRecord:
        """Move `host` to state `to` if it is in one of `expect` (and, with `token_hash`, still
        holds that token: a script fetched meanwhile replaced it); Conflict naming the state it
        is in otherwise. Sets `<to>_at`; `error`, the token, its expiry and the check result
        on request."""
        if to not in STATES:
            raise InvalidInput("state", f"must be one of {', '.join(STATES)}")
        when = utc(at, "at")
        bi = t.boot_installs
        values: dict[str, object] = {"state": to, f"{to}_at": when, "updated_at": when}
        if error is not None:
            values["error"] = error
        if clear_token:
            values.update(token_hash=None, token_expires_at=None)
        if check is not None:
            values.update(check_ok=check[0], check_detail=check[1])
        if token_expires_at is not None:
            values["token_expires_at"] = utc(token_expires_at, "token_expires_at")
        where = [bi.c.host == host, bi.c.state.in_(expect)]
        if token_hash is not None:
            where.append(bi.c.token_hash == token_hash)
        with self._tx(f"move the install of {host!r} to {to}", write=True) as conn:
            moved = conn.execute(update(bi).where(*where).values(**values)).rowcount
            row = conn.execute(_select().where(bi.c.host == host)).first()
        if row is None:
            raise NotFound(f"no install is planned for {host!r}")
        rec = _record(row)
        if not moved and rec.state in expect:
            raise Conflict(f"install of {host!r}: its token was replaced (the machine fetched "
                           f"its script again): cannot move it to {to}")
        if not moved:
            raise Conflict(f"install of {host!r} is {rec.state}, not "
                           f"{' or '.join(expect)}: cannot move it to {to}")
        return rec

    @contextmanager
    def enrolment_claim(self, host: str) -> Iterator[bool]:
        """Whether this process may enrol `host` now (yields True or False), for the length of
        the block. On PostgreSQL a session advisory lock, tried without waiting: two replicas
        never enrol one host at once, and PostgreSQL drops the lock itself when its holder's
        connection goes, so the host of a replica killed mid-enrolment is free at once. On
        SQLite always True (one `boot serve` per SQLite store)."""
        if self._backend != "postgresql":
            yield True
            return
        keys = {"c": PG_ENROL_CLASS, "k": zlib.crc32(host.encode()) - 2**31}
        what = f"claim the enrolment of {host!r}"
        try:
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except SQLAlchemyError as exc:
            raise StoreError(f"{what}: {one_line(exc)}") from None
        with conn:
            try:
                held = bool(conn.execute(text("SELECT pg_try_advisory_lock(:c, :k)"),
                                         keys).scalar())
            except SQLAlchemyError as exc:
                raise StoreError(f"{what}: {one_line(exc)}") from None
            try:
                yield held
            finally:
                if held:
                    try:
                        conn.execute(text("SELECT pg_advisory_unlock(:c, :k)"), keys)
                    except SQLAlchemyError:
                        conn.invalidate()  # closed, not pooled: the lock goes with it

    def count_installs(self) -> int:
        """How many installs are recorded: one cheap read, for boot serve's health check."""
        with self._tx("count network installs", write=False) as conn:
            return int(conn.execute(select(func.count()).select_from(t.boot_installs))
                       .scalar_one())

    def add_install_refusals(self, counts: Mapping[str, tuple[int, int]], at: datetime) -> None:
        """Add (refused, limited) request counts to each named host's row, in one transaction
        (boot serve collects them in memory and writes them about once a second)."""
        when = utc(at, "at")
        bi = t.boot_installs
        with self._tx("record refused boot requests", write=True) as conn:
            for host, (refused, limited) in counts.items():
                conn.execute(update(bi).where(bi.c.host == host).values(
                    refused=bi.c.refused + refused, limited=bi.c.limited + limited,
                    updated_at=when))

    def record_install_check(self, host: str, ok: bool, detail: str, at: datetime) -> None:
        """The latest `host check` of an enrolled host (it is retried until its first boot)."""
        when = utc(at, "at")
        bi = t.boot_installs
        with self._tx(f"record the host check of {host!r}", write=True) as conn:
            conn.execute(update(bi).where(bi.c.host == host).values(
                check_ok=ok, check_detail=detail, updated_at=when))
