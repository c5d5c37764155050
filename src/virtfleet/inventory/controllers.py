"""The store's part for controllers: the registration a CLI finds a running `virtfleet serve` by.

The table holds one row (id = 1): one controller per SQLite store. Taking the row over is a
compare-and-swap on the registration the new controller judged dead, so two controllers starting
at once cannot both win. Several controllers on one PostgreSQL store register in
controller_members instead (leases.py); `controller()` then answers with the one that beat
last, for the callers that want any live controller (events, `ha status`).
The CLI's warm path reads the same row without SQLAlchemy: inventory/registration.py.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete, select, update

from virtfleet.errors import Conflict, NotFound
from virtfleet.inventory import tables as t
from virtfleet.inventory.base import StoreBase, utc
from virtfleet.inventory.records import ControllerRecord


def already_running(rec: ControllerRecord, backend: str) -> str:
    """Why a second controller is refused; on SQLite, what would allow several."""
    why = (f"a controller is already running for this store: pid {rec.pid} on {rec.hostname} "
           f"at {rec.url}")
    if backend == "sqlite":
        why += "; several controllers need a PostgreSQL store (--db postgresql://...)"
    return why


class ControllerRegistry(StoreBase):
    """controller reads and writes."""

    def register_controller(self, rec: ControllerRecord,
                            replacing: ControllerRecord | None = None) -> None:
        """Record the running `virtfleet serve`.

        Succeeds only if the registration is still `replacing` (None: no registration at all),
        the one its caller looked at and judged dead or absent; otherwise Conflict naming the
        controller that registered in between.
        """
        row = {"id": 1, "url": rec.url, "token": rec.token, "pid": rec.pid,
               "hostname": rec.hostname, "started_at": utc(rec.started_at, "started_at"),
               "heartbeat_at": utc(rec.heartbeat_at, "heartbeat_at")}
        c = t.controller
        with self._tx("register the controller", write=True) as conn:
            current = self._read(conn, lock=True)
            # Its heartbeat too: one that beat again since was not dead after all.
            if current is not None and (replacing is None or
                                        (current.pid, current.hostname, current.heartbeat_at)
                                        != (replacing.pid, replacing.hostname,
                                            replacing.heartbeat_at)):
                raise Conflict(already_running(current, self._backend))
            conn.execute(delete(c).where(c.c.id == 1))
            conn.execute(c.insert().values(**row))

    def heartbeat_controller(self, pid: int, at: datetime) -> None:
        """Note that controller `pid` is alive. NotFound if another one has replaced it."""
        when = utc(at, "at")
        c = t.controller
        with self._tx("controller heartbeat", write=True) as conn:
            if conn.execute(update(c).where(c.c.pid == pid)
                            .values(heartbeat_at=when)).rowcount == 0:
                raise NotFound(f"no controller with pid {pid} is registered")

    def unregister_controller(self, pid: int) -> None:
        """Drop the registration if it is controller `pid`'s; otherwise leave it alone."""
        c = t.controller
        with self._tx("unregister the controller", write=True) as conn:
            conn.execute(delete(c).where(c.c.pid == pid))

    def controller(self) -> ControllerRecord | None:
        with self._tx("read the controller registration", write=False) as conn:
            rec = self._read(conn, lock=False)
            if rec is None and conn.dialect.name == "postgresql":
                m = t.controller_members
                row = conn.execute(select(m.c.url, m.c.token, m.c.pid, m.c.hostname,
                                          m.c.started_at, m.c.heartbeat_at)
                                   .order_by(m.c.heartbeat_at.desc()).limit(1)).first()
                if row is not None:
                    rec = ControllerRecord(url=row[0], token=row[1], pid=row[2],
                                           hostname=row[3], started_at=row[4],
                                           heartbeat_at=row[5])
            return rec

    @staticmethod
    def _read(conn: Connection, *, lock: bool) -> ControllerRecord | None:
        c = t.controller
        stmt = select(c.c.url, c.c.token, c.c.pid, c.c.hostname, c.c.started_at,
                      c.c.heartbeat_at).where(c.c.id == 1)
        if lock and conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()  # SQLite's BEGIN IMMEDIATE already serialises
        row = conn.execute(stmt).first()
        if row is None:
            return None
        return ControllerRecord(url=row[0], token=row[1], pid=row[2], hostname=row[3],
                                started_at=row[4], heartbeat_at=row[5])
