"""The controller's HA worker: each pass looks at every hypervisor, lets the state machine
(states.py) decide, and does what it says: ask a BMC, fence, restart, reconcile.

    monitor = Monitor(store, pool, liveness, BmcFencer(store), timings=HATimings())
    monitor.run_once()                 # one pass (the controller calls it every second)
    monitor.note_domain("hv1", uuid)   # a lifecycle event: read that HA definition again
    monitor.note_synced([record])      # a full sync of a host: read all its definitions

What it sees comes from the controller (`Liveness`): which hosts do not answer and since when.
A host that does not answer is also asked directly now and then, on a connection of its own
with a short deadline, so one that comes back is noticed without waiting for the controller's
reconnect backoff. Every state change is written to the store (ha_hosts) and every step of a
recovery to its journal (journal.py) before the next step, so a controller started after a
crash goes on from where the last one stood.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from virtfleet.config import HATimings
from virtfleet.errors import VirtfleetError
from virtfleet.ha import states
from virtfleet.ha.definitions import Definitions
from virtfleet.ha.fencer import Fencer
from virtfleet.ha.journal import Journal
from virtfleet.ha.reconcile import reconcile
from virtfleet.ha.restart import PodView, Restarter, VMOutcome
from virtfleet.ha.states import Action, HostHA, Seen, State, Step
from virtfleet.inventory.ha import HAHost, RecoveryStep
from virtfleet.inventory.records import HostRecord
from virtfleet.inventory.store import Store
from virtfleet.placement.policy import Policy
from virtfleet.virt import ha as vha
from virtfleet.virt.fanout import ConnectionPool

log = logging.getLogger("virtfleet.ha")
MAX_STEPS = 8  # state-machine steps per host per pass (each one acts at most once)
PROBE_EVERY = 3.0  # seconds between direct probes of one non-answering host
QUEUE_PER_PASS = 500  # definition refreshes handled per pass (the rest wait for the next)


def now() -> datetime:
    return datetime.now(UTC)


class Liveness(Protocol):
    """What the controller knows of its connections."""

    def lost(self) -> dict[str, datetime]:
        """Hosts that do not answer, and since when."""
        ...

    def resync(self, host: HostRecord) -> None:
        """A host answers again (a probe reached it): bring the controller's view up to date."""
        ...


@dataclass
class _Pass:
    """What one pass saw, shared by every host's steps."""

    at: datetime
    records: dict[str, HostRecord]
    answering: frozenset[str]
    enabled: frozenset[str]  # pods with HA on
    bmcs: frozenset[str]  # hosts with a BMC


# Who hears what HA does: (event kind, host, vm or None, fields).
Tell = Callable[[str, str, str | None, dict[str, object]], None]

# A host's HA state as an event kind; every other state is something HA did (ha.action).
_EVENT_OF = {State.SUSPECT: "host.suspect", State.FENCE_FAILED: "host.unknown"}


class Monitor:
    def __init__(self, store: Store, pool: ConnectionPool, liveness: Liveness,
                 fencer: Fencer, *, timings: HATimings | None = None,
                 policy: Policy | None = None, clock: Callable[[], datetime] = now,
                 progress: Callable[[], None] = lambda: None,
                 tell: Tell | None = None,
                 scope: Callable[[list[HostRecord]], list[HostRecord]] | None = None) -> None:
        self.store = store
        # The hosts this controller acts for (its shards' on a PostgreSQL store); all of them
        # by default. Asked every pass: a lease can lapse between two passes.
        self.scope = scope or (lambda records: records)
        self.pool = pool
        self.liveness = liveness
        self.fencer = fencer
        self.timings = timings or HATimings()
        self.rules = states.Settings(grace_seconds=self.timings.grace,
                                     retry_seconds=self.timings.retry)
        self.clock = clock
        self.progress = progress
        # What HA does goes to the controller's events stream (host.suspect, host.unknown,
        # ha.action) as well as to the journal: the journal is for recovery, events for people.
        self.tell: Tell = tell or (lambda kind, host, vm, data: None)
        self.restarter = Restarter(store, pool, policy=policy,
                                   retry_seconds=self.timings.retry, clock=clock)
        self.definitions = Definitions(store, pool, clock)
        self.hosts: dict[str, HostHA] = {}
        self.outcomes: dict[str, list[VMOutcome]] = {}  # the last restart pass, per host
        # What ha_hosts holds, (state, detail); a host without a row is ok.
        self._saved: dict[str, tuple[str, str]] = {}
        self._journals: dict[str, Journal | None] = {}
        self._loaded = False
        self._probed: dict[str, float] = {}
        self._probing: dict[str, Future[bool]] = {}
        self._prober = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ha-probe")
        self._events: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._deferred: set[str] = set()  # hosts whose definitions wait until they are ok

    # -- notifications from the controller's other workers (any thread) -------------------

    def note_domain(self, host: str, uuid: str) -> None:
        self._events.put((host, uuid))

    def note_synced(self, hosts: Sequence[str]) -> None:
        for h in hosts:
            self._events.put((h, None))

    # -- one pass ---------------------------------------------------------------------------

    def run_once(self) -> None:
        records = {r.name: r for r in self.scope(self.store.hypervisors())}
        if not self._loaded:
            self._load(records)
        for gone in set(self.hosts) - set(records):
            self.hosts.pop(gone, None)
        enabled = frozenset(self.store.ha_pods())
        lost = self._probe({n: r for n, r in records.items() if r.pod in enabled},
                           self.liveness.lost())
        ctx = _Pass(at=self.clock(), records=records,
                    answering=frozenset(n for n in records if n not in lost),
                    enabled=enabled, bmcs=frozenset(self.store.hypervisor_bmcs()))
        self._refresh_definitions(ctx)
        by_pod: dict[str, list[HostRecord]] = {}
        for rec in records.values():
            by_pod.setdefault(rec.pod, []).append(rec)
        for pod_hosts in by_pod.values():
            for rec in pod_hosts:
                try:
                    self._host(rec, pod_hosts, ctx, lost.get(rec.name))
                except VirtfleetError as exc:
                    log.error("HA %s: %s", rec.name, exc.message)
                self.progress()

    def _load(self, records: dict[str, HostRecord]) -> None:
        """Pick up where the last controller stood."""
        for name, rec in self.store.ha_hosts().items():
            if name not in records:
                continue
            self.hosts[name] = HostHA(name, State(rec.state), since=rec.since,
                                      lost_at=rec.lost_at, detail=rec.detail)
            self._saved[name] = (rec.state, rec.detail)
        self._loaded = True

    def _probe(self, records: dict[str, HostRecord],
               lost: dict[str, datetime]) -> dict[str, datetime]:
        """Ask the hosts of `records` that the controller has lost and HA no longer counts as
        ok whether they answer again (each at most every PROBE_EVERY seconds, in the
        background: a probe of a dead host waits out its connect deadline); a host that
        answered is resynced by the controller. Returns the lost hosts after that."""
        back = []
        for name, fut in list(self._probing.items()):
            if fut.done():
                del self._probing[name]
                if fut.result() and name in records and name in lost:
                    back.append(records[name])
        for answered in back:
            self.liveness.resync(answered)
        clock = time.monotonic()
        for name in lost:
            rec = records.get(name)
            if (rec is None or name in self._probing
                    or self.hosts.get(name, HostHA(name)).state == State.OK
                    or clock - self._probed.get(name, 0.0) < PROBE_EVERY):
                continue
            self._probed[name] = clock
            self._probing[name] = self._prober.submit(self._answers, rec)
        return self.liveness.lost() if back else lost

    def _answers(self, rec: HostRecord) -> bool:
        try:
            vha.probe(rec.uri, rec.name, self.timings.probe)
        except VirtfleetError:
            return False
        return True

    def close(self) -> None:
        self._prober.shutdown(wait=False, cancel_futures=True)

    def _refresh_definitions(self, ctx: _Pass) -> None:
        synced: dict[str, HostRecord] = {}
        for _ in range(QUEUE_PER_PASS):
            try:
                name, uuid = self._events.get_nowait()
            except queue.Empty:
                break
            rec = ctx.records.get(name)
            if rec is None:
                continue
            if self.hosts.get(name, HostHA(name)).state != State.OK:
                # Its copies may be stale (it failed): read it once it is reconciled.
                self._deferred.add(name)
                continue
            if uuid is None:
                synced[name] = rec
                continue
            try:
                self.definitions.domain_changed(rec, uuid)
            except VirtfleetError as exc:
                log.warning("HA definition of %s on %s: %s", uuid, name, exc.message)
        self.definitions.hosts_synced(list(synced.values()))

    # -- one host ---------------------------------------------------------------------------

    def _host(self, rec: HostRecord, pod_hosts: list[HostRecord], ctx: _Pass,
              lost_at: datetime | None) -> None:
        h = self.hosts.get(rec.name) or HostHA(rec.name, since=ctx.at)
        down = {n for n, x in self.hosts.items() if x.state in states.DOWN}
        counted = [r for r in pod_hosts if r.name not in down]
        seen = Seen(answering=rec.name in ctx.answering, lost_at=lost_at,
                    ha_enabled=rec.pod in ctx.enabled, maintenance=rec.maintenance,
                    has_bmc=rec.name in ctx.bmcs, pod_hosts=len(counted),
                    pod_unreachable=sum(r.name not in ctx.answering for r in counted))
        step = states.decide(h, seen, self.rules, self.clock())
        for _ in range(MAX_STEPS):
            self._record(rec, step, seen)
            h = step.host
            if step.action is Action.NONE:
                break
            if step.action is Action.ASK_POWER:
                step = self._ask_power(rec, h, seen)
            elif step.action is Action.FENCE:
                result = self.fencer.off(rec.name)
                log.warning("HA %s: power off through its BMC: %s (%s)", rec.name,
                            result.power.value, result.message)
                step = states.after_fence(h, result, self.clock())
            elif step.action is Action.RESTART:
                step = self._restart(rec, h, pod_hosts, ctx)
            else:  # RECONCILE
                self._reconcile(rec, pod_hosts, ctx)
                step = Step(states.after_reconcile(h, self.clock()), Action.NONE)
            self.progress()

    def _ask_power(self, rec: HostRecord, h: HostHA, seen: Seen) -> Step:
        result = self.fencer.status(rec.name)
        after = states.after_power(h, result, self.clock())
        if after.state == State.FENCE_FAILED:
            log.error("HA %s: %s", rec.name, after.detail)
            return Step(after, Action.NONE, ("fence-failed",))
        if result.power != h.power:
            self._add(rec.name, RecoveryStep("power", self.clock(),
                                             detail=f"its BMC reports power "
                                             f"{result.power.value}"))
        return states.decide(after, seen, self.rules, self.clock())

    def _restart(self, rec: HostRecord, h: HostHA, pod_hosts: list[HostRecord],
                 ctx: _Pass) -> Step:
        journal = self._journal(rec.name) or self._begin(rec.name)
        down = frozenset(n for n, x in self.hosts.items() if x.state in states.DOWN)
        view = PodView(failed=rec, hosts=pod_hosts, records=ctx.records,
                       answering=ctx.answering, down=down | {rec.name})
        if h.state != State.RESTARTING:
            h = h.to(State.RESTARTING, self.clock(), "restarting its HA VMs")
            self._record(rec, Step(h, Action.NONE), None)
        outcomes = self.restarter.run(view, journal)
        told = {o.uuid for o in self.outcomes.get(rec.name, []) if o.state == "running"}
        self.outcomes[rec.name] = outcomes
        for o in outcomes:
            if o.state == "running" and o.uuid not in told:  # a later pass repeats the earlier
                self.tell("ha.action", rec.name, o.vm,
                          {"action": "restart", "uuid": o.uuid, "on": o.host})
        pending = [o for o in outcomes if o.state == "pending"]
        total = sum(o.state != "off" for o in outcomes)
        why = "; ".join(f"{o.vm}: {o.detail}" for o in pending[:3])
        return states.after_restart(h, len(pending), total, why, self.clock())

    def _reconcile(self, rec: HostRecord, pod_hosts: list[HostRecord], ctx: _Pass) -> None:
        done = reconcile(self.store, self.pool, rec, pod_hosts, ctx.answering, self.clock)
        steps = [*done.removed, *(RecoveryStep("stale-left", self.clock(), host=rec.name,
                                               detail=p) for p in done.problems)]
        for s in done.removed:
            log.warning("HA %s: undefined its stale copy of %s (%s)", rec.name, s.vm,
                        s.detail)
            self.tell("ha.action", rec.name, s.vm,
                      {"action": "reconcile", "uuid": s.uuid, "detail": s.detail})
        journal = Journal.latest(self.store, rec.name)
        if journal is not None and steps:
            journal.add(*steps)
        self._journals.pop(rec.name, None)
        if rec.name in self._deferred or done.removed:
            self._deferred.discard(rec.name)
            self.note_synced([rec.name])  # its definitions, now that they are its own

    # -- records ----------------------------------------------------------------------------

    def _record(self, rec: HostRecord, step: Step, seen: Seen | None) -> None:
        """Journal what changed, then keep the new state (in memory and, if it changed, in
        the store)."""
        h = step.host
        for kind in step.journal:
            if kind in ("done", "back"):
                j = self._journal(rec.name)
                if j is not None:
                    j.finish(self.clock(), kind, h.detail if kind == "done" else
                             "answering again before it was fenced; nothing was restarted")
                    self._journals[rec.name] = None
                continue
            j = self._journal(rec.name)
            if j is None:
                if seen is not None and not seen.ha_enabled:
                    continue  # HA is off here: nothing will be done, nothing to journal
                j = self._begin(rec.name)
            j.again(RecoveryStep(kind, self.clock(), detail=h.detail))
        if h.state != self.hosts.get(rec.name, HostHA(rec.name)).state:
            if h.state == State.OK:
                log.info("HA %s: ok", rec.name)
            else:
                log.warning("HA %s: %s (%s)", rec.name, h.state.value, h.detail)
            if seen is None or seen.ha_enabled:  # without HA, host.down already says it
                self.tell(_EVENT_OF.get(h.state, "ha.action"), rec.name, None,
                          {"state": h.state.value, "detail": h.detail})
        self.hosts[rec.name] = h
        if self._saved.get(rec.name, ("ok", "")) != (h.state.value, h.detail):
            self.store.set_ha_host(HAHost(host=rec.name, state=h.state.value,
                                          since=h.since or self.clock(), lost_at=h.lost_at,
                                          detail=h.detail, updated_at=self.clock()))
            self._saved[rec.name] = (h.state.value, h.detail)

    def _journal(self, host: str) -> Journal | None:
        if host not in self._journals:
            self._journals[host] = Journal.resume(self.store, host)
        return self._journals[host]

    def _begin(self, host: str) -> Journal:
        j = Journal.begin(self.store, host, self.clock())
        self._journals[host] = j
        return j

    def _add(self, host: str, step: RecoveryStep) -> None:
        j = self._journal(host)
        if j is not None:
            j.add(step)
