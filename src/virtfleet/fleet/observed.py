"""Writing what a fleet-wide read saw into the store, the same way for `sync` and the controller."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime

from virtfleet.errors import NotFound
from virtfleet.inventory.records import DomainRecord, HostStatus
from virtfleet.inventory.store import Store
from virtfleet.virt.fanout import HostResult


def record(store: Store, results: Sequence[HostResult[list[DomainRecord]]]) -> None:
    """Each host's domains (or its failure) at the time its own answer arrived.

    A host removed from the inventory while it was being asked (`apply` raced with us) is
    skipped, not a failed write for everyone else.
    """
    by_time: dict[datetime, dict[str, list[DomainRecord]]] = {}
    for r in results:
        if r.value is not None:
            by_time.setdefault(r.at, {})[r.host.name] = r.value
    for at, seen in by_time.items():
        store.replace_many(seen, at, skip_unknown=True)
    for r in results:
        if r.error is not None:
            message = r.error.in_row(r.host.name)
            with contextlib.suppress(NotFound):
                store.set_host_status(HostStatus(r.host.name, False, message, r.at))
