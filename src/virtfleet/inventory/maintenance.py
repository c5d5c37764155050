"""The store's part for host maintenance: hypervisors an operator took out of service.

A hypervisor is in maintenance if the fleet file says so (hypervisors.maintenance, rewritten by
every `apply`) or an operator said so with `virtfleet host maintenance` (a host_maintenance row,
which only `host activate` removes). Store.hypervisors() (topology.py) reports either as
HostRecord.maintenance, which is what placement reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select

from virtfleet.errors import InvalidInput
from virtfleet.inventory import tables as t
from virtfleet.inventory.base import StoreBase, utc


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


class MaintenanceStore(StoreBase):
    """host_maintenance reads and writes."""

    def start_maintenance(self, host: str, at: datetime, hostname: str, pid: int,
                          reason: str = "") -> bool:
        """Take `host` out of service. False if it already was (the first record stays)."""
        since = utc(at, "at")
        if len(reason) > 1000 or any(ord(c) < 32 for c in reason):
            raise InvalidInput("reason", "at most 1000 characters, on one line")
        hm = t.host_maintenance
        with self._tx(f"put {host!r} in maintenance", write=True) as conn:
            hid = self._host_ids(conn, [host])[host]
            if conn.execute(select(hm.c.hypervisor_id)
                            .where(hm.c.hypervisor_id == hid)).first() is not None:
                return False
            conn.execute(hm.insert().values(hypervisor_id=hid, since=since,
                                            hostname=hostname, pid=pid, reason=reason))
        return True

    def end_maintenance(self, host: str) -> bool:
        """Put `host` back in service. False if an operator had not taken it out."""
        hm = t.host_maintenance
        with self._tx(f"activate {host!r}", write=True) as conn:
            hid = self._host_ids(conn, [host])[host]
            return bool(conn.execute(delete(hm).where(hm.c.hypervisor_id == hid)).rowcount)

    def maintenance_records(self, host: str | None = None) -> list[MaintenanceRecord]:
        """Hypervisors an operator took out of service, by name."""
        hm, h = t.host_maintenance, t.hypervisors
        stmt = (select(h.c.name, hm.c.since, hm.c.hostname, hm.c.pid, hm.c.reason)
                .join_from(hm, h).order_by(h.c.name))
        with self._tx("read host maintenance", write=False) as conn:
            if host is not None:
                self._host_ids(conn, [host])[host]
                stmt = stmt.where(h.c.name == host)
            rows = conn.execute(stmt).all()
        return [MaintenanceRecord(host=r[0], since=r[1], hostname=r[2], pid=int(r[3]),
                                  reason=r[4]) for r in rows]
