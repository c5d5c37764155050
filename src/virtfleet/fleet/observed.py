"""What the fleet's hypervisors say they run, read and written into the store the same way for
`sync` and for the controller: its syncs, its lifecycle events and its lost connections."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from virtfleet.errors import NotFound
from virtfleet.inventory.records import DomainRecord, HostRecord, HostStatus
from virtfleet.virt.fanout import ConnectionPool, HostResult, fan_out
from virtfleet.virt.host import Host

if TYPE_CHECKING:  # the store only as a type: a cold list reads hosts without SQLAlchemy
    from virtfleet.inventory.store import Store

Seen = HostResult[list[DomainRecord]]


def observe(hosts: Sequence[HostRecord], pool: ConnectionPool | None = None, *,
            on_connection: Callable[[Host], None] | None = None,
            progress: Callable[[Seen], None] | None = None,
            roles: bool = False) -> list[Seen]:
    """Every host's domains, each with the time its own answer arrived. `pool`: a long-lived
    one to reuse (the controller's), else a one-shot pool for this read. `on_connection` runs
    on each host's connection before it is asked (the controller subscribes to its events
    there, so nothing that happens after the read is missed). `roles`: ask which shut-off
    domains are templates (Host.list_domains)."""
    def read(host: Host) -> list[DomainRecord]:
        if on_connection is not None:
            on_connection(host)
        return host.list_domains(roles)

    if pool is not None:
        return fan_out(hosts, read, pool, progress=progress)
    with ConnectionPool(one_shot=True) as own:
        return fan_out(hosts, read, own, progress=progress)


def sync(store: Store, hosts: Sequence[HostRecord], pool: ConnectionPool | None = None, *,
         on_connection: Callable[[Host], None] | None = None,
         progress: Callable[[Seen], None] | None = None) -> list[Seen]:
    """`observe`, then `record`: the hosts' VMs into the store."""
    results = observe(hosts, pool, on_connection=on_connection, progress=progress)
    record(store, results)
    return results


def record(store: Store, results: Sequence[Seen]) -> None:
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
            record_unreachable(store, r.host.name, r.error.in_row(r.host.name), r.at)


def record_unreachable(store: Store, host: str, why: str, at: datetime) -> None:
    """Host `host` did not answer (or its connection was lost) at `at`, for `why`; a host that
    left the inventory meanwhile is skipped."""
    with contextlib.suppress(NotFound):
        store.set_host_status(HostStatus(host, False, why, at))


def record_domain(store: Store, host: str, uuid: str, domain: DomainRecord | None,
                  at: datetime) -> None:
    """One domain as its host reported it at `at` (after a lifecycle event); None: it is gone
    from that host (undefined, or migrated away)."""
    if domain is None:
        store.delete_domain(host, uuid)
    else:
        store.upsert_domain(host, domain, at)
