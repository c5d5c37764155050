"""One operation at a time on a VM, across every operator and machine sharing the store.

A second `vm shutdown web01` while the first is still waiting, or a snapshot revert during a
create, gets a clear 'busy' error naming the holder instead of racing it. A lock whose holder
died (same machine, process gone) or that is over an hour old is taken over.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from virtfleet.inventory.records import VMLock
from virtfleet.inventory.store import Store

STALE_AFTER = timedelta(hours=1)


def _stale(lock: VMLock) -> bool:
    if lock.hostname == socket.gethostname():
        try:
            os.kill(lock.pid, 0)
        except ProcessLookupError:
            return True  # its process is gone
        except PermissionError:
            pass  # alive, another user's
    return datetime.now(UTC) - lock.acquired_at > STALE_AFTER


@contextmanager
def vm_lock(store: Store, vm: str, operation: str) -> Iterator[None]:
    host, pid = socket.gethostname(), os.getpid()
    store.lock_vm(vm, operation, host, pid, datetime.now(UTC), _stale)
    try:
        yield
    finally:
        store.unlock_vm(vm, host, pid)
