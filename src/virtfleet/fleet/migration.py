"""The migration service: move one VM, or empty a host for maintenance, and bring it back.

    service = MigrationService(store, pool)
    result = service.migrate(MigrateRequest(vm="web01", to="hv2"))        # raises if refused
    drained = service.drain(DrainRequest(host="hv1"))                     # a result per VM
    service.activate("hv1")

Before anything moves, each VM is checked on its source (fleet/movable.py) and against every
possible target; then the scheduler picks among the targets that passed, and room is claimed
there (fleet/targets.py), unless the request names one. The VM is locked for the whole move
(on its source and its target, so nothing else acts on it in either place), and the move is a
journaled operation (provision/migrate.py). Progress goes to a callback; a cancel event (or
Ctrl-C in the calling thread) aborts the migration job and the VM keeps running where it was.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from virtfleet.config import MigrationLimits
from virtfleet.errors import Cancelled, InvalidInput, NotFound, VirtfleetError
from virtfleet.fleet import movable, targets
from virtfleet.fleet.drain import Job, run_bounded
from virtfleet.fleet.scope import FleetService
from virtfleet.inventory.records import HostRecord
from virtfleet.inventory.store import Store
from virtfleet.lab.shared import lab_pod
from virtfleet.placement.models import VMShape
from virtfleet.placement.policy import Policy
from virtfleet.provision import migrate as moving
from virtfleet.provision.locks import vm_lock
from virtfleet.provision.migrate import MoveProgress as MoveProgress  # what Progress hears
from virtfleet.provision.schedule import group_of
from virtfleet.validate import check_name
from virtfleet.virt import migration
from virtfleet.virt.fanout import ConnectionPool, fan_out
from virtfleet.virt.guest import Guest
from virtfleet.virt.host import Host

MODES = ("auto", "live", "offline")
MAX_DOWNTIME_MS = 3_600_000
MAX_BANDWIDTH_MIB = 10_000_000

Progress = Callable[[MoveProgress], None]


# ------------------------------------------------------------------ requests


def _check_tuning(max_downtime_ms: int | None, bandwidth_mib: int | None) -> None:
    if max_downtime_ms is not None and not 1 <= max_downtime_ms <= MAX_DOWNTIME_MS:
        raise InvalidInput("max_downtime_ms", f"must be from 1 to {MAX_DOWNTIME_MS} ms")
    if bandwidth_mib is not None and not 1 <= bandwidth_mib <= MAX_BANDWIDTH_MIB:
        raise InvalidInput("bandwidth_mib", f"must be from 1 to {MAX_BANDWIDTH_MIB} MiB/s")


@dataclass(frozen=True)
class MigrateRequest:
    """Move one VM: to a named host, or to where the scheduler puts it (in a pod, by default
    its own). `mode` auto is live for a running VM and offline for a shut-off one."""

    vm: str
    to: str | None = None
    pod: str | None = None
    mode: str = "auto"
    copy_storage: bool = False
    max_downtime_ms: int | None = None
    bandwidth_mib: int | None = None

    def check(self) -> None:
        check_name("vm", self.vm)
        for name, value in (("to", self.to), ("pod", self.pod)):
            if value is not None:
                check_name(name, value)
        if self.to is not None and self.pod is not None:
            raise InvalidInput("to", "name a target host or a pod for the scheduler, not both")
        if self.mode not in MODES:
            raise InvalidInput("mode", f"{self.mode!r} is not one of {', '.join(MODES)}")
        _check_tuning(self.max_downtime_ms, self.bandwidth_mib)


@dataclass(frozen=True)
class DrainRequest:
    """Move every VM off `host` (running ones live, shut-off ones offline), at most
    `max_outgoing` at once from it and `max_incoming` into any one target. With `maintenance`,
    the host is first taken out of service (placement skips it until activated)."""

    host: str
    pod: str | None = None  # where they may go; default: the host's own pod
    copy_storage: bool = False
    max_outgoing: int | None = None
    max_incoming: int | None = None
    max_downtime_ms: int | None = None
    bandwidth_mib: int | None = None
    maintenance: bool = True
    reason: str = ""

    def check(self) -> None:
        check_name("host", self.host)
        if self.pod is not None:
            check_name("pod", self.pod)
        for name, value in (("max_outgoing", self.max_outgoing),
                            ("max_incoming", self.max_incoming)):
            if value is not None and not 1 <= value <= 64:
                raise InvalidInput(name, "must be from 1 to 64")
        _check_tuning(self.max_downtime_ms, self.bandwidth_mib)


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class MigrationResult:
    """One VM's outcome: moved (ok), or where it stayed and why."""

    vm: str
    source: str
    target: str | None
    mode: str | None  # live or offline; None if it never got that far
    ok: bool
    error: VirtfleetError | None = None
    seconds: float | None = None  # the whole move, an offline disk copy included
    downtime_ms: int | None = None
    copy_seconds: float | None = None  # an offline move's disk copy (before the definition)
    copied: tuple[str, ...] = ()  # new disk paths on the target
    kept_on_source: tuple[str, ...] = ()  # the copied disks' originals, never deleted
    unsafe_lab: str | None = None  # the lab whose shared directory waived libvirt's check

    @property
    def result(self) -> str:
        if self.ok:
            return f"migrated to {self.target} ({self.mode})"
        assert self.error is not None
        return f"stayed: {self.error.message}"

    def as_json(self) -> dict[str, object]:
        return {"vm": self.vm, "source": self.source, "target": self.target, "mode": self.mode,
                "ok": self.ok, "result": "migrated" if self.ok else "stayed",
                "error": self.error.message if self.error else None,
                "error_kind": self.error.kind if self.error else None,
                "seconds": round(self.seconds, 3) if self.seconds is not None else None,
                "downtime_ms": self.downtime_ms,
                "copy_seconds": (round(self.copy_seconds, 3) if self.copy_seconds is not None
                                 else None),
                "copied": list(self.copied),
                "kept_on_source": list(self.kept_on_source), "unsafe_lab": self.unsafe_lab}


@dataclass(frozen=True)
class DrainResult:
    host: str
    maintenance: bool  # the host is (now) out of service
    results: tuple[MigrationResult, ...] = ()
    cancelled: bool = False
    error: VirtfleetError | None = None  # the host itself could not be emptied (unreachable)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.cancelled and all(r.ok for r in self.results)

    def as_json(self) -> dict[str, object]:
        return {"host": self.host, "maintenance": self.maintenance, "ok": self.ok,
                "cancelled": self.cancelled,
                "error": self.error.message if self.error else None,
                "moved": sum(r.ok for r in self.results),
                "stayed": sum(not r.ok for r in self.results),
                "vms": [r.as_json() for r in self.results]}


@dataclass(frozen=True)
class Activated:
    host: str
    was_in_maintenance: bool  # an operator had taken it out of service
    declared_maintenance: bool  # the fleet file still says maintenance: true

    def as_json(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class _Candidate:
    needs: movable.VMNeeds
    live: bool
    fits: dict[str, movable.Fit] = field(default_factory=dict)


# ------------------------------------------------------------------ the service


class MigrationService(FleetService):
    """Without a `pool`, the service opens its own connections and close() ends them."""

    def __init__(self, store: Store, pool: ConnectionPool | None = None, *,
                 policy: Policy | None = None, limits: MigrationLimits | None = None) -> None:
        super().__init__(store, pool, keep_open=True)
        self.policy = policy or Policy()
        self.limits = limits or MigrationLimits.from_env()
        self._seconds = self.pool.timeouts.call

    # -- one VM ---------------------------------------------------------------------------

    def migrate(self, req: MigrateRequest, *, progress: Progress | None = None,
                cancel: threading.Event | None = None) -> MigrationResult:
        """Move one VM; raises what refused or failed it (the VM then stays where it was)."""
        from virtfleet.fleet.locate import locate_vm

        req.check()
        # Cheap and certain before costly: the request, then the store (a target host or pod
        # it lacks), then the VM on its host, then each target (docs/migration.md).
        to = _known(self.store, "to", host=req.to)
        named = to[0] if to is not None else None
        in_pod = _known(self.store, "pod", pod=req.pod)
        source = locate_vm(req.vm, self.store, self.pool)
        with vm_lock(self.store, f"{source.name}/{req.vm}", "migrate"):
            guest = Guest.lookup(self.pool.get(source), req.vm)
            needs = movable.needs_of(guest, source, self._seconds)
            live = needs.flags.active if req.mode == "auto" else req.mode == "live"
            refused = movable.refusal(needs, live, req.copy_storage)
            if refused is not None:
                raise refused
            if named is not None:
                scope = [named]
                pod = named.pod
            else:
                pod = req.pod or source.pod
                scope = [r for r in (in_pod if in_pod is not None
                                     else self.store.hypervisors(pod=pod))
                         if r.name != source.name]
            cand = _Candidate(needs, live)
            self._fit([cand], scope, req.copy_storage)
            if req.to is not None:
                problem = cand.fits[req.to].problem
                if problem is not None:
                    raise problem
            [chosen] = targets.choose(self.store, self.pool, [self._leaving(cand)], site=None,
                                      pod=pod, policy=self.policy,
                                      ttl=self._ttl([needs], 1))
            if chosen.target is None:
                assert chosen.error is not None
                raise chosen.error
            return self._move(cand, chosen.target, req.max_downtime_ms, req.bandwidth_mib,
                              progress, cancel, raise_errors=True)

    # -- a whole host ---------------------------------------------------------------------

    def drain(self, req: DrainRequest, *, progress: Progress | None = None,
              cancel: threading.Event | None = None) -> DrainResult:
        """Move every VM off a host; a VM that cannot move stays, named with the reason."""
        req.check()
        [host] = self.store.hypervisors(host=req.host)
        pod = req.pod or host.pod
        scope = [r for r in self.store.hypervisors(pod=pod) if r.name != host.name]
        if req.maintenance:
            self.store.start_maintenance(host.name, datetime.now(UTC), socket.gethostname(),
                                         os.getpid(), req.reason)
        marked = req.maintenance or host.maintenance
        cancel = cancel or threading.Event()
        verb = "maintenance" if req.maintenance else "migrate"
        try:
            h = self.pool.get(host)
            domains = h.list_domains()
        except VirtfleetError as exc:
            return DrainResult(host.name, marked, error=exc)
        stayed: dict[str, MigrationResult] = {}
        cands: list[_Candidate] = []
        with ExitStack() as locks:
            for d in domains:
                try:
                    locks.enter_context(vm_lock(self.store, f"{host.name}/{d.name}", verb))
                    needs = movable.needs_of(Guest.lookup(h, d.name), host, self._seconds)
                    refused = movable.refusal(needs, needs.flags.active, req.copy_storage)
                    if refused is not None:
                        raise refused
                    cands.append(_Candidate(needs, needs.flags.active))
                except VirtfleetError as exc:
                    stayed[d.name] = MigrationResult(d.name, host.name, None, None, False, exc)
            self._fit(cands, scope, req.copy_storage)
            max_out = req.max_outgoing or self.limits.max_outgoing
            chosen = targets.choose(self.store, self.pool, [self._leaving(c) for c in cands],
                                    site=None, pod=pod, policy=self.policy,
                                    ttl=self._ttl([c.needs for c in cands], max_out))
            jobs: list[Job[MigrationResult]] = []
            for cand, choice in zip(cands, chosen, strict=True):
                name = cand.needs.name
                if choice.target is None:
                    assert choice.error is not None
                    stayed[name] = MigrationResult(name, host.name, None, _mode(cand), False,
                                                   choice.error)
                    continue
                jobs.append(Job(name, host.name, choice.target.name, self._job(
                    cand, choice.target, req, progress, cancel)))
            outcomes = run_bounded(jobs, max_out=max_out,
                                   max_in=req.max_incoming or self.limits.max_incoming,
                                   cancel=cancel)
        moved: dict[str, MigrationResult] = {}
        for job, outcome in zip(jobs, outcomes, strict=True):
            if outcome.value is not None:
                moved[job.key] = outcome.value
                continue
            assert outcome.error is not None
            if not outcome.started:
                self.store.release_placement(job.target, job.key)
            moved[job.key] = MigrationResult(job.key, host.name, job.target, None, False,
                                             outcome.error)
        results = [moved.get(d.name) or stayed[d.name] for d in domains]
        return DrainResult(host.name, marked, tuple(results), cancelled=cancel.is_set())

    def activate(self, host: str) -> Activated:
        """Put an operator's maintenance host back in service."""
        check_name("host", host)
        was = self.store.end_maintenance(host)
        [record] = self.store.hypervisors(host=host)
        return Activated(host, was, record.maintenance)

    # -- a pod's CPU ----------------------------------------------------------------------

    def cpu_baseline(self, pod: str, virt_type: str = "kvm") -> str:
        """A guest CPU every hypervisor of `pod` can run (virsh hypervisor-cpu-baseline over
        their host CPUs): give it to the pod's VMs and live migration never stops at a CPU."""
        check_name("pod", pod)
        hosts = self.store.hypervisors(pod=pod)
        results = fan_out(hosts, lambda h: migration.host_cpu(h, self._seconds), self.pool)
        missing = [r for r in results if r.error is not None]
        if missing:
            assert missing[0].error is not None
            raise missing[0].error
        cpus = [r.value for r in results if r.value is not None]
        return migration.baseline_cpu(self.pool.get(hosts[0]), cpus, virt_type=virt_type,
                                      seconds=self._seconds)

    # -- the parts ------------------------------------------------------------------------

    def _pods(self) -> movable.Storages:
        fleet = self.store.fleet()
        return movable.Storages({p.name: p.storage for s in fleet.sites for p in s.pods})

    def _fit(self, cands: Sequence[_Candidate], scope: Sequence[HostRecord],
             copy_storage: bool) -> None:
        """Ask every possible target about every VM, one connection per target."""
        if not cands or not scope:
            return
        pods = self._pods()
        by_name = {r.name: r for r in scope}

        def ask(h: Host) -> list[movable.Fit]:
            return [movable.check(h, by_name[h.label], c.needs, copy_storage=copy_storage,
                                  pods=pods, seconds=self._seconds) for c in cands]

        for r in fan_out(list(scope), ask, self.pool):
            for i, c in enumerate(cands):
                c.fits[r.host.name] = (r.value[i] if r.value is not None
                                       else movable.Fit(r.host.name, r.error))

    def _leaving(self, cand: _Candidate) -> targets.Leaving:
        n = cand.needs
        ok = frozenset(h for h, f in cand.fits.items() if f.problem is None)
        why = tuple((h, f.problem.rule if isinstance(f.problem, InvalidInput)
                     else f.problem.message) for h, f in sorted(cand.fits.items())
                    if f.problem is not None)
        return targets.Leaving(n.name, VMShape(vcpus=n.vcpus, memory_mib=n.memory_mib),
                               group_of(self.store, n.app, n.source), ok, why)

    def _ttl(self, needs: Sequence[movable.VMNeeds], parallel: int) -> timedelta:
        """Claims outlive the whole batch: every move's deadline, `parallel` at a time."""
        total = sum(self.limits.deadline(n.memory_mib * 2**20) for n in needs)
        return max(timedelta(minutes=15), timedelta(seconds=total / max(1, parallel) + 300))

    def _job(self, cand: _Candidate, target: HostRecord, req: DrainRequest,
             progress: Progress | None, cancel: threading.Event
             ) -> Callable[[], MigrationResult]:
        return lambda: self._move(cand, target, req.max_downtime_ms, req.bandwidth_mib,
                                  progress, cancel, raise_errors=False)

    def _move(self, cand: _Candidate, target: HostRecord, max_downtime_ms: int | None,
              bandwidth_mib: int | None, progress: Progress | None,
              cancel: threading.Event | None, *, raise_errors: bool) -> MigrationResult:
        n = cand.needs
        fit = cand.fits[target.name]
        move = moving.Move(
            vm=n.name, uuid=n.uuid, source=n.source, target=target, live=cand.live,
            memory_mib=n.memory_mib, autostart=n.flags.autostart, copies=fit.copies,
            shared_dirs=fit.shared_dirs, unsafe_lab=self._lab(cand, fit, target),
            max_downtime_ms=max_downtime_ms, bandwidth_mib=bandwidth_mib)
        started = False
        try:
            with vm_lock(self.store, f"{target.name}/{n.name}", "migrate"):
                started = True
                moved = moving.run(self.store, self.pool, move, limits=self.limits,
                                   progress=progress, cancel=cancel)
        except VirtfleetError as exc:
            if not started:  # the move never began: its claim goes back now
                self.store.release_placement(target.name, n.name)
            if raise_errors:
                raise
            return MigrationResult(n.name, n.source.name, target.name, _mode(cand), False, exc)
        except KeyboardInterrupt:
            if not started:
                self.store.release_placement(target.name, n.name)
            raise Cancelled(f"{n.name}: migration to {target.name} interrupted; it stays on "
                            f"{n.source.name}") from None
        return MigrationResult(
            n.name, n.source.name, target.name, _mode(cand), True, seconds=moved.seconds,
            downtime_ms=moved.downtime_ms, copy_seconds=moved.copy_seconds,
            copied=tuple(c.path for c in fit.copies),
            kept_on_source=tuple(c.source_path for c in fit.copies),
            unsafe_lab=move.unsafe_lab)

    @staticmethod
    def _lab(cand: _Candidate, fit: movable.Fit, target: HostRecord) -> str | None:
        """The lab whose shared directories these are, if every one is a lab's on this
        machine (only then is VIR_MIGRATE_UNSAFE passed); else None, and libvirt decides."""
        if not cand.live or not fit.shared_dirs:
            return None
        uris = [cand.needs.source.uri, target.uri]
        labs = {lab_pod(d, uris) for d in fit.shared_dirs}
        return labs.pop() if len(labs) == 1 and None not in labs else None


def _known(store: Store, field: str, *, host: str | None = None,
           pod: str | None = None) -> list[HostRecord] | None:
    """The hypervisor `host` or those of `pod` (None if neither is asked); NotFound naming the
    request's field (in backquotes: the CLI words it as its option)."""
    if host is None and pod is None:
        return None
    try:
        hosts = store.hypervisors(host=host, pod=pod)
    except NotFound:
        what = f"hypervisor {host!r}" if host is not None else f"pod {pod!r}"
        raise NotFound(f"{what} (`{field}`) is not in the inventory") from None
    return hosts


def _mode(cand: _Candidate) -> str:
    return "live" if cand.live else "offline"

