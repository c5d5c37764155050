"""Fencing tokens on the controller's writes (docs/scale-out.md).

A controller on a PostgreSQL store acts for the shards (sites) whose leases it holds. Its store
object is `store.fenced(tokens)`: every write it makes for a hypervisor (observations, HA
states, HA definitions, recovery journal steps) first checks, in the same transaction, that the
host's site is still leased to this controller under the token it was given and that the lease
has not expired (by the database's clock). On PostgreSQL the lease row is read FOR SHARE, so a
takeover (which locks it FOR UPDATE) waits for a write already checked to commit, and every
write after the takeover is refused: a controller that was paused past its lease cannot write
what it decided before the pause.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, func, select

from virtfleet.errors import StaleLease
from virtfleet.inventory import tables as t

CHUNK = 500


@dataclass(frozen=True)
class Lease:
    """One shard's lease row."""

    shard: str
    holder: str | None
    token: int
    acquired_at: datetime
    expires_at: datetime

    def as_json(self) -> dict[str, object]:
        return {"shard": self.shard, "holder": self.holder, "token": self.token,
                "acquired_at": self.acquired_at.isoformat(),
                "expires_at": self.expires_at.isoformat()}


@dataclass(frozen=True)
class LeaseRow:
    """A lease row as read (locked) inside a transaction."""

    holder: str | None
    token: int
    acquired_at: datetime
    expires_at: datetime


class ShardTokens:
    """The leases one controller holds (shard -> fencing token), shared by its threads."""

    def __init__(self, holder: str) -> None:
        self.holder = holder
        self._lock = threading.Lock()
        self._tokens: dict[str, int] = {}

    def set(self, shard: str, token: int) -> None:
        with self._lock:
            self._tokens[shard] = token

    def drop(self, shard: str) -> None:
        with self._lock:
            self._tokens.pop(shard, None)

    def get(self, shard: str) -> int | None:
        with self._lock:
            return self._tokens.get(shard)

    def held(self) -> dict[str, int]:
        with self._lock:
            return dict(self._tokens)


def db_now(conn: Connection) -> datetime:
    """The database's clock on PostgreSQL (controllers on several machines agree on it); this
    machine's on SQLite, where every controller is on this machine anyway."""
    if conn.dialect.name == "postgresql":
        value = conn.execute(select(func.now())).scalar_one()
        assert isinstance(value, datetime)
        return value.astimezone(UTC)
    return datetime.now(UTC)


def sites_of(conn: Connection, hosts: Iterable[str]) -> set[str]:
    """The sites of the named hypervisors (a name not in the inventory has none)."""
    names = list(dict.fromkeys(hosts))
    h = t.hypervisors
    found: set[str] = set()
    for i in range(0, len(names), CHUNK):
        found.update(conn.execute(
            select(t.sites.c.name).select_from(
                h.join(t.pods, h.c.pod_id == t.pods.c.id)
                .join(t.sites, t.pods.c.site_id == t.sites.c.id))
            .where(h.c.name.in_(names[i:i + CHUNK]))).scalars())
    return found


def check(conn: Connection, tokens: ShardTokens, hosts: Iterable[str]) -> None:
    """StaleLease unless every named host's site is leased to `tokens.holder` under the token
    it holds, unexpired. Runs inside the caller's write transaction."""
    check_shards(conn, tokens, sites_of(conn, hosts))


def check_shards(conn: Connection, tokens: ShardTokens, shards: Iterable[str]) -> None:
    now = db_now(conn)
    sl = t.shard_leases
    for shard in sorted(shards):
        held = tokens.get(shard)
        stmt = select(sl.c.holder, sl.c.token, sl.c.expires_at).where(sl.c.shard == shard)
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update(read=True)  # a takeover waits for this write
        row = conn.execute(stmt).first()
        if held is None:
            raise StaleLease(f"site {shard!r}: this controller holds no lease on it; write "
                             "refused")
        if row is None or row.holder != tokens.holder or row.token != held:
            now_held = "nobody" if row is None or row.holder is None else row.holder
            current = 0 if row is None else row.token
            raise StaleLease(f"site {shard!r}: fencing token {held} is stale (the lease is at "
                             f"token {current}, held by {now_held}); write refused")
        if row.expires_at <= now:
            raise StaleLease(f"site {shard!r}: the lease under fencing token {held} expired "
                             f"at {row.expires_at.isoformat()}; write refused")
