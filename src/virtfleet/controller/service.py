"""`virtfleet serve`: one long-lived process that keeps the fleet view current.

It holds one connection per hypervisor (the pool), follows libvirt lifecycle events, resyncs
hosts whose connection died or that were never seen, periodically resyncs everyone to catch
anything an event missed, writes what it learns to the store, and answers queries over a small
HTTP API on loopback (controller/api.py) so a CLI does not have to open 1,500 connections.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import socket
import threading
import weakref
from datetime import UTC, datetime

from virtfleet.config import Timeouts
from virtfleet.controller.state import FleetState
from virtfleet.errors import VirtfleetError
from virtfleet.inventory.records import ControllerRecord, HostRecord, HostStatus
from virtfleet.inventory.store import Store
from virtfleet.virt.fanout import ConnectionPool, HostResult, fan_out
from virtfleet.virt.host import Host

log = logging.getLogger("virtfleet.controller")

HEARTBEAT_SECONDS = 5.0


def now() -> datetime:
    return datetime.now(UTC)


class Controller:
    def __init__(self, store: Store, *, timeouts: Timeouts | None = None,
                 interval: float = 10.0, full_resync: float = 300.0) -> None:
        self.store = store
        self.pool = ConnectionPool(timeouts or Timeouts.from_env())
        self.state = FleetState()
        self.interval = interval
        self.full_resync = full_resync
        self.token = secrets.token_urlsafe(24)
        self.started_at = now()
        self._stop = threading.Event()
        self._events: queue.Queue[tuple[str, str]] = queue.Queue()
        self._watched: weakref.WeakSet[Host] = weakref.WeakSet()
        self._sync_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # -- syncing ------------------------------------------------------------------------------

    def reload_inventory(self) -> list[HostRecord]:
        """Adopt the store's inventory; return hosts that need a first sync."""
        fresh, removed = self.state.set_inventory(self.store.hypervisors())
        for name in removed:
            log.info("host %s left the inventory", name)
        return fresh

    def _watch_and_list(self, host: Host) -> list:  # type: ignore[type-arg]
        if host not in self._watched:
            host.on_lifecycle(self._on_event)
            self._watched.add(host)
        return host.list_domains()

    def sync(self, hosts: list[HostRecord] | None = None) -> list[HostResult[list]]:  # type: ignore[type-arg]
        """List domains on `hosts` (default: all), update memory and the store."""
        targets = self.state.hosts() if hosts is None else hosts
        if not targets:
            return []
        with self._sync_lock:
            results = fan_out(targets, self._watch_and_list, self.pool)
            at = now()
            seen = {}
            for r in results:
                if r.value is not None:
                    self.state.replace(r.host.name, r.value, at)
                    seen[r.host.name] = r.value
                else:
                    assert r.error is not None
                    self.state.fail(r.host.name, r.error.message, r.error.kind)
            try:
                self.store.replace_many(seen, at)
                for r in results:
                    if r.error is not None:
                        self.store.set_host_status(HostStatus(r.host.name, False,
                                                              r.error.message, at))
            except VirtfleetError as exc:
                log.error("store update failed: %s", exc)
        return results

    def _needs_sync(self) -> list[HostRecord]:
        broken = {n for n, _k, _e in self.state.failures()}
        return [h for h in self.state.hosts()
                if h.name in broken or not self.pool.alive(h)] + self.state.never_seen()

    # -- events -------------------------------------------------------------------------------

    def _on_event(self, host: Host, uuid: str, _event: int, _detail: int) -> None:
        # Runs on libvirt's event thread: no RPC here, hand it to the event worker.
        self._events.put((host.label, uuid))

    def _event_worker(self) -> None:
        while not self._stop.is_set():
            try:
                name, uuid = self._events.get(timeout=0.5)
            except queue.Empty:
                continue
            rec = next((h for h in self.state.hosts() if h.name == name), None)
            if rec is None:
                continue
            try:
                dom = self.pool.get(rec).domain_by_uuid(uuid)
                at = now()
                if dom is None:
                    self.state.delete(name, uuid, at)
                    self.store.delete_domain(name, uuid)
                else:
                    self.state.upsert(name, dom, at)
                    self.store.upsert_domain(name, dom, at)
            except VirtfleetError as exc:
                log.warning("event for %s on %s: %s", uuid, name, exc)

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
            except VirtfleetError as exc:
                log.error("heartbeat failed: %s", exc)

    def start(self, url: str) -> None:
        """First full sync, registration, then the background loops."""
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
