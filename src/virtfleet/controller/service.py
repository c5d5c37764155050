"""`virtfleet serve`: one long-lived process that keeps the fleet view current.

It holds one connection per hypervisor (the pool), follows libvirt lifecycle events, resyncs
hosts whose connection died or that were never seen (with backoff for hosts that keep failing),
periodically resyncs everyone to catch anything an event missed, writes what it learns to the
store, and answers queries over a small HTTP API on loopback (controller/api.py) so a CLI does
not have to open 1,500 connections.

Ordering: full syncs and event handling take the same lock, so an event that arrives while a
sync is reading is applied after that sync's (older) snapshot, never before it.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import socket
import threading
import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime

from virtfleet.config import Timeouts
from virtfleet.controller.client import is_live
from virtfleet.controller.state import FleetState
from virtfleet.errors import Conflict, NotFound, VirtfleetError
from virtfleet.inventory.records import ControllerRecord, DomainRecord, HostRecord
from virtfleet.inventory.store import Store
from virtfleet.observed import record
from virtfleet.virt.fanout import ConnectionPool, HostResult, fan_out
from virtfleet.virt.host import Host

log = logging.getLogger("virtfleet.controller")

HEARTBEAT_SECONDS = 5.0
MAX_BACKOFF_SECONDS = 300.0


def now() -> datetime:
    return datetime.now(UTC)


class Controller:
    def __init__(self, store: Store, *, timeouts: Timeouts | None = None,
                 interval: float = 10.0, full_resync: float = 300.0,
                 on_superseded: Callable[[], None] | None = None) -> None:
        self.store = store
        self.pool = ConnectionPool(timeouts or Timeouts.from_env())
        self.state = FleetState()
        self.interval = interval
        self.full_resync = full_resync
        self.token = secrets.token_urlsafe(24)
        self.started_at = now()
        self.on_superseded = on_superseded
        self._stop = threading.Event()
        self._events: queue.Queue[tuple[str, str]] = queue.Queue()
        self._watched: weakref.WeakSet[Host] = weakref.WeakSet()
        self._sync_lock = threading.Lock()
        self._retry: dict[str, tuple[int, float]] = {}  # host -> (failures, next try, monotonic)
        self._threads: list[threading.Thread] = []

    # -- syncing ------------------------------------------------------------------------------

    def reload_inventory(self) -> list[HostRecord]:
        """Adopt the store's inventory; return hosts that need a first sync."""
        fresh, gone = self.state.set_inventory(self.store.hypervisors())
        for rec in gone:
            log.info("host %s left the inventory (or changed its URI)", rec.name)
            self.pool.discard(rec)
            self._retry.pop(rec.name, None)
        return fresh

    def _watch(self, host: Host) -> None:
        """Subscribe to lifecycle events once per connection (a reopened one needs it again)."""
        if host not in self._watched:
            host.on_lifecycle(self._on_event)
            self._watched.add(host)

    def _watch_and_list(self, host: Host) -> list[DomainRecord]:
        self._watch(host)
        return host.list_domains()

    def sync(self, hosts: list[HostRecord] | None = None) -> list[HostResult[list[DomainRecord]]]:
        """List domains on `hosts` (default: all), update memory and the store."""
        targets = self.state.hosts() if hosts is None else hosts
        if not targets:
            return []
        with self._sync_lock:
            results = fan_out(targets, self._watch_and_list, self.pool)
            for r in results:
                if r.value is not None:
                    self.state.replace(r.host.name, r.value, r.at)
                    self._retry.pop(r.host.name, None)
                else:
                    assert r.error is not None
                    self.state.fail(r.host.name, r.error.message, r.error.kind)
                    failures = self._retry.get(r.host.name, (0, 0.0))[0] + 1
                    delay = min(MAX_BACKOFF_SECONDS, self.interval * 2 ** (failures - 1))
                    self._retry[r.host.name] = (failures, time.monotonic() + delay)
            try:
                record(self.store, results)
            except VirtfleetError as exc:
                log.error("store update failed: %s", exc)
        return results

    def _needs_sync(self) -> list[HostRecord]:
        """Hosts never seen, whose connection died, or whose last try failed and is due again."""
        clock = time.monotonic()
        out = []
        for h in self.state.hosts():
            retry = self._retry.get(h.name)
            if retry is not None:
                if retry[1] <= clock:
                    out.append(h)
            elif not self.pool.alive(h):
                out.append(h)
        return out

    # -- events -------------------------------------------------------------------------------

    def _on_event(self, host: Host, uuid: str, _event: int, _detail: int) -> None:
        # Runs on libvirt's event thread: no RPC here, hand it to the event worker.
        self._events.put((host.label, uuid))

    def _apply_event(self, name: str, uuid: str) -> None:
        rec = next((h for h in self.state.hosts() if h.name == name), None)
        if rec is None:
            return

        def read(host: Host) -> DomainRecord | None:
            if host not in self._watched:  # reopened: events were missed while it was down
                self._retry[name] = (0, 0.0)
            self._watch(host)
            return host.domain_by_uuid(uuid)

        with self._sync_lock:
            [result] = fan_out([rec], read, self.pool)
            if result.error is not None:
                log.warning("event for %s on %s: %s", uuid, name, result.error)
                return  # the host will be resynced: its connection is gone or it failed
            try:
                if result.value is None:
                    self.state.delete(name, uuid, result.at)
                    self.store.delete_domain(name, uuid)
                else:
                    self.state.upsert(name, result.value, result.at)
                    self.store.upsert_domain(name, result.value, result.at)
            except VirtfleetError as exc:
                log.error("store update for %s on %s failed: %s", uuid, name, exc)

    def _event_worker(self) -> None:
        while not self._stop.is_set():
            try:
                name, uuid = self._events.get(timeout=0.5)
            except queue.Empty:
                continue
            self._apply_event(name, uuid)

    # -- loops --------------------------------------------------------------------------------

    def _maintenance(self) -> None:
        last_full = now()
        while not self._stop.wait(self.interval):
            try:
                fresh = self.reload_inventory()
                if (now() - last_full).total_seconds() >= self.full_resync:
                    self.sync()
                    last_full = now()
                else:
                    todo = {h.name: h for h in fresh + self._needs_sync()}
                    if todo:
                        self.sync(list(todo.values()))
            except VirtfleetError as exc:
                log.error("maintenance pass failed: %s", exc)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self.store.heartbeat_controller(os.getpid(), now())
            except NotFound:
                log.error("another controller took over this store; stopping")
                self._stop.set()
                if self.on_superseded is not None:
                    self.on_superseded()
            except VirtfleetError as exc:
                log.error("heartbeat failed: %s", exc)

    def start(self, url: str) -> None:
        """Refuse if another controller is live; else first sync, register, start the loops."""
        other = self.store.controller()
        if is_live(other) and other is not None and other.pid != os.getpid():
            raise Conflict(f"a controller is already running for this store: pid {other.pid} "
                           f"on {other.hostname} at {other.url}")
        self.reload_inventory()
        self.sync()
        self.store.register_controller(ControllerRecord(
            url=url, token=self.token, pid=os.getpid(), hostname=socket.gethostname(),
            started_at=self.started_at, heartbeat_at=now()))
        for target in (self._maintenance, self._heartbeat, self._event_worker):
            t = threading.Thread(target=target, name=target.__name__, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        try:
            self.store.unregister_controller(os.getpid())
        except VirtfleetError as exc:
            log.error("could not unregister: %s", exc)
        self.pool.close()
