"""The store's part for several controllers on one PostgreSQL store (docs/scale-out.md):
their registrations (controller_members) and the shard leases with fencing tokens
(shard_leases). A shard is a site.

- `join` / `leave`: a controller's registration, with its socket, pid and pinned sites.
- `claim_lease`: take a shard whose lease is free or expired; its token grows by one.
- `renew_leases`: extend the leases still held under the same tokens, and beat the member's
  heartbeat, in one transaction; a lease that expired is not renewed (it must be claimed
  again, under a new token), so a controller paused past its lease never carries on with the
  old token.
- `release_lease`: give a shard up (for balance, or on an orderly stop).
- `forget_members`: remove the registrations of controllers that stopped beating long ago
  (killed: nobody left).

Expiry is judged by the database's clock on PostgreSQL (fencing.db_now), so controllers on
several machines agree on it. Lease rows are locked FOR UPDATE while they change hands; writes
checked against them (fencing.py) hold them FOR SHARE.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Connection, delete, select, update

from virtfleet.errors import InvalidInput
from virtfleet.inventory import fencing
from virtfleet.inventory import tables as t
from virtfleet.inventory.base import StoreBase
from virtfleet.inventory.fencing import Lease, db_now
from virtfleet.inventory.records import ControllerRecord


@dataclass(frozen=True)
class Member:
    """One registered controller."""

    holder: str
    record: ControllerRecord
    sites: tuple[str, ...]  # pinned to these; () = any

    def as_json(self) -> dict[str, object]:
        r = self.record
        return {"holder": self.holder, "pid": r.pid, "hostname": r.hostname, "url": r.url,
                "sites": list(self.sites), "heartbeat_at": r.heartbeat_at.isoformat()}


def _ttl(seconds: float) -> timedelta:
    if not 0 < seconds <= 3600:
        raise InvalidInput("ttl", "must be above 0 and at most 3600 seconds")
    return timedelta(seconds=seconds)


class LeaseStore(StoreBase):
    """controller_members and shard_leases reads and writes."""

    # ------------------------------------------------------------------ members

    def join(self, holder: str, rec: ControllerRecord, sites: Sequence[str] = ()) -> None:
        """Register (or re-register) controller `holder`; its heartbeat is now."""
        m = t.controller_members
        with self._tx("register the controller", write=True) as conn:
            now = db_now(conn)
            conn.execute(delete(m).where(m.c.holder == holder))
            conn.execute(m.insert().values(
                holder=holder, url=rec.url, token=rec.token, pid=rec.pid,
                hostname=rec.hostname, sites=",".join(sites), started_at=rec.started_at,
                heartbeat_at=now))

    def leave(self, holder: str) -> None:
        """Unregister `holder` and release every lease it holds (an orderly stop)."""
        m, sl = t.controller_members, t.shard_leases
        with self._tx("unregister the controller", write=True) as conn:
            now = db_now(conn)
            conn.execute(update(sl).where(sl.c.holder == holder)
                         .values(holder=None, expires_at=now))
            conn.execute(delete(m).where(m.c.holder == holder))

    def forget_members(self, older_than: float) -> list[str]:
        """Remove the registrations that have not beaten for `older_than` seconds (controllers
        killed without an orderly stop); the holders removed. Nothing else reads them: a
        member is live only by a recent beat, and an operation whose owner has no row is an
        orphan as one with a stale row is."""
        if not older_than > 0:
            raise InvalidInput("older_than", "must be above 0 seconds")
        m = t.controller_members
        with self._tx("remove stale controller registrations", write=True) as conn:
            since = db_now(conn) - timedelta(seconds=older_than)
            return sorted(conn.execute(delete(m).where(m.c.heartbeat_at < since)
                                       .returning(m.c.holder)).scalars())

    def members(self, alive_within: float | None = None) -> list[Member]:
        """Registered controllers, by holder; with `alive_within`, only those that beat within
        that many seconds (by the database's clock)."""
        m = t.controller_members
        with self._tx("read the controllers", write=False) as conn:
            stmt = select(m).order_by(m.c.holder)
            if alive_within is not None:
                stmt = stmt.where(m.c.heartbeat_at > db_now(conn) - _ttl(alive_within))
            rows = conn.execute(stmt).all()
        return [Member(r.holder, ControllerRecord(
            url=r.url, token=r.token, pid=r.pid, hostname=r.hostname, started_at=r.started_at,
            heartbeat_at=r.heartbeat_at), tuple(s for s in r.sites.split(",") if s))
            for r in rows]

    def shard_names(self) -> list[str]:
        """Every shard of the estate: its sites, by name."""
        with self._tx("read the sites", write=False) as conn:
            return list(conn.execute(select(t.sites.c.name).order_by(t.sites.c.name))
                        .scalars())

    # ------------------------------------------------------------------ leases

    def leases(self) -> dict[str, Lease]:
        sl = t.shard_leases
        with self._tx("read the shard leases", write=False) as conn:
            rows = conn.execute(select(sl)).all()
        return {r.shard: Lease(r.shard, r.holder, r.token, r.acquired_at, r.expires_at)
                for r in rows}

    def claim_lease(self, holder: str, shard: str, ttl: float) -> Lease | None:
        """Take `shard` if nobody holds it or its lease expired: a new, higher fencing token.
        None if another controller holds it."""
        span = _ttl(ttl)
        sl = t.shard_leases
        with self._tx(f"claim site {shard!r}", write=True) as conn:
            now = db_now(conn)
            row = self._lock(conn, shard)
            if row is None:
                lease = Lease(shard, holder, 1, now, now + span)
                conn.execute(sl.insert().values(
                    shard=shard, holder=holder, token=1, acquired_at=now, expires_at=now + span))
                return lease
            if row.holder is not None and row.expires_at > now:
                return None
            lease = Lease(shard, holder, row.token + 1, now, now + span)
            conn.execute(update(sl).where(sl.c.shard == shard).values(
                holder=holder, token=lease.token, acquired_at=now, expires_at=lease.expires_at))
            return lease

    def renew_leases(self, holder: str, held: dict[str, int], ttl: float
                     ) -> tuple[dict[str, Lease], bool]:
        """Extend each lease of `held` (shard -> token) still this holder's under that token
        and unexpired; beat the member's heartbeat. Returns the leases kept, and whether the
        member is still registered (False: it was removed, it must not go on)."""
        span = _ttl(ttl)
        sl, m = t.shard_leases, t.controller_members
        kept: dict[str, Lease] = {}
        with self._tx("renew the shard leases", write=True) as conn:
            now = db_now(conn)
            member = conn.execute(update(m).where(m.c.holder == holder)
                                  .values(heartbeat_at=now)).rowcount == 1
            for shard, token in sorted(held.items()):
                row = self._lock(conn, shard)
                if (row is None or row.holder != holder or row.token != token
                        or row.expires_at <= now):
                    continue
                conn.execute(update(sl).where(sl.c.shard == shard)
                             .values(expires_at=now + span))
                kept[shard] = Lease(shard, holder, token, row.acquired_at, now + span)
        return kept, member

    def release_lease(self, holder: str, shard: str, token: int) -> bool:
        """Give `shard` up, if this holder still has it under `token`."""
        sl = t.shard_leases
        with self._tx(f"release site {shard!r}", write=True) as conn:
            now = db_now(conn)
            return conn.execute(update(sl).where(
                sl.c.shard == shard, sl.c.holder == holder, sl.c.token == token)
                .values(holder=None, expires_at=now)).rowcount == 1

    def check_lease(self, hosts: Iterable[str]) -> None:
        """StaleLease unless this (fenced) store's leases still cover `hosts`: asked before an
        action outside the store (a power-off) that no write of its own guards."""
        if self._fence is None:
            return
        with self._tx("check the shard lease", write=True) as conn:
            fencing.check(conn, self._fence, hosts)

    def holders(self, alive_within: float | None = None) -> dict[str, Member]:
        """site -> the registered controller whose unexpired lease covers it (sites without one
        are left out: a CLI asks their hypervisors itself); with `alive_within`, only one that
        beat within that many seconds.

        Without it the lease alone says the holder is live: its expiry is the holders' own
        TTL from their last renewal, which beat the member in the same transaction. So a CLI
        need not know the controllers' VIRTFLEET_LEASE_TTL (with a shorter one it took live
        controllers for dead and asked their hypervisors itself, silently)."""
        sl = t.shard_leases
        live = {m.holder: m for m in self.members(alive_within)}
        with self._tx("read the shard leases", write=False) as conn:
            now = db_now(conn)
            rows = conn.execute(select(sl.c.shard, sl.c.holder)
                                .where(sl.c.expires_at > now)).all()
        return {shard: live[h] for shard, h in rows if h in live}

    @staticmethod
    def _lock(conn: Connection, shard: str) -> fencing.LeaseRow | None:
        sl = t.shard_leases
        stmt = select(sl.c.holder, sl.c.token, sl.c.acquired_at, sl.c.expires_at).where(
            sl.c.shard == shard)
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()  # SQLite's BEGIN IMMEDIATE already serialises
        row = conn.execute(stmt).first()
        if row is None:
            return None
        return fencing.LeaseRow(row.holder, row.token, row.acquired_at, row.expires_at)

