"""Moving one VM to a chosen hypervisor: it lands there, or it keeps running where it was.

A journaled operation (provision/journal.py) with two steps on record before anything moves:
the placement claim on the target, and the migration itself (VM, UUID, target, and the
volumes made on the target for copied disks). Then:

1. copied disks get their new volumes on the target;
2. libvirt migrates, peer to peer; the target's copy stays transient, libvirt undefines the
   source only when the migration succeeded (virt/migration.py);
3. the target's copy is made persistent with the source's persistent definition, where
   virtfleet's facts now name the target's site and pod;
4. the store records the VM on the target, and the claim is released.

If anything fails, is aborted (Ctrl-C, or the migration's deadline) or the process dies,
`settle` decides from what libvirt says about both hosts, never from what was intended: a VM
still running on its source is left there (a half-made incoming copy stopped, volumes made for
it removed); a VM already running on the target is finished there (its source's leftover
definition undefined, its copy made persistent). `virtfleet ops cleanup` runs the same
`settle` for a migration whose process died.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from virtfleet.config import MigrationLimits
from virtfleet.errors import (
    Cancelled,
    Conflict,
    HypervisorError,
    NotFound,
    OperationTimeout,
    VirtfleetError,
)
from virtfleet.inventory.records import HostRecord, Made
from virtfleet.inventory.store import Store
from virtfleet.inventory.uri import parse_uri
from virtfleet.provision.journal import journaled
from virtfleet.virt import migration, storage
from virtfleet.virt.fanout import ConnectionPool
from virtfleet.virt.guest import Guest
from virtfleet.virt.host import Host
from virtfleet.xml.domain import Domain

KIND = "migration"
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class CopyDisk:
    """A disk copied into a new volume on the target: by QEMU during a live migration, or
    streamed from volume to volume before an offline one."""

    dev: str
    source_path: str
    pool: str  # the target pool it goes into
    name: str  # the new volume's name there
    path: str  # the new volume's path (the target domain's disk source)
    capacity_bytes: int
    format: str


@dataclass(frozen=True)
class Move:
    """Everything decided before a VM moves."""

    vm: str
    uuid: str
    source: HostRecord
    target: HostRecord
    live: bool
    memory_mib: int
    autostart: bool
    copies: tuple[CopyDisk, ...] = ()
    shared_dirs: tuple[str, ...] = ()  # pod directories libvirt cannot see are shared
    unsafe_lab: str | None = None  # the lab whose shared directory makes VIR_MIGRATE_UNSAFE true
    max_downtime_ms: int | None = None
    bandwidth_mib: int | None = None


@dataclass(frozen=True)
class MoveProgress:
    vm: str
    source: str
    target: str
    job: migration.JobProgress | None


@dataclass(frozen=True)
class Moved:
    seconds: float
    downtime_ms: int | None
    processed_bytes: int | None


Progress = Callable[[MoveProgress], None]


def migrate_uri(target: HostRecord) -> str | None:
    """Where QEMU's migration stream goes: the target's address from its libvirt URI, so the
    target is never reached by a host name it reports about itself."""
    host = parse_uri(target.uri).host
    if not host:
        return None
    return f"tcp://[{host}]" if ":" in host else f"tcp://{host}"


@dataclass(frozen=True)
class Step:
    """The journal's record of one migration: enough for any later process to settle it."""

    vm: str
    uuid: str
    target: str
    volumes: tuple[tuple[str, str], ...] = ()  # (pool, name) made on the target for copies
    autostart: bool = False  # the VM's autostart, switched off on the source while it moves

    def ref(self) -> str:
        vols = ",".join(f"{p}/{n}" for p, n in self.volumes)
        return f"{self.vm}/{self.uuid}>{self.target}>{vols}" + (
            ">autostart" if self.autostart else "")

    @classmethod
    def parse(cls, ref: str) -> Step:
        vm_uuid, target, vols, *flags = [*ref.split(">"), ""][:4]
        vm, _, uuid = vm_uuid.partition("/")
        volumes = tuple((p, n) for p, _, n in (v.partition("/") for v in vols.split(",") if v))
        return cls(vm, uuid, target, volumes, flags == ["autostart"])


def _step(move: Move) -> Step:
    return Step(move.vm, move.uuid, move.target.name,
                tuple((c.pool, c.name) for c in move.copies), move.autostart)


def _retarget(doc: Domain, move: Move) -> str:
    """The definition as the target keeps it: copied disks at their new paths, virtfleet's
    facts naming the target's site and pod."""
    new_paths = {c.dev: c.path for c in move.copies}
    for d in doc.devices.disks:
        if d.target_dev in new_paths:
            d.source_file = new_paths[d.target_dev]
    facts = doc.facts
    if facts is not None:
        facts.site, facts.pod = move.target.site, move.target.pod
    return doc.to_xml()


def _observe(store: Store, host: Host, source: str, vm: str, uuid: str) -> None:
    """The store sees the VM on its new host at once (not at the next sync), and its claim,
    now counted as an observed VM, goes."""
    seen = host.domain_by_uuid(uuid)
    if seen is not None:
        store.upsert_domain(host.label, seen, datetime.now(UTC))
    store.delete_domain(source, uuid)
    store.release_placement(host.label, vm)


def run(store: Store, pool: ConnectionPool, move: Move, *, limits: MigrationLimits,
        progress: Progress | None = None, cancel: threading.Event | None = None) -> Moved:
    """Move the VM (its target's room already claimed), or leave it where it was."""
    target = move.target
    seconds = pool.timeouts.call
    src = pool.get(move.source)
    dst = pool.get(target)
    guest = Guest.lookup(src, move.vm)
    if guest.uuid != move.uuid:
        raise Conflict(f"{move.source.name}/{move.vm} is another domain than the one checked "
                       "(its UUID changed); nothing was moved")
    with journaled(store, pool, "migrate", f"{move.vm} {move.source.name}->{target.name}"
                   ) as op:
        op.made(Made("claim", target.name, move.vm))
        op.made(Made(KIND, move.source.name, _step(move).ref()))
        if move.autostart:
            # Until it has landed, a restart of the source's libvirtd must not start it there
            # (libvirt leaves the source defined if its client dies mid-migration).
            guest.set_autostart(False)
        config = _retarget(Domain.parse(migration.config_xml(guest, seconds)), move)
        # Offline, libvirt keeps the definition it is sent as the domain XML (its persist
        # XML alone left copied disks at their old paths): send the retargeted one.
        dest = (_retarget(Domain.parse(migration.live_xml(guest, seconds)), move)
                if move.live else config if move.copies else None)
        for c in move.copies:  # live: QEMU fills them; offline: streamed here, host to host
            if move.live:
                storage.create_volume(dst, c.pool, c.name, c.capacity_bytes, c.format)
            else:
                storage.copy_volume(src, c.source_path, dst, c.pool, c.name, c.format)
        if move.live and move.max_downtime_ms is not None:
            migration.set_max_downtime(guest, move.max_downtime_ms, seconds)
        moved_bytes = move.memory_mib * 2**20 + sum(c.capacity_bytes for c in move.copies)
        plan = migration.Plan(
            dest_uri=target.uri, live=move.live, migrate_uri=migrate_uri(target),
            dest_xml=dest, persist_xml=None if move.live else config,
            copy_disks=tuple(c.dev for c in move.copies), bandwidth_mib=move.bandwidth_mib,
            unsafe=move.unsafe_lab is not None)
        job = migration.Migration(guest, plan)
        _watch(job, move, limits.deadline(moved_bytes) if move.live else limits.min_seconds,
               seconds, progress, cancel)
        err = job.error()
        if err is not None:
            raise _explain(err, job, move)
        # Migrated: libvirt has undefined the source. Only now is the target's copy defined.
        landed = Guest.lookup(dst, move.vm)
        if move.live:
            migration.make_persistent(dst, config, move.autostart, seconds)
        elif move.autostart:
            landed.set_autostart(True)
        done = migration.completed(landed, seconds) if move.live else None
        _observe(store, dst, move.source.name, move.vm, move.uuid)
    return Moved(job.seconds, done.downtime_ms if done else None,
                 done.processed_bytes if done else None)


def _watch(job: migration.Migration, move: Move, deadline: float, seconds: float,
           progress: Progress | None, cancel: threading.Event | None) -> None:
    """Report the job until it ends; abort it on cancel, Ctrl-C or its deadline."""
    why: VirtfleetError
    try:
        while not job.wait(POLL_SECONDS):
            if cancel is not None and cancel.is_set():
                why = Cancelled(f"{move.vm}: migration to {move.target.name} cancelled; it "
                                f"keeps running on {move.source.name}")
                break
            if job.seconds > deadline:
                why = OperationTimeout(
                    f"{move.vm}: migration to {move.target.name} did not complete within "
                    f"{deadline:g}s and was aborted; it keeps running on {move.source.name}")
                break
            if progress is not None:
                progress(MoveProgress(move.vm, move.source.name, move.target.name,
                                      job.progress(seconds)))
        else:
            return
    except KeyboardInterrupt:
        why = Cancelled(f"{move.vm}: migration to {move.target.name} interrupted and "
                        f"aborted; it keeps running on {move.source.name}")
    job.abort(seconds)
    if not job.wait(2 * seconds):
        raise HypervisorError(f"{move.vm}: the migration to {move.target.name} did not stop "
                              f"within {2 * seconds:g}s of its abort")
    if job.error() is None:
        return  # it completed before the abort took hold: finish it
    raise why


def _explain(err: VirtfleetError, job: migration.Migration, move: Move) -> VirtfleetError:
    if not job.refused_as_unsafe:
        return err
    where = ", ".join(move.shared_dirs) or "its disks' storage"
    return Conflict(
        f"{move.vm}: libvirt refuses to live-migrate it: it cannot tell that {where} "
        "is storage both hosts share (a plain directory). virtfleet overrides that check only "
        "in a virtfleet lab on this machine (docs/migration.md); put the pod's disks on NFS "
        "(netfs) or a cluster filesystem, or migrate with copy-storage")


# ------------------------------------------------------------------ settling


def settle(made: Made, store: Store, pool: ConnectionPool) -> None:
    """Bring an interrupted or failed migration to a safe end, from what both hosts say.

    Runs while rolling back a failure, and from `ops cleanup`. Raises (and so stays in the
    journal) when a host cannot be asked: a VM is never guessed to be somewhere.
    """
    step = Step.parse(made.ref)
    vm, uuid, target_name, volumes = step.vm, step.uuid, step.target, list(step.volumes)
    seconds = pool.timeouts.call
    [src_rec] = store.hypervisors(host=made.host)
    [dst_rec] = store.hypervisors(host=target_name)
    src, dst = pool.get(src_rec), pool.get(dst_rec)
    s = _by_uuid(src, uuid)
    sf = _flags(s, seconds)
    if s is not None and sf is not None and sf.active and migration.job_running(s, seconds):
        migration.abort_job(s, seconds)  # a migration whose client died
    s, t = _by_uuid(src, uuid), _by_uuid(dst, uuid)
    sf, tf = _flags(s, seconds), _flags(t, seconds)
    if s is not None and sf is not None and sf.active:
        # It runs on its source: roll back. A copy on the target must not stay startable.
        if t is not None and tf is not None:
            if tf.active and tf.persistent:
                raise Conflict(f"{vm} ({uuid}) runs on both {made.host} and {target_name}: "
                               "virtfleet touches neither; stop one by hand")
            if tf.persistent:
                migration.undefine_left_behind(t, seconds)
            else:
                migration.destroy_incoming(t, seconds)  # the half-made incoming copy
        if sf.paused_by_migration:
            migration.resume(s, seconds)
        if step.autostart:
            s.set_autostart(True)
        _remove_volumes(dst, volumes)
        return
    if t is not None and tf is not None and (tf.active or tf.persistent):
        # It runs (or, offline, is defined) on the target: finish there.
        if s is not None and sf is not None:
            migration.undefine_left_behind(s, seconds)  # libvirt's Confirm did not run
        if not tf.persistent:
            # The definition the source had is gone with it; the running one is kept.
            migration.make_persistent(dst, migration.live_xml(t, seconds), step.autostart,
                                      seconds)
        _observe(store, dst, made.host, vm, uuid)
        return
    if s is not None and sf is not None:  # nothing moved
        if step.autostart:
            s.set_autostart(True)
        _remove_volumes(dst, volumes)
        return
    raise HypervisorError(f"{vm} ({uuid}) is defined on neither {made.host} nor "
                          f"{target_name}: find it before cleaning up")


def _flags(guest: Guest | None, seconds: float) -> migration.DomainFlags | None:
    """The domain's flags, or None if there is none (or it just went: a transient copy)."""
    if guest is None:
        return None
    try:
        return migration.domain_flags(guest, seconds)
    except NotFound:
        return None


def _by_uuid(host: Host, uuid: str) -> Guest | None:
    rec = host.domain_by_uuid(uuid)
    try:
        return None if rec is None else Guest.lookup(host, rec.name)
    except NotFound:
        return None  # went between the two calls (a transient copy torn down)


def _remove_volumes(host: Host, volumes: list[tuple[str, str]]) -> None:
    for pool_name, name in volumes:
        with contextlib.suppress(NotFound):  # never made, or already removed
            storage.delete_named(host, pool_name, name)
