"""`virtfleet serve`: one long-lived process that keeps the fleet view current.

It holds one connection per hypervisor (the pool), follows libvirt lifecycle events, resyncs
hosts whose connection died or that were never seen (with backoff for hosts that keep failing),
periodically resyncs everyone to catch anything an event missed, writes what it learns to the
store, and answers queries over a small HTTP API on its Unix socket (controller/api.py) so a CLI
does not have to open 1,500 connections.

Ordering: full syncs and event handling take the same lock, so an event that arrives while a
sync is reading is applied after that sync's (older) snapshot, never before it.

Several controllers (docs/scale-out.md): on a PostgreSQL store each controller holds leases on
some sites (controller/shards.py) and watches, syncs and runs HA only for their hypervisors; its
writes for them go through a fenced store (inventory/fencing.py) that refuses them once the
lease is no longer its own. On SQLite there is one controller, as before.

Staying honest: the view is only as fresh as its workers (maintenance, events). Each survives
any exception in one pass (logged with its traceback, counted, shown by /v1/health). A worker
that died, failed FAILED_PASSES passes in a row, or made no progress for `stuck_after` seconds
makes the controller unhealthy: the heartbeat stops and the API refuses the fleet view (503), so
CLIs ask the hypervisors themselves instead of being served stale rows as fresh. It heals by
itself when the worker does.
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from virtfleet.config import HATimings, Timeouts
from virtfleet.controller.client import heartbeat_fresh, is_dead
from virtfleet.controller.events import EventBus, HostEvents
from virtfleet.controller.observe import Observability
from virtfleet.controller.outage import StoreOutage
from virtfleet.controller.shards import LeaseCheckedFencer, ShardKeeper
from virtfleet.controller.state import FleetState
from virtfleet.errors import Conflict, InvalidInput, NotFound, StoreError, VirtfleetError
from virtfleet.fleet.observed import observe, record, record_domain, record_unreachable
from virtfleet.ha.fencer import BmcFencer, Fencer
from virtfleet.ha.monitor import Monitor
from virtfleet.inventory.controllers import already_running
from virtfleet.inventory.records import ControllerRecord, DomainRecord, HostRecord
from virtfleet.inventory.store import Store
from virtfleet.placement.policy import Policy
from virtfleet.provision.journal import take_over
from virtfleet.virt.fanout import ConnectionPool, HostResult, fan_out
from virtfleet.virt.host import Host
from virtfleet.virt.lifecycle import lifecycle_words

log = logging.getLogger("virtfleet.controller")

HEARTBEAT_SECONDS = 5.0
MAX_BACKOFF_SECONDS = 300.0
FAILED_PASSES = 3  # a worker failing this many passes in a row is not keeping the view current
EVENT_POLL_SECONDS = 0.5
TAKEOVER_SECONDS = 2.0  # between passes over the journal for operations whose owner died


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Worker:
    """One background thread's health, as the heartbeat and /v1/health see it."""

    name: str
    thread: threading.Thread | None = None
    faults: int = 0  # passes that raised, since start
    failing: int = 0  # of which in a row, up to the last pass
    last_fault: str = ""
    busy_since: float | None = None  # monotonic, while a pass runs
    progress_at: float = field(default_factory=time.monotonic)

    def as_json(self) -> dict[str, object]:
        return {"alive": self.thread is not None and self.thread.is_alive(),
                "faults": self.faults, "failing": self.failing, "last_fault": self.last_fault}


class Controller:
    def __init__(self, store: Store, *, timeouts: Timeouts | None = None,
                 interval: float = 10.0, full_resync: float = 300.0,
                 stuck_after: float | None = None,
                 on_superseded: Callable[[], None] | None = None,
                 stats_interval: float = 15.0,
                 ha: HATimings | None = None, policy: Policy | None = None,
                 fencer: Fencer | None = None, sites: Sequence[str] = ()) -> None:
        self.store = store
        self.pinned = tuple(sites)
        # On PostgreSQL: this controller's shard leases (start() makes it); None on SQLite.
        self.keeper: ShardKeeper | None = None
        self._wake = threading.Event()  # the maintenance pass, now (the shards changed)
        self._ha_generation = 0
        self.pool = ConnectionPool(timeouts or Timeouts.from_env())
        self.state = FleetState()
        self.interval = interval
        self.full_resync = full_resync
        # A pass makes progress at least once per host answer, and each host answers (or is
        # given up on) within the per-host deadline; twice that plus a pass's wait is slack.
        self.stuck_after = (stuck_after if stuck_after is not None
                            else 2 * self.pool.timeouts.call + interval)
        self.token = secrets.token_urlsafe(24)
        self.started_at = now()
        self.on_superseded = on_superseded
        self.workers = {n: Worker(n) for n in ("maintenance", "events", "heartbeat", "ha",
                                               "takeover")}
        self._stop = threading.Event()
        # (kind, host, uuid or why, when libvirt said it, lifecycle words for a domain's)
        self._events: queue.Queue[tuple[str, str, str, datetime, tuple[str, str]]] = (
            queue.Queue())
        self._watched: weakref.WeakSet[Host] = weakref.WeakSet()
        # Held while a listing or an event is put into the view and the store, never while a
        # host is asked: a sync that waits out a dead host's connect deadline must not hold up
        # the events of every other host (they lagged ~10 s behind each retry of a fenced
        # host). A listing that overlapped an event of its host is not applied (it may be older
        # than the event); that host is listed again at once instead.
        self._apply_lock = threading.Lock()
        self._applied: dict[str, int] = {}  # host -> how many events were put into the view
        self._retry: dict[str, tuple[int, float]] = {}  # host -> (failures, next try, monotonic)
        self._last_full = now()
        self._reported: list[str] = []  # problems last logged by the heartbeat
        # What changed, for /api/v1/events and the metrics (controller/events.py).
        self.events = EventBus()
        self.outage = StoreOutage(log)  # the store down: said once, not by every pass
        self._host_events = HostEvents(self.events)
        self.observe = Observability(self, stats_interval)  # its workers start with ours
        self.ha_timings = ha or HATimings.from_env()
        self.policy = policy
        self.fencer: Fencer = fencer or BmcFencer(store)
        # HA (docs/ha.md): fencing and restarts, from this process's view of the fleet.
        self.ha = self._monitor()

    def _monitor(self) -> Monitor:
        return Monitor(self.store, self.pool, self, self.fencer, timings=self.ha_timings,
                       policy=self.policy,
                       progress=lambda: self._progress(self.workers["ha"]),
                       tell=self._publish_ha, scope=self._scoped)

    def _scoped(self, records: list[HostRecord]) -> list[HostRecord]:
        """The hypervisors this controller acts for: all of them, or its leased sites'."""
        if self.keeper is None:
            return records
        sites = self.keeper.sites()
        return [r for r in records if r.site in sites]

    def _publish_ha(self, kind: str, host: str, vm: str | None,
                    data: dict[str, object]) -> None:
        rec = next((h for h in self.state.hosts() if h.name == host), None)
        uuid, on = data.get("uuid"), data.get("on")
        if data.get("action") == "restart" and isinstance(uuid, str) and on != host:
            # The VM runs on `on` now and the fenced host's copy is gone from the store
            # (ha/restart.py): the view drops it too, or list would show it beside the running
            # one as `unknown` until that host answers again.
            with self._apply_lock:
                self.state.delete(host, uuid, now())
        self.events.publish(kind, host=rec, vm=vm, data=data)

    # -- syncing ------------------------------------------------------------------------------

    def reload_inventory(self) -> list[HostRecord]:
        """Adopt the store's inventory; return hosts that need a first sync."""
        everything = self.store.hypervisors()
        fresh, gone = self.state.set_inventory(self._scoped(everything))
        still = {h.name: h for h in everything}
        elsewhere: dict[str, list[str]] = {}  # site -> its hosts this controller let go
        for rec in gone:
            now_rec = still.get(rec.name)
            if now_rec is not None and now_rec.uri == rec.uri:
                # Still in the inventory: only out of this controller's sites.
                elsewhere.setdefault(now_rec.site, []).append(rec.name)
            else:
                log.info("host %s left the inventory (or changed its URI)", rec.name)
            self.pool.discard(rec)
            self._retry.pop(rec.name, None)
            self._host_events.forget(rec.name)
        for site, names in sorted(elsewhere.items()):
            log.info("site %s is no longer this controller's (its lease was released, handed "
                     "over or lost): not watching %s here any more", site,
                     ", ".join(sorted(names)))
        return fresh

    def _watch(self, host: Host) -> None:
        """Subscribe to lifecycle events and to the connection's loss, once per connection (a
        reopened one needs it again)."""
        if host not in self._watched:
            host.on_lifecycle(self._on_event)
            host.on_disconnect(self._on_disconnect)
            self._watched.add(host)

    def sync(self, hosts: list[HostRecord] | None = None,
             progress: Callable[[], None] | None = None
             ) -> list[HostResult[list[DomainRecord]]]:
        """List domains on `hosts` (default: all), update memory and the store."""
        targets = self.state.hosts() if hosts is None else hosts
        if not targets:
            return []
        with self._apply_lock:
            events_before = {h.name: self._applied.get(h.name, 0) for h in targets}
        # templates told apart for the console's table (asked once per domain per connection)
        results = observe(targets, self.pool, on_connection=self._watch,
                          progress=(lambda _r: progress()) if progress else None, roles=True)
        with self._apply_lock:
            overtaken = {r.host.name for r in results
                         if self._applied.get(r.host.name, 0) != events_before[r.host.name]}
            for name in overtaken:
                self._retry[name] = (0, 0.0)  # due at the next maintenance pass
            applied = [r for r in results if r.host.name not in overtaken]
            for r in applied:
                if r.value is not None:
                    self.state.replace(r.host.name, r.value, r.at)
                    self._retry.pop(r.host.name, None)
                    self._host_events.answered(r.host, len(r.value))
                else:
                    assert r.error is not None
                    self.state.fail(r.host.name, r.error.in_row(r.host.name), r.error.kind, r.at)
                    self._host_events.lost(r.host, r.error.in_row(r.host.name), r.error.kind)
                    failures = self._retry.get(r.host.name, (0, 0.0))[0] + 1
                    delay = min(MAX_BACKOFF_SECONDS, self.interval * 2 ** (failures - 1))
                    self._retry[r.host.name] = (failures, time.monotonic() + delay)
            try:
                record(self.store, applied)
            except VirtfleetError as exc:
                log.error("store update failed: %s", exc)
        self.ha.note_synced([r.host.name for r in applied if r.value is not None])
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

    def _on_event(self, host: Host, uuid: str, event: int, detail: int) -> None:
        # Runs on libvirt's event thread: no RPC here, hand it to the event worker.
        self._events.put(("domain", host.label, uuid, now(), lifecycle_words(event, detail)))

    def _on_disconnect(self, host: Host, why: str) -> None:
        # Runs on libvirt's event thread the moment keepalive gives up on the host: flag it in
        # memory now (a lock and a dict, no I/O) so the next query already shows its VMs as
        # unknown; the store write waits for the event worker, the reconnect for maintenance.
        at = now()
        self.state.fail(host.label, why, "host-unavailable", at)
        self._events.put(("lost", host.label, why, at, ("", "")))

    def _apply_event(self, name: str, uuid: str, at: datetime | None = None,
                     words: tuple[str, str] = ("", "")) -> None:
        rec = next((h for h in self.state.hosts() if h.name == name), None)
        if rec is None:
            return

        def read(host: Host) -> DomainRecord | None:
            if host not in self._watched:  # reopened: events were missed while it was down
                self._retry[name] = (0, 0.0)
            self._watch(host)
            return host.domain_by_uuid(uuid)

        [result] = fan_out([rec], read, self.pool)
        if result.error is not None:
            log.warning("event for %s on %s: %s", uuid, name, result.error)
            return  # the host will be resynced: its connection is gone or it failed
        # Waiting behind a sync's store write is not being stuck.
        while not self._apply_lock.acquire(timeout=1.0):
            self._progress(self.workers["events"])
        try:
            self._applied[name] = self._applied.get(name, 0) + 1
            before = self.state.domain(name, uuid)
            try:
                if result.value is None:
                    self.state.delete(name, uuid, result.at)
                else:
                    self.state.upsert(name, result.value, result.at)
                record_domain(self.store, name, uuid, result.value, result.at)
            except VirtfleetError as exc:
                log.error("store update for %s on %s failed: %s", uuid, name, exc)
            self._publish_vm(rec, uuid, before, result.value, at, words)
        finally:
            self._apply_lock.release()
        self.ha.note_domain(name, uuid)  # an HA VM's definition may have changed

    def _publish_vm(self, rec: HostRecord, uuid: str, before: DomainRecord | None,
                    after: DomainRecord | None, at: datetime | None,
                    words: tuple[str, str]) -> None:
        named = after or before
        if named is None:
            return  # defined and undefined again before it was read: nothing to tell
        self.events.publish("vm.state", host=rec, vm=named.name, observed_at=at, data={
            "uuid": uuid, "event": words[0], "detail": words[1],
            "state": after.state if after else None, "previous": before.state if before else None})

    def _apply_loss(self, name: str, why: str, at: datetime) -> None:
        log.warning("lost %s: %s", name, why)
        rec = next((h for h in self.state.hosts() if h.name == name), None)
        if rec is not None:
            self._host_events.lost(rec, why, "host-unavailable")
        self._retry[name] = (0, 0.0)  # reconnect on the next maintenance pass
        try:
            record_unreachable(self.store, name, why, at)
        except VirtfleetError as exc:
            log.error("store update for %s failed: %s", name, exc)

    # -- workers ------------------------------------------------------------------------------

    @staticmethod
    def _progress(worker: Worker) -> None:
        worker.progress_at = time.monotonic()

    @contextmanager
    def _pass(self, worker: Worker) -> Iterator[None]:
        """One pass of a worker: whatever it raises is logged and counted, never fatal."""
        worker.busy_since = worker.progress_at = time.monotonic()
        try:
            yield
        except StoreError as exc:
            self._fault(worker, exc.message)
            self.outage.failed(worker.name, exc.message)
        except VirtfleetError as exc:
            self._fault(worker, exc.message)
            log.error("%s pass failed: %s", worker.name, exc.message)
        except Exception as exc:  # noqa: BLE001 - the thread boundary: any bug in one pass must
            # not end the worker, or the view would silently stop being kept current.
            self._fault(worker, f"{type(exc).__name__}: {exc}")
            log.exception("%s pass failed with an unexpected error", worker.name)
        else:
            worker.failing = 0
            self.outage.succeeded(worker.name)
        finally:
            worker.busy_since = None

    @staticmethod
    def _fault(worker: Worker, what: str) -> None:
        worker.faults += 1
        worker.failing += 1
        worker.last_fault = what

    def _maintenance(self) -> None:
        worker = self.workers["maintenance"]
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            with self._pass(worker):
                self._maintain(worker)

    def _maintain(self, worker: Worker) -> None:
        fresh = self.reload_inventory()

        def tick() -> None:
            self._progress(worker)

        if (now() - self._last_full).total_seconds() >= self.full_resync:
            self.sync(progress=tick)
            self._last_full = now()
        else:
            todo = {h.name: h for h in fresh + self._needs_sync()}
            if todo:
                self.sync(list(todo.values()), progress=tick)

    def _event_worker(self) -> None:
        worker = self.workers["events"]
        while not self._stop.is_set():
            self._progress(worker)  # waiting for work is not being stuck
            try:
                kind, name, what, at, words = self._events.get(timeout=EVENT_POLL_SECONDS)
            except queue.Empty:
                continue
            with self._pass(worker):
                if kind == "lost":
                    self._apply_loss(name, what, at)
                else:
                    self._apply_event(name, what, at, words)

    # -- HA -------------------------------------------------------------------------------

    def lost(self) -> dict[str, datetime]:
        """Hosts that do not answer, and since when (the HA monitor's view of liveness)."""
        return self.state.lost()

    def resync(self, host: HostRecord) -> None:
        """The HA monitor reached a host the view has as lost: read it again now."""
        self._retry.pop(host.name, None)
        self.sync([host])

    def _ha_worker(self) -> None:
        worker = self.workers["ha"]
        while not self._stop.wait(self.ha_timings.interval):
            with self._pass(worker):
                if self.keeper is not None and self.keeper.generation != self._ha_generation:
                    # Its shards changed: a fresh monitor reads their HA states and journals
                    # from the store, as a restarted controller would.
                    self._ha_generation = self.keeper.generation
                    self.ha.close()
                    self.ha = self._monitor()
                self.ha.run_once()

    # -- operations whose owner died --------------------------------------------------------

    def _takeover_worker(self) -> None:
        worker = self.workers["takeover"]
        while not self._stop.wait(TAKEOVER_SECONDS):
            with self._pass(worker):
                self.take_over()

    def take_over(self) -> None:
        """Claim and undo the journaled operations whose owner died (a CLI killed mid-clone,
        another controller killed mid-operation), on the sites this controller holds: each is
        claimed by exactly one controller (provision/journal.py)."""
        for rec, left in take_over(self.store, self.pool):
            what = f"operation {rec.id[:12]} ({rec.kind} {rec.target})"
            if left:
                log.error("took over %s: could not undo %s", what, "; ".join(
                    f"{m.describe()} ({why})" for m, why in left))
            else:
                log.warning("took over %s: undone (%s)", what, ", ".join(
                    m.describe() for m in reversed(rec.steps)) or "nothing made")

    def problems(self) -> list[str]:
        """Why the fleet view is not being kept current (or HA not watched), if it is not;
        [] when healthy."""
        clock = time.monotonic()
        out = []
        for w in (self.workers["maintenance"], self.workers["events"], self.workers["ha"]):
            if w.thread is None:
                continue  # not started yet
            if not w.thread.is_alive():
                if not self._stop.is_set():
                    out.append(f"the {w.name} worker has died")
            elif w.failing >= FAILED_PASSES:
                out.append(f"the {w.name} worker failed {w.failing} passes in a row "
                           f"({w.last_fault})")
            elif w.busy_since is not None and clock - w.progress_at > self.stuck_after:
                out.append(f"the {w.name} worker has made no progress for "
                           f"{clock - w.progress_at:.0f}s")
        return out

    def _heartbeat(self) -> None:
        worker = self.workers["heartbeat"]
        keeper = self.keeper
        while not self._stop.wait(HEARTBEAT_SECONDS if keeper is None else keeper.every):
            with self._pass(worker):
                if keeper is None:
                    self._beat()
                else:
                    keeper.step()

    def _beat(self) -> None:
        problems = self.problems()
        if problems != self._reported:
            if problems:
                log.error("unhealthy, heartbeat stopped (CLIs will ask the hypervisors): %s",
                          "; ".join(problems))
            else:
                log.info("healthy again, heartbeat resumed")
            self._reported = problems
        if problems:
            rec = self.store.controller()  # still notice being replaced
            if rec is None or (rec.pid, rec.hostname) != (os.getpid(), socket.gethostname()):
                self._superseded()
            return
        try:
            self.store.heartbeat_controller(os.getpid(), now())
        except NotFound:
            self._superseded()

    def _superseded(self) -> None:
        log.error("another controller took over this store; stopping")
        self._stop.set()
        if self.on_superseded is not None:
            self.on_superseded()

    # -- life ---------------------------------------------------------------------------------

    def start(self, url: str) -> None:
        """Refuse if another controller is live; else first sync, register, start the loops.

        A registration whose process is gone from this machine (kill -9, a crash) is taken over
        at once; one that merely stopped heart-beating, once its heartbeat is stale.
        """
        if self.store.backend == "postgresql":
            self._start_sharded(url)
        else:
            self._start_single(url)
        for name, target in (("maintenance", self._maintenance),
                             ("heartbeat", self._heartbeat), ("events", self._event_worker),
                             ("ha", self._ha_worker), ("takeover", self._takeover_worker)):
            if self.workers[name].thread is None:
                self._spawn(name, target)
        self.observe.start()

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        self.workers[name].thread = t
        t.start()

    def _start_single(self, url: str) -> None:
        if self.pinned:
            raise InvalidInput("site", "pins a controller among several, which needs a "
                               "PostgreSQL store (--db postgresql://...)")
        other = self.store.controller()
        if other is not None:
            if is_dead(other):
                log.warning("taking over from controller pid %d: that process is gone",
                            other.pid)
            elif heartbeat_fresh(other):
                raise Conflict(already_running(other, self.store.backend))
        self.reload_inventory()
        self.sync()
        self._last_full = now()
        self.store.register_controller(self._registration(url), replacing=other)

    def _start_sharded(self, url: str) -> None:
        """Join the controllers of this PostgreSQL store, take a share of its sites, and from
        then on write through a store fenced by those leases."""
        keeper = ShardKeeper(self.store, pinned=self.pinned,
                             healthy=lambda: not self.problems(), on_change=self._wake.set)
        keeper.check_pins()
        self.keeper = keeper
        self.store = self.store.fenced(keeper.tokens)
        keeper.store = self.store
        self.fencer = LeaseCheckedFencer(self.fencer, self.store)
        keeper.join(self._registration(url))
        keeper.step()
        # Renew from now on, not from after the first full sync: a sync longer than a lease
        # (many hosts, a busy machine, a host that never answers) let every lease lapse as soon
        # as it was taken, and the controller dropped its sites right after "serving".
        self._spawn("heartbeat", self._heartbeat)
        self._ha_generation = keeper.generation
        self.ha.close()
        self.ha = self._monitor()
        self.reload_inventory()
        self.sync()
        self._last_full = now()

    def _registration(self, url: str) -> ControllerRecord:
        return ControllerRecord(url=url, token=self.token, pid=os.getpid(),
                                hostname=socket.gethostname(), started_at=self.started_at,
                                heartbeat_at=now())

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.ha.close()
        self.observe.stop()
        try:
            if self.keeper is not None:
                self.keeper.leave()  # its sites go to the others at once, not at expiry
            else:
                self.store.unregister_controller(os.getpid())
        except VirtfleetError as exc:
            log.error("could not unregister: %s", exc)
        self.pool.close()
