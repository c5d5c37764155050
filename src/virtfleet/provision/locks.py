"""One operation at a time on a VM, across every operator and machine sharing the store.

A second `vm shutdown web01` while the first is still waiting, or a snapshot revert during a
create, gets a clear 'busy' error naming the holder instead of racing it. A lock whose holder
died (same machine, process gone), or another machine's that is over an hour old, is taken
over.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from virtfleet.inventory.records import VMLock
from virtfleet.inventory.store import Store
from virtfleet.pids import pid_alive

STALE_AFTER = timedelta(hours=1)


def holder_alive(hostname: str, pid: int, since: datetime) -> bool:
    """Whether the holder may still be at work: on this machine, whether its process exists
    (however long it has run: sealing a large template takes a while); on another machine,
    which cannot be asked, whether it started less than STALE_AFTER ago."""
    if hostname == socket.gethostname():
        return pid_alive(pid)
    return datetime.now(UTC) - since <= STALE_AFTER


def _stale(lock: VMLock) -> bool:
    return not holder_alive(lock.hostname, lock.pid, lock.acquired_at)


@contextmanager
def vm_lock(store: Store, vm: str, operation: str) -> Iterator[None]:
    host, pid = socket.gethostname(), os.getpid()
    store.lock_vm(vm, operation, host, pid, datetime.now(UTC), _stale)
    try:
        yield
    finally:
        store.unlock_vm(vm, host, pid)
