"""The fleet view as the REST API reads it: rows ready to serve, where each VM is, which hosts
exist, all derived once per change of the controller's state (controller/state.py bumps a
version on every change), so a page of `GET /api/v1/vms` over 15,000 VMs is a filter and a
slice, not 15,000 objects built and sorted per request.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from virtfleet.controller.state import FleetState
from virtfleet.errors import InvalidInput, NotFound
from virtfleet.fleet.roles import Reach
from virtfleet.inventory.records import STATES, HostFailure, HostRecord
from virtfleet.validate import check_name


@dataclass(frozen=True)
class Snapshot:
    version: int
    rows: tuple[dict[str, Any], ...]  # FleetVM.as_json(), sorted by site, pod, host, name
    hosts: dict[str, HostRecord]
    by_name: dict[str, tuple[str, ...]]  # VM name -> the hosts it is on
    failed: tuple[HostFailure, ...]


@dataclass(frozen=True)
class VMFilter:
    """Which VMs a list wants: each filter given applies; `name` may be a glob (web-*)."""

    site: str | None = None
    pod: str | None = None
    host: str | None = None
    group: str | None = None
    state: str | None = None
    name: str | None = None

    def check(self) -> None:
        for key in ("site", "pod", "host", "group"):
            value = getattr(self, key)
            if value is not None:
                check_name(key, value)
        if self.state is not None and self.state not in (*STATES, "unknown"):
            raise InvalidInput("state", f"{self.state!r} is not one of: "
                               f"{', '.join(STATES)}, unknown")
        if self.name is not None and (not self.name or len(self.name) > 253
                                      or not self.name.isprintable()):
            raise InvalidInput("name", "a VM name or a glob (web-*), at most 253 characters")


class FleetView:
    def __init__(self, state: FleetState) -> None:
        self.state = state
        self._lock = threading.Lock()
        self._snap: Snapshot | None = None

    def snapshot(self) -> Snapshot:
        """The view as of the state's current version (derived again only after a change)."""
        version = self.state.version
        snap = self._snap
        if snap is not None and snap.version == version:
            return snap
        with self._lock:  # one thread derives it; the others wait and share it
            snap = self._snap
            if snap is None or snap.version != version:
                snap = self._derive()
                self._snap = snap
            return snap

    def _derive(self) -> Snapshot:
        version = self.state.version  # read first: a change while deriving derives again
        vms = self.state.vms()
        by_name: dict[str, list[str]] = {}
        for v in vms:
            by_name.setdefault(v.domain.name, []).append(v.host)
        return Snapshot(version, tuple(v.as_json() for v in vms),
                        {h.name: h for h in self.state.hosts()},
                        {n: tuple(hs) for n, hs in by_name.items()},
                        tuple(self.state.failures()))

    def hosts_in(self, snap: Snapshot, f: VMFilter, reach: Reach) -> set[str]:
        """The hosts a filter and a caller's reach leave; NotFound for a site, pod, host or
        group the inventory does not have."""
        hosts = snap.hosts.values()
        for label, value, key in (("site", f.site, "site"), ("pod", f.pod, "pod"),
                                  ("hypervisor", f.host, "name")):
            if value and not any(getattr(h, key) == value for h in hosts):
                raise NotFound(f"{label} {value!r} is not in the inventory")
        if f.group and not any(f.group in h.groups for h in hosts):
            raise NotFound(f"group {f.group!r} is not in the inventory")
        return {h.name for h in hosts
                if (not f.site or h.site == f.site) and (not f.pod or h.pod == f.pod)
                and (not f.host or h.name == f.host) and (not f.group or f.group in h.groups)
                and reach.covers_host(h)}

    def vms(self, f: VMFilter, reach: Reach) -> tuple[Snapshot, Sequence[dict[str, Any]]]:
        """The rows a filter and a caller's reach leave, in the view's order."""
        snap = self.snapshot()
        everything = reach.everywhere and not (f.site or f.pod or f.host or f.group)
        if everything and f.state is None and f.name is None:
            return snap, snap.rows  # the common case: nothing to filter
        hosts = None if everything else self.hosts_in(snap, f, reach)
        glob = f.name is not None and any(ch in f.name for ch in "*?[")
        rows = [r for r in snap.rows
                if (hosts is None or r["host"] in hosts)
                and (f.state is None or r["state"] == f.state)
                and (f.name is None or (fnmatchcase(r["name"], f.name) if glob
                                        else r["name"] == f.name))]
        return snap, rows

    def holders(self, name: str) -> list[HostRecord]:
        """The hosts the view has VM `name` on."""
        snap = self.snapshot()
        return [snap.hosts[h] for h in snap.by_name.get(name, ()) if h in snap.hosts]

    def host(self, name: str) -> HostRecord:
        rec = self.snapshot().hosts.get(name)
        if rec is None:
            raise NotFound(f"hypervisor {name!r} is not in the inventory")
        return rec
