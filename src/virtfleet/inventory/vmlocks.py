"""The store's part for VM locks: one operation at a time on a VM, fleet-wide (provision/locks.py
takes and releases them around each operation)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import delete, select

from virtfleet.errors import Busy
from virtfleet.inventory import tables as t
from virtfleet.inventory.base import StoreBase, utc
from virtfleet.inventory.records import VMLock


class LockStore(StoreBase):
    """vm_locks reads and writes."""

    def lock_vm(self, vm: str, operation: str, hostname: str, pid: int, at: datetime,
                stale: Callable[[VMLock], bool]) -> None:
        """Take `vm` for `operation`, or raise Busy naming who holds it.

        A holder `stale` judges dead (its process is gone, or it is far too old) is replaced,
        in the same transaction, so a killed CLI never blocks a VM for good.
        """
        when = utc(at, "at")
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
