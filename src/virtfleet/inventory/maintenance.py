"""The store's part for host maintenance: hypervisors an operator took out of service.

A mixin of Store (it uses Store's transactions), like installs.py. A hypervisor is in
maintenance if the fleet file says so (hypervisors.maintenance, rewritten by every `apply`) or
an operator said so with `virtfleet host maintenance` (a host_maintenance row, which only
`host activate` removes). Store.hypervisors() reports either as HostRecord.maintenance, which
is what placement reads.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, delete, select

from virtfleet.errors import InvalidInput, NotFound
from virtfleet.inventory import tables as t


@dataclass(frozen=True)
class MaintenanceRecord:
    host: str
    since: datetime
    hostname: str  # the machine whose operator set it
    pid: int
    reason: str

    def as_json(self) -> dict[str, object]:
        return {"host": self.host, "since": self.since.isoformat(), "hostname": self.hostname,
                "pid": self.pid, "reason": self.reason}


class MaintenanceStore:
    """host_maintenance reads and writes; mixed into Store, which provides _tx."""

    def _tx(self, what: str, *, write: bool) -> AbstractContextManager[Connection]:
        raise NotImplementedError  # Store's

    @staticmethod
    def _host_id(conn: Connection, host: str) -> int:
        hid = conn.execute(select(t.hypervisors.c.id)
                           .where(t.hypervisors.c.name == host)).scalar()
        if hid is None:
            raise NotFound(f"hypervisor {host!r} is not in the inventory")
        return int(hid)

    def start_maintenance(self, host: str, at: datetime, hostname: str, pid: int,
                          reason: str = "") -> bool:
        """Take `host` out of service. False if it already was (the first record stays)."""
        if at.tzinfo is None or at.utcoffset() is None:
            raise InvalidInput("at", "must be a timezone-aware datetime (UTC)")
        if len(reason) > 1000 or any(ord(c) < 32 for c in reason):
            raise InvalidInput("reason", "at most 1000 characters, on one line")
        hm = t.host_maintenance
        with self._tx(f"put {host!r} in maintenance", write=True) as conn:
            hid = self._host_id(conn, host)
            if conn.execute(select(hm.c.hypervisor_id)
                            .where(hm.c.hypervisor_id == hid)).first() is not None:
                return False
            conn.execute(hm.insert().values(hypervisor_id=hid, since=at.astimezone(UTC),
                                            hostname=hostname, pid=pid, reason=reason))
        return True

    def end_maintenance(self, host: str) -> bool:
        """Put `host` back in service. False if an operator had not taken it out."""
        hm = t.host_maintenance
        with self._tx(f"activate {host!r}", write=True) as conn:
            hid = self._host_id(conn, host)
            return bool(conn.execute(delete(hm).where(hm.c.hypervisor_id == hid)).rowcount)

    def maintenance_records(self, host: str | None = None) -> list[MaintenanceRecord]:
        """Hypervisors an operator took out of service, by name."""
        hm, h = t.host_maintenance, t.hypervisors
        stmt = (select(h.c.name, hm.c.since, hm.c.hostname, hm.c.pid, hm.c.reason)
                .join_from(hm, h).order_by(h.c.name))
        with self._tx("read host maintenance", write=False) as conn:
            if host is not None:
                self._host_id(conn, host)
                stmt = stmt.where(h.c.name == host)
            rows = conn.execute(stmt).all()
        return [MaintenanceRecord(host=r[0], since=r[1], hostname=r[2], pid=int(r[3]),
                                  reason=r[4]) for r in rows]
