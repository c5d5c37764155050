"""Bringing a fenced host's HA VMs back: each runs exactly once, on another hypervisor of its pod
(or wherever it is still defined), highest priority first.

For each VM of the plan (journal.py), every pass starts from what the hosts say, never from
what was intended:

1. Every answering hypervisor of the pod, and any other the store last saw the VM on, is asked
   for the VM by UUID. A host that may have it (the store last saw it there, or a migration of
   it in the operations journal names it) and does not answer, unfenced, may be running it:
   the VM is held (named, never started). A copy that is running means done; one that is
   active otherwise (paused, an incoming migration) is waited for.
2. A copy that is defined and shut off on an answering host (one this recovery defined before
   a crash, or the failed host's own after it came back) is started where it is.
3. Otherwise the scheduler picks a hypervisor among those that pass the same checks as a
   migration (disks on the pod's shared storage as that host sees them, its networks, its
   CPU, no domain in the way, not in maintenance) and claims room there; the journal records
   "restarting VM on HOST" before the recorded definition is defined there (autostart off)
   and started. Placing goes VM by VM in priority order; the starts then run
   STARTS_AT_ONCE at a time, begun in that order.

A start that fails is journaled and the copy it defined removed again (never its disks), so
the next try may pick another host.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from virtfleet.errors import HostUnavailable, InvalidInput, VirtfleetError
from virtfleet.fleet import movable, targets
from virtfleet.ha.journal import Journal, Planned
from virtfleet.inventory.ha import HAVM, RecoveryStep
from virtfleet.inventory.records import HostRecord
from virtfleet.inventory.store import Store
from virtfleet.placement.models import VMShape
from virtfleet.placement.policy import Policy
from virtfleet.provision.locks import vm_lock
from virtfleet.provision.migrate import Step as MoveStep
from virtfleet.provision.schedule import group_of
from virtfleet.virt import ha as vha
from virtfleet.virt.fanout import ConnectionPool, fan_out
from virtfleet.virt.host import Host
from virtfleet.xml.domain import Domain

log = logging.getLogger("virtfleet.ha")

# Last seen in one of these, the VM was not running: it stays off (an operator's shutdown).
NOT_RUNNING = ("shut off", "crashed")
CLAIM_TTL = timedelta(minutes=10)
# Starts at once in one pass: each is a QEMU launch on a host of the pod (Proxmox's ha-manager
# runs 4 workers per node by default, for the same reason: enough to overlap, not a storm).
STARTS_AT_ONCE = 4

Start = Callable[[], "VMOutcome"]


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class VMOutcome:
    """Where one planned VM stands after a pass."""

    vm: str
    uuid: str
    priority: int
    state: str  # running, pending (held or failed this pass, tried again), off (not restarted)
    host: str | None = None  # where it runs (or is held)
    detail: str = ""

    def as_json(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class PodView:
    """The failed host's pod as this pass saw it."""

    failed: HostRecord
    hosts: Sequence[HostRecord]  # every hypervisor of the pod, the failed one included
    records: dict[str, HostRecord]  # every hypervisor of the inventory, by name
    answering: frozenset[str]  # of those, the ones that answer now
    down: frozenset[str]  # fenced by us: what ran there is gone


class AnsweringPool(ConnectionPool):
    """The controller's pool, refusing at once the hosts this pass found not answering: the
    scheduler's read of the pod must not wait out a dead host's connect deadline."""

    def __init__(self, inner: ConnectionPool, skip: frozenset[str]) -> None:
        super().__init__(inner.timeouts)
        self._inner = inner
        self._skip = skip

    def get(self, record: HostRecord, inline: bool = False) -> Host:
        if record.name in self._skip:
            raise HostUnavailable("not answering", host=record.name)
        return self._inner.get(record, inline)

    def alive(self, record: HostRecord) -> bool:
        return record.name not in self._skip and self._inner.alive(record)

    def release(self, record: HostRecord) -> None:
        self._inner.release(record)

    def discard(self, record: HostRecord) -> None:
        self._inner.discard(record)

    def close(self) -> None:
        return None  # the controller's connections are not ours to close


@dataclass
class _Pace:
    """When each VM that failed to place or start may be tried again, and why the last try
    failed (in memory only: after a controller restart everything is tried at once, which is
    what a restart is for)."""

    retry: timedelta
    next_try: dict[str, datetime] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)

    def due(self, uuid: str, at: datetime) -> bool:
        return self.next_try.get(uuid, at) <= at

    def failed(self, uuid: str, at: datetime, why: str = "") -> bool:
        """Note a failed try; True if it failed for a new reason (worth a log line: a VM
        that cannot be placed for an hour says so once, not every retry)."""
        self.next_try[uuid] = at + self.retry
        new = self.why.get(uuid) != why
        self.why[uuid] = why
        return new

    def waiting(self, uuid: str) -> str:
        why = self.why.get(uuid, "")
        return f"{why}; trying again shortly" if why else "trying again shortly"

    def done(self, uuid: str, host: str) -> None:
        for key in (uuid, f"{uuid}@{host}"):
            self.next_try.pop(key, None)
            self.why.pop(key, None)


class Restarter:
    def __init__(self, store: Store, pool: ConnectionPool, *, policy: Policy | None = None,
                 retry_seconds: float = 10.0, clock: Callable[[], datetime] = now) -> None:
        self.store = store
        self.pool = pool
        self.policy = policy or Policy()
        self.seconds = pool.timeouts.call
        self.clock = clock
        self._pace = _Pace(timedelta(seconds=retry_seconds))

    # -- the plan --------------------------------------------------------------------------

    def plan(self, failed: HostRecord, journal: Journal) -> list[Planned]:
        """The failed host's HA VMs, fixed in the journal the first time (a resumed recovery
        keeps the plan it had): those last seen running are restarted, others stay off."""
        if journal.is_planned():
            return journal.planned()
        last = {v.domain.uuid: v.domain.state for v in self.store.fleet_vms(host=failed.name)}
        planned = []
        for vm in self.store.ha_vms(host=failed.name):
            if vm.priority is None:
                continue  # no longer HA (its mark or its group's policy went)
            state = last.get(vm.uuid)
            if state is None:
                why = "it was not on the host at its last sighting"
            elif state in NOT_RUNNING:
                why = f"it was {state} at its last sighting"
            else:
                why = ""
            planned.append(Planned(vm.name, vm.uuid, vm.priority, not why, why))
        planned.sort(key=lambda p: (-p.priority, p.vm))
        journal.plan(planned, self.clock())
        return planned

    # -- one pass ---------------------------------------------------------------------------

    def run(self, view: PodView, journal: Journal) -> list[VMOutcome]:
        """One pass over the plan; returns each VM's outcome, in priority order.

        Deciding is done VM by VM in priority order (so the higher ones get the room first,
        each placement claimed before the next is chosen); the starts then run a few at a
        time, begun in that same order."""
        plan = self.plan(view.failed, journal)
        done: dict[str, VMOutcome] = {}
        starts: list[tuple[Planned, Callable[[], VMOutcome]]] = []
        for p in plan:
            if not p.restart:
                done[p.uuid] = VMOutcome(p.vm, p.uuid, p.priority, "off", detail=p.why_not)
                continue
            try:
                next_step = self._one(view, journal, p)
            except VirtfleetError as exc:
                done[p.uuid] = self._failed(p, exc)
                continue
            if isinstance(next_step, VMOutcome):
                done[p.uuid] = next_step
            else:
                starts.append((p, next_step))
        if starts:
            with ThreadPoolExecutor(max_workers=min(STARTS_AT_ONCE, len(starts)),
                                    thread_name_prefix="ha-start") as ex:
                running = [(p, ex.submit(start)) for p, start in starts]
                for p, fut in running:
                    try:
                        done[p.uuid] = fut.result()
                    except VirtfleetError as exc:
                        done[p.uuid] = self._failed(p, exc)
        return [done[p.uuid] for p in plan]

    def _failed(self, p: Planned, exc: VirtfleetError) -> VMOutcome:
        why = _bare(p.vm, exc.message)
        if self._pace.failed(p.uuid, self.clock(), why):
            log.warning("HA restart of %s: %s", p.vm, why)
        return VMOutcome(p.vm, p.uuid, p.priority, "pending", detail=why)

    def _places(self, name: str, uuid: str) -> set[str]:
        """Where the VM may be defined besides its failed host: every host the store last saw
        it on, and both ends of a migration of it still in the operations journal (its target
        may have it before any event said so)."""
        seen = {v.host for v in self.store.fleet_vms(name=name) if v.domain.uuid == uuid}
        for op in self.store.operations():
            for made in op.steps:
                if made.kind == "migration" and f"/{uuid}>" in made.ref:
                    seen |= {made.host, MoveStep.parse(made.ref).target}
        return seen

    def _ask(self, view: PodView, name: str, uuid: str) -> tuple[list[vha.Copy], str]:
        """Every copy of `uuid` on the hosts that answer, and why it cannot be settled yet (a
        host that may have it defined does not answer and was not fenced), if so. Another
        host of the pod that is down but never had the VM does not hold it."""
        places = {n for n in self._places(name, uuid) if n in view.records}
        names = {h.name for h in view.hosts} | places
        silent = sorted(n for n in places if n not in view.answering and n not in view.down)
        if silent:
            return [], (f"it may still run on {', '.join(silent)}, which does not answer and "
                        "was not fenced")
        asked = [view.records[n] for n in sorted(names) if n in view.answering]
        results = fan_out(asked, lambda h: vha.find(h, uuid, self.seconds), self.pool)
        copies = []
        for r in results:
            if r.error is not None:
                return [], f"{r.host.name} did not answer ({r.error.in_row(r.host.name)})"
            if r.value is not None:
                copies.append(r.value)
        return copies, ""

    def _one(self, view: PodView, journal: Journal, p: Planned) -> VMOutcome | Start:
        """Where the VM stands, or the start to make (placed and claimed already)."""
        def outcome(state: str, host: str | None = None, detail: str = "") -> VMOutcome:
            return VMOutcome(p.vm, p.uuid, p.priority, state, host, detail)

        copies, unsettled = self._ask(view, p.vm, p.uuid)
        if unsettled:
            return outcome("pending", detail=unsettled)
        running = [c for c in copies if c.active and c.state == "running"]
        if running:
            where = running[0].host
            if len(running) > 1 or any(c.active for c in copies if c.host != where):
                log.error("HA: %s (%s) is active on %s", p.vm, p.uuid,
                          ", ".join(c.host for c in copies if c.active))
            if journal.running_on(p.uuid) != where:
                journal.add(RecoveryStep("running", self.clock(), vm=p.vm, uuid=p.uuid,
                                         host=where, detail="found running"))
                self._observed(view, p, where)
            self._pace.done(p.uuid, where)
            return outcome("running", where)
        active = [c for c in copies if c.active]
        if active:
            return outcome("pending", active[0].host,
                           f"it is {active[0].state} on {active[0].host}; waiting")
        at = self.clock()
        # A failed try is paced per place: a copy that just became startable (its host came
        # back) is started at once, a start that failed on a host is not retried there at once.
        startable = [c for c in copies if c.host in view.answering
                     and not view.records[c.host].maintenance
                     and self._pace.due(f"{p.uuid}@{c.host}", at)]
        if startable:
            planned = journal.target(p.uuid)
            startable.sort(key=lambda c: (c.host != planned, c.host != view.failed.name,
                                          c.host))
            where = startable[0].host
            journal.add(RecoveryStep("restarting", self.clock(), vm=p.vm, uuid=p.uuid,
                                     host=where, priority=p.priority,
                                     detail="defined there already"))
            return lambda: self._start(view, journal, p, where, defined_by_us=False)
        if copies:
            where = copies[0].host
            return outcome("pending", where, f"it is defined on {where}, " + (
                "which is in maintenance" if view.records[where].maintenance
                else "where its start failed; trying again shortly"))
        if not self._pace.due(p.uuid, at):
            return outcome("pending", detail=self._pace.waiting(p.uuid))
        return self._place(view, journal, p)

    def _place(self, view: PodView, journal: Journal, p: Planned) -> VMOutcome | Start:
        vm = next(iter(self.store.ha_vms(uuid=p.uuid)), None)
        if vm is None or not vm.definition:
            return VMOutcome(p.vm, p.uuid, p.priority, "pending",
                             detail="no definition of it on record")
        self._release_left_claims(view, p.vm)
        scope = [h for h in view.hosts if h.name in view.answering and h.name != view.failed.name]
        avoid = journal.failed_on(p.uuid)
        if avoid is not None and any(h.name != avoid for h in scope):
            scope = [h for h in scope if h.name != avoid]
        chosen = self._choose(view, vm, scope)
        if chosen.target is None:
            assert chosen.error is not None
            return self._failed(p, chosen.error)
        target = chosen.target
        # Journaled here, in priority order, before the start (a few at a time) defines it.
        journal.add(RecoveryStep("restarting", self.clock(), vm=p.vm, uuid=p.uuid,
                                 host=target.name, priority=p.priority))

        def start() -> VMOutcome:
            try:
                with vm_lock(self.store, f"{target.name}/{p.vm}", "ha-restart"):
                    vha.define(self.pool.get(target), vm.definition, self.seconds)
                    return self._start(view, journal, p, target.name, defined_by_us=True,
                                       locked=True)
            finally:
                self.store.release_placement(target.name, p.vm)

        return start

    def _release_left_claims(self, view: PodView, vm: str) -> None:
        """Give back the room a killed controller claimed for `vm` in this pod and never used
        (it died between placing the VM and defining it; no host has a copy, or we would not
        be placing it). Left, that claim would refuse this placement as the same VM claimed
        twice, until it expired minutes later. This controller's own claims are released when
        each start ends."""
        pod = {h.name for h in view.hosts}
        for c in self.store.placement_claims():
            if c.vm == vm and c.host in pod:
                self.store.release_placement(c.host, vm)
                log.warning("HA restart of %s: released its unused claim on %s (left by an "
                            "earlier attempt that did not finish)", vm, c.host)

    def _choose(self, view: PodView, vm: HAVM, scope: Sequence[HostRecord]) -> targets.Chosen:
        pool = AnsweringPool(self.pool, frozenset(h.name for h in view.hosts
                                                  if h.name not in view.answering))
        pods = movable.Storages({p.name: p.storage for s in self.store.fleet().sites
                                 for p in s.pods})

        def fit(h: Host) -> movable.Fit:
            needs = movable.needs_of_definition(vm.definition, view.failed, h)
            return movable.check(h, view.records[h.label], needs, copy_storage=False,
                                 pods=pods, seconds=self.seconds, restart=True)

        fits = {r.host.name: (r.value if r.value is not None else movable.Fit(r.host.name,
                                                                              r.error))
                for r in fan_out(list(scope), fit, pool)}
        dom = Domain.parse(vm.definition)
        shape = VMShape(vcpus=max(1, dom.vcpus or 1),
                        memory_mib=max(1, (dom.memory_kib or 1024) // 1024))
        ok = frozenset(h for h, f in fits.items() if f.problem is None)
        why = tuple((h, _why(f.problem)) for h, f in sorted(fits.items())
                    if f.problem is not None)
        leaving = targets.Leaving(vm.name, shape,
                                  group_of(self.store, vm.app, view.failed), ok, why)
        [chosen] = targets.choose(self.store, pool, [leaving], site=None,
                                  pod=view.failed.pod, policy=self.policy, ttl=CLAIM_TTL)
        return chosen

    def _start(self, view: PodView, journal: Journal, p: Planned, where: str, *,
               defined_by_us: bool, locked: bool = False) -> VMOutcome:
        record = view.records[where]
        lock = (contextlib.nullcontext() if locked
                else vm_lock(self.store, f"{where}/{p.vm}", "ha-restart"))
        try:
            with lock:
                vha.start(self.pool.get(record), p.uuid, self.seconds)
        except VirtfleetError as exc:
            journal.add(RecoveryStep("start-failed", self.clock(), vm=p.vm, uuid=p.uuid,
                                     host=where, detail=exc.message))
            self._pace.failed(f"{p.uuid}@{where}", self.clock())
            if defined_by_us:
                with contextlib.suppress(VirtfleetError):  # stays named in the journal
                    vha.undefine_stale(self.pool.get(record), p.uuid, self.seconds)
            return VMOutcome(p.vm, p.uuid, p.priority, "pending", where,
                             f"start on {where} failed: {exc.message}")
        journal.add(RecoveryStep("running", self.clock(), vm=p.vm, uuid=p.uuid, host=where))
        self._pace.done(p.uuid, where)
        self._observed(view, p, where)
        return VMOutcome(p.vm, p.uuid, p.priority, "running", where)

    def _observed(self, view: PodView, p: Planned, where: str) -> None:
        """The store sees the VM where it runs now, at once (not at the next sync)."""
        try:
            seen = self.pool.get(view.records[where]).domain_by_uuid(p.uuid)
            if seen is not None:
                self.store.upsert_domain(where, seen, self.clock())
            if where != view.failed.name:
                self.store.delete_domain(view.failed.name, p.uuid)
            self.store.move_ha_vm(p.uuid, where)
        except VirtfleetError as exc:  # the next sync records it anyway
            log.warning("HA: recording %s on %s: %s", p.vm, where, exc.message)


def _why(problem: VirtfleetError) -> str:
    """A migration check's refusal in a restart's words: without its advice to migrate with
    copy-storage (a restart copies nothing: the disks must already be where the host sees
    them)."""
    text = problem.rule if isinstance(problem, InvalidInput) else problem.message
    return text.split(" (migrate with copy-storage", 1)[0]


def _bare(vm: str, text: str) -> str:
    return text.removeprefix(f"{vm}: ")
