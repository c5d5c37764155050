"""What runs where, fleet-wide: `list` every VM, and `sync` what the hypervisors have into the
store.

A plain list asks a running controller on this store first (warm: each row as old as the
controller's last reading), then the hypervisors themselves; `live` skips the controller and
`store` asks nobody, reading what the last sync or controller wrote. `sync` goes through a
running controller too, so its own view is refreshed as well.

This module is imported by every `list`: a warm answer reads the controller's registration
with the standard library (inventory/registration.py) and opens neither the store nor any
hypervisor, so what it needs for those is imported only on the way to them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from virtfleet.errors import HostUnavailable, InvalidInput, NotFound
from virtfleet.inventory.records import STATES, HostFailure, HostRecord

if TYPE_CHECKING:
    from virtfleet.fleet.scope import Progress
    from virtfleet.inventory.records import ControllerRecord
    from virtfleet.inventory.store import Store

SOURCES = ("auto", "live", "store")


@dataclass(frozen=True)
class ListRequest:
    """The VMs of the fleet, or of a site, pod, host or group, or in one state."""

    site: str | None = None
    pod: str | None = None
    host: str | None = None
    group: str | None = None
    state: str | None = None  # virsh's words: running, shut off, ...
    source: str = "auto"  # auto: a running controller, else the hypervisors; live; store

    def check(self) -> None:
        if self.state is not None and self.state not in STATES:
            raise InvalidInput("state", f"{self.state!r} is not one of: {', '.join(STATES)}")
        if self.source not in SOURCES:
            raise InvalidInput("source", f"{self.source!r} is not one of {', '.join(SOURCES)}")

    @property
    def scope(self) -> dict[str, str | None]:
        return {"site": self.site, "pod": self.pod, "host": self.host, "group": self.group}


class VMList:
    """The VMs in scope, as `FleetVM.as_json()` objects: the shape of `list --json`.

    From a running controller the rows come encoded (as `json.dumps(rows)` writes them) and
    are parsed only when `vms` is read: a script's `list --json` passes them on as they came,
    15,000 rows never parsed or encoded again.
    """

    def __init__(self, vms: tuple[dict[str, Any], ...] | bytes, failed: tuple[HostFailure, ...],
                 source: str, notes: tuple[str, ...] = (), hosts: int = 0) -> None:
        # the rows as `json.dumps(rows)` writes them, if they came so
        self.encoded = vms if isinstance(vms, bytes) else None
        self._vms = None if isinstance(vms, bytes) else vms
        self.failed = failed  # hosts that did not answer (or, from the store, last time)
        self.source = source  # where the rows came from: controller, live or store
        self.notes = notes  # why a running controller was not the source
        self.hosts = hosts  # the hypervisors in scope (asked), those in `failed` included

    @property
    def vms(self) -> tuple[dict[str, Any], ...]:
        if self._vms is None:
            self._vms = tuple(json.loads(self.encoded or b"[]"))
        return self._vms

    def as_json(self) -> dict[str, object]:
        return {"source": self.source, "vms": list(self.vms), "hosts": self.hosts,
                "failed": [f.as_json() for f in self.failed]}


@dataclass(frozen=True)
class Synced:
    hosts: int  # asked
    vms: int  # recorded
    failed: tuple[HostFailure, ...]
    notes: tuple[str, ...] = ()  # why a running controller did not do it

    def as_json(self) -> dict[str, object]:
        return {"hosts": self.hosts, "vms": self.vms,
                "failed": [f.as_json() for f in self.failed]}


class OverviewService:
    """`store` opens the store on first use; a warm list never calls it."""

    def __init__(self, db_url: str, store: Callable[[], Store]) -> None:
        self.db_url = db_url
        self.store = store

    def list_vms(self, req: ListRequest, progress: Progress | None = None) -> VMList:
        req.check()
        if req.source == "store":
            return self._from_store(req)
        notes: list[str] = []
        if req.source != "live" and self.db_url.startswith("postgresql"):
            # Several controllers may share it, each with its own sites (fleet/shardlist.py).
            from virtfleet.fleet.shardlist import from_controllers

            found = from_controllers(self.store(), req, notes, progress)
        else:
            found = None if req.source == "live" else self._from_controller(req, notes)
        return found or self._live(req, notes, progress)

    def _registration(self) -> ControllerRecord | None:
        import sqlite3

        from virtfleet.inventory.registration import registration_from_sqlite

        try:
            return registration_from_sqlite(self.db_url)
        except sqlite3.Error:
            return self.store().controller()

    def _from_controller(self, req: ListRequest, notes: list[str]) -> VMList | None:
        """The fleet view from a running controller, or None if there is none to ask."""
        from virtfleet.controller.client import ControllerClient, heartbeat_fresh, is_dead, is_live

        rec = self._registration()
        if rec is None or not is_live(rec):
            if rec is not None and heartbeat_fresh(rec) and is_dead(rec):
                notes.append(f"the controller (pid {rec.pid}) is gone; asking the hypervisors "
                             "directly")
            return None
        try:
            data, rows = ControllerClient(rec).vm_rows(**req.scope, state=req.state)
        except HostUnavailable as exc:
            notes.append(f"{exc.message}; asking the hypervisors directly")
            return None
        except NotFound:
            return None  # e.g. a host applied seconds ago that the controller has not loaded
        failed = tuple(HostFailure(f["host"], f["kind"], f["error"]) for f in data["failed"])
        return VMList(rows, failed, "controller", hosts=len(self._hosts(req)))

    def _live(self, req: ListRequest, notes: list[str], progress: Progress | None) -> VMList:
        from virtfleet.fleet.observed import observe
        from virtfleet.fleet.queries import counting, failures, fleet_vms

        hosts = self._hosts(req)
        results = observe(hosts, progress=counting(progress, "list", len(hosts)))
        rows = tuple(v.as_json() for v in fleet_vms(results)
                     if req.state is None or v.domain.state == req.state)
        return VMList(rows, tuple(failures(results)), "live", tuple(notes), hosts=len(hosts))

    def _hosts(self, req: ListRequest) -> list[HostRecord]:
        """The hypervisors in scope: from a SQLite store with sqlite3 when it can be (a cold
        list then never imports SQLAlchemy), else from the Store."""
        import sqlite3

        from virtfleet.inventory.topology_sqlite import hypervisors_from_sqlite

        try:
            return hypervisors_from_sqlite(self.db_url, **req.scope)
        except sqlite3.Error:
            return self.store().hypervisors(**req.scope)

    def _from_store(self, req: ListRequest) -> VMList:
        store = self.store()
        vms = store.fleet_vms(**req.scope, state=req.state)
        in_scope = {h.name for h in store.hypervisors(**req.scope)}
        failed = tuple(HostFailure(s.host, "host-unavailable", s.error)
                       for s in store.host_statuses() if not s.reachable and s.host in in_scope)
        return VMList(tuple(v.as_json() for v in vms), failed, "store", hosts=len(in_scope))

    def sync(self, progress: Progress | None = None) -> Synced:
        """Every hypervisor's VMs into the store: through a running controller, else here."""
        from virtfleet.controller.client import ControllerClient, is_live

        if self.db_url.startswith("postgresql"):  # each controller syncs its own sites
            from virtfleet.fleet.shardlist import sync_through_controllers

            return sync_through_controllers(self.store(), progress)
        rec = self.store().controller()
        if rec is not None and is_live(rec):
            try:
                data = ControllerClient(rec).sync()
            except HostUnavailable as exc:
                return self._sync_here(progress, (f"{exc.message}; syncing from here",))
            return Synced(int(data["hosts"]), int(data["vms"]), tuple(
                HostFailure(f["host"], f["kind"], f["error"]) for f in data["failed"]))
        return self._sync_here(progress)

    def _sync_here(self, progress: Progress | None, notes: tuple[str, ...] = ()) -> Synced:
        from virtfleet.fleet.observed import sync
        from virtfleet.fleet.queries import counting, failures

        store = self.store()
        hosts = store.hypervisors()
        results = sync(store, hosts, progress=counting(progress, "sync", len(hosts)))
        vms = sum(len(r.value) for r in results if r.value is not None)
        return Synced(len(results), vms, tuple(failures(results)), notes)
