"""The controller's in-memory view of the fleet: per host, its domains and when they were seen.

Kept apart from the service so it can be tested without threads or HTTP. Every method takes
the lock; readers get copies, so a query never sees a host half-updated.

A host whose last attempt failed (or whose connection libvirt closed) keeps the VMs it last
reported, but they are served with state UNKNOWN: what they are doing now nobody can say, and a
VM shown "running" on a hung hypervisor would be served as fresh when it is not.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from virtfleet.inventory.records import DomainRecord, FleetVM, HostFailure, HostRecord


@dataclass
class HostView:
    record: HostRecord
    domains: dict[str, DomainRecord] = field(default_factory=dict)  # uuid -> record
    observed_at: datetime | None = None
    error: str = ""
    error_kind: str = ""
    failed_at: datetime | None = None
    down_since: datetime | None = None  # the first failure since it last answered


UNKNOWN = "unknown"  # the state shown for a VM on a host that stopped answering


class FleetState:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hosts: dict[str, HostView] = {}
        self.version = 0  # bumped on every change, so readers can cache what they derive

    def set_inventory(self, hosts: list[HostRecord]
                      ) -> tuple[list[HostRecord], list[HostRecord]]:
        """Adopt the inventory; return (hosts new or changed, hosts gone or whose URI changed)."""
        with self._lock:
            wanted = {h.name: h for h in hosts}
            gone = [v.record for n, v in self._hosts.items()
                    if n not in wanted or wanted[n].uri != v.record.uri]
            for rec in gone:
                del self._hosts[rec.name]
            fresh: list[HostRecord] = []
            regrouped = False
            for name, rec in wanted.items():
                view = self._hosts.get(name)
                if view is None:
                    self._hosts[name] = HostView(rec)
                    fresh.append(rec)
                elif view.record != rec:
                    view.record = rec  # site/pod/groups may have changed; domains stay
                    regrouped = True
            # The inventory is read again every few seconds and is mostly the same: a version
            # bumped each time would make every reader derive its view anew (15,000 rows).
            if fresh or gone or regrouped:
                self.version += 1
            return fresh, gone

    def hosts(self) -> list[HostRecord]:
        with self._lock:
            return [v.record for v in self._hosts.values()]

    def replace(self, host: str, domains: list[DomainRecord], at: datetime) -> None:
        """The host's full list as read at `at` (when its answer arrived)."""
        with self._lock:
            self.version += 1
            view = self._hosts.get(host)
            if view is None:
                return
            view.domains = {d.uuid: d for d in domains}
            view.observed_at = at
            # An answer read before the host failed must not make it look healthy again.
            if view.failed_at is None or at >= view.failed_at:
                view.error = view.error_kind = ""
                view.failed_at = view.down_since = None

    def upsert(self, host: str, domain: DomainRecord, at: datetime) -> None:
        """One VM as just seen on `host`. Other hosts keep theirs: during a migration, or with
        a disk defined on two hosts, the VM really is on both until one says otherwise."""
        with self._lock:
            self.version += 1
            view = self._hosts.get(host)
            if view is not None:
                view.domains[domain.uuid] = domain
                view.observed_at = at

    def delete(self, host: str, uuid: str, at: datetime) -> None:
        with self._lock:
            self.version += 1
            view = self._hosts.get(host)
            if view is not None:
                view.domains.pop(uuid, None)
                view.observed_at = at

    def domain(self, host: str, uuid: str) -> DomainRecord | None:
        """One VM as last seen on `host` (its own state, even if the host is lost since)."""
        with self._lock:
            view = self._hosts.get(host)
            return view.domains.get(uuid) if view is not None else None

    def fail(self, host: str, error: str, kind: str, at: datetime) -> None:
        """The host did not answer (or its connection was lost) at `at`."""
        with self._lock:
            self.version += 1
            view = self._hosts.get(host)
            if view is not None:
                if not view.error:
                    view.down_since = at
                view.error, view.error_kind = error, kind
                view.failed_at = at if view.failed_at is None else max(view.failed_at, at)

    def vms(self, hosts: set[str] | None = None, state: str | None = None) -> list[FleetVM]:
        with self._lock:
            out = [
                FleetVM(host=v.record.name, site=v.record.site, pod=v.record.pod, domain=d,
                        observed_at=v.observed_at)
                for v in self._hosts.values() if hosts is None or v.record.name in hosts
                for d in (_unknown(v.domains.values()) if v.error else v.domains.values())
                if state is None or d.state == state
            ]
        out.sort(key=lambda x: (x.site, x.pod, x.host, x.domain.name))
        return out

    def lost(self) -> dict[str, datetime]:
        """Hosts whose last attempt failed, and since when they have not answered."""
        with self._lock:
            return {n: v.down_since or v.failed_at or datetime.now(UTC)
                    for n, v in self._hosts.items() if v.error}

    def tried(self) -> list[str]:
        """Hosts asked at least once (answered or failed): a site just taken over from another
        controller is not in the view until its hosts are."""
        with self._lock:
            return sorted(n for n, v in self._hosts.items()
                          if v.observed_at is not None or v.failed_at is not None)

    def failures(self, hosts: set[str] | None = None) -> list[HostFailure]:
        """Hosts whose last attempt failed."""
        with self._lock:
            return [HostFailure(n, v.error_kind, v.error)
                    for n, v in self._hosts.items() if v.error and (hosts is None or n in hosts)]


def _unknown(domains: Iterable[DomainRecord]) -> list[DomainRecord]:
    return [replace(d, state=UNKNOWN, id=None) for d in domains]
