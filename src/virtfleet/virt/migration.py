"""Moving a running or shut-off domain between two hypervisors: libvirt's calls, nothing else.

The migration itself is peer to peer (VIR_MIGRATE_PEER2PEER): the source's libvirtd drives it
and talks to the target's libvirtd on the URI the fleet file gives, so a client that dies
halfway does not strand the domain paused between two hosts. The target's copy stays
transient while memory moves; the source is undefined by libvirt when (and only when) the
migration succeeded, and the caller then makes the target's copy persistent. So the domain is
never persistently defined on both hosts at once.

Every call has a deadline: short calls run in a helper thread the caller stops waiting for,
and the migration itself is watched by the caller, which aborts its job when time is up.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import libvirt
from lxml import etree

from virtfleet.errors import HypervisorError, OperationTimeout, VirtfleetError
from virtfleet.virt.errors import map_error
from virtfleet.virt.guest import Guest
from virtfleet.virt.host import Host

T = TypeVar("T")

# Flags for the XML a migration carries: with secrets (graphics passwords travel with the
# domain, never through virtfleet's output) and without what only this host's run needs.
_LIVE_XML = libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE
_CONFIG_XML = _LIVE_XML | libvirt.VIR_DOMAIN_XML_INACTIVE


def bounded(label: str, seconds: float, fn: Callable[[], T]) -> T:
    """Run one libvirt call; OperationTimeout if it has not answered within `seconds` (the
    call is abandoned, its thread ends when libvirt's keepalive gives up on the peer)."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["value"] = fn()
        except libvirt.libvirtError as exc:
            box["error"] = map_error(exc, label)
        except VirtfleetError as exc:
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name=f"call {label}", daemon=True).start()
    if not done.wait(seconds):
        raise OperationTimeout(f"{label}: no answer within {seconds:g}s")
    if "error" in box:
        raise box["error"]
    if "value" not in box:  # the call raised something else: its traceback is on stderr
        raise HypervisorError(f"{label}: internal error in a libvirt call")
    return box["value"]  # type: ignore[no-any-return]


def _label(guest: Guest) -> str:
    return f"{guest.host.label}/{guest.name}"


# ------------------------------------------------------------------ the domain's own facts


def config_xml(guest: Guest, seconds: float) -> str:
    """The persistent definition, with secrets: what the target is defined with afterwards."""
    return str(bounded(_label(guest), seconds, lambda: guest.handle.XMLDesc(_CONFIG_XML)))


def live_xml(guest: Guest, seconds: float) -> str:
    """The running definition, with secrets, as a migration's destination XML starts."""
    return str(bounded(_label(guest), seconds, lambda: guest.handle.XMLDesc(_LIVE_XML)))


@dataclass(frozen=True)
class DomainFlags:
    """What decides whether, and how, a domain can move."""

    active: bool
    persistent: bool
    autostart: bool
    snapshots: int
    managed_save: bool
    paused_by_migration: bool


def domain_flags(guest: Guest, seconds: float) -> DomainFlags:
    dom = guest.handle

    def ask() -> DomainFlags:
        state, reason = dom.state()
        persistent = bool(dom.isPersistent())
        return DomainFlags(
            active=bool(dom.isActive()), persistent=persistent,
            autostart=bool(dom.autostart()) if persistent else False,
            snapshots=int(dom.snapshotNum(0)),
            managed_save=bool(dom.hasManagedSaveImage(0)) if persistent else False,
            paused_by_migration=(state == libvirt.VIR_DOMAIN_PAUSED
                                 and reason == libvirt.VIR_DOMAIN_PAUSED_MIGRATION))

    return bounded(_label(guest), seconds, ask)


def disk_capacity(guest: Guest, target_dev: str, seconds: float) -> int:
    """Bytes the guest sees on one disk (what a copy on the target must hold)."""
    info = bounded(_label(guest), seconds, lambda: guest.handle.blockInfo(target_dev, 0))
    return int(info[0])


# ------------------------------------------------------------------ the target's CPU


def check_cpu(target: Host, cpu: etree._Element, *, emulator: str | None, arch: str | None,
              machine: str | None, virt_type: str | None, seconds: float) -> str | None:
    """Whether `target`'s hypervisor can give a guest the CPU `cpu` (a domain's <cpu>, or a
    host's from its capabilities). None if it can; libvirt's reason (the missing features) if
    not; raises only when the host cannot be asked. A driver that cannot compare (the test
    driver) gives no answer, which counts as yes: libvirt checks again on the target."""
    xml = etree.tostring(cpu, encoding="unicode")

    def compare() -> str | None:
        try:
            target.conn.compareHypervisorCPU(
                emulator, arch, machine, virt_type, xml,
                libvirt.VIR_CONNECT_COMPARE_CPU_FAIL_INCOMPATIBLE)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_CPU_INCOMPATIBLE:
                return (exc.get_error_message() or str(exc)).strip().splitlines()[0]
            if exc.get_error_code() in (libvirt.VIR_ERR_NO_SUPPORT,
                                        libvirt.VIR_ERR_OPERATION_UNSUPPORTED):
                return None
            raise
        return None

    return bounded(target.label, seconds, compare)


def host_cpu(host: Host, seconds: float) -> etree._Element:
    """The host's own CPU (capabilities' host/cpu), as a baseline call takes it."""
    caps = bounded(host.label, seconds, lambda: str(host.conn.getCapabilities()))
    cpu = etree.fromstring(caps.encode()).find("host/cpu")
    if cpu is None:
        raise HypervisorError(f"{host.label}: its capabilities name no host CPU")
    return cpu


def baseline_cpu(host: Host, cpus: Sequence[etree._Element], *, virt_type: str,
                 seconds: float) -> str:
    """The largest CPU every one of `cpus` can run (virsh hypervisor-cpu-baseline), as a
    domain <cpu> element, asked of `host`'s hypervisor."""
    xmls = [etree.tostring(c, encoding="unicode") for c in cpus]
    return str(bounded(host.label, seconds, lambda: host.conn.baselineHypervisorCPU(
        None, None, None, virt_type, xmls, libvirt.VIR_CONNECT_BASELINE_CPU_MIGRATABLE)))


# ------------------------------------------------------------------ the migration


@dataclass(frozen=True)
class Plan:
    """One migration, as libvirt is asked for it."""

    dest_uri: str  # the target's libvirt URI, which the source's libvirtd connects to
    live: bool
    migrate_uri: str | None = None  # where QEMU's stream goes: tcp://TARGET_ADDRESS
    dest_xml: str | None = None  # the definition as the target gets it (offline: only when
    # disks were copied to new paths)
    persist_xml: str | None = None  # offline: the definition the target keeps
    copy_disks: tuple[str, ...] = ()  # target devs whose contents are copied (NBD)
    bandwidth_mib: int | None = None  # MiB/s
    unsafe: bool = False  # skip libvirt's shared-storage check (a lab's shared directory)


def flags_and_params(plan: Plan) -> tuple[int, dict[str, Any]]:
    """libvirt's flags and typed parameters for `plan`."""
    flags = libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    params: dict[str, Any] = {}
    if plan.live:
        # No PERSIST_DEST: the target stays transient until the source is undefined, and
        # virtfleet defines it afterwards (never persistent on both hosts at once).
        flags |= libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_ABORT_ON_ERROR
        if plan.dest_xml is not None:
            params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = plan.dest_xml
        if plan.copy_disks:
            flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(plan.copy_disks)
    else:
        # An offline migration moves only the definition; libvirt requires it persistent on
        # the target. The source, held by the migration job, cannot be started meanwhile.
        flags |= libvirt.VIR_MIGRATE_OFFLINE | libvirt.VIR_MIGRATE_PERSIST_DEST
        if plan.dest_xml is not None:  # disks copied beforehand: the definition at new paths
            params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = plan.dest_xml
        if plan.persist_xml is not None:
            params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = plan.persist_xml
    if plan.migrate_uri is not None:
        params[libvirt.VIR_MIGRATE_PARAM_URI] = plan.migrate_uri
    if plan.bandwidth_mib is not None:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = plan.bandwidth_mib
    if plan.unsafe:
        flags |= libvirt.VIR_MIGRATE_UNSAFE
    return flags, params


@dataclass(frozen=True)
class JobProgress:
    """The migration job as libvirt reports it (virsh domjobinfo)."""

    processed_bytes: int
    remaining_bytes: int
    total_bytes: int
    iteration: int  # memory passes so far; each pass resends what the guest dirtied
    elapsed_ms: int

    @property
    def fraction(self) -> float:
        done = self.processed_bytes + self.remaining_bytes
        return self.processed_bytes / done if done else 0.0


@dataclass(frozen=True)
class Completed:
    """What the finished migration cost, from the target's record of it."""

    downtime_ms: int | None
    processed_bytes: int | None
    elapsed_ms: int | None


class Migration:
    """A migration running in its own thread; the caller watches, reports and may abort."""

    def __init__(self, guest: Guest, plan: Plan) -> None:
        self.guest = guest
        self.plan = plan
        self._error: VirtfleetError | None = None
        self.refused_as_unsafe = False  # libvirt could not prove the disks' storage shared
        self._done = threading.Event()
        self._started = time.monotonic()
        flags, params = flags_and_params(plan)

        def run() -> None:
            try:
                guest.handle.migrateToURI3(plan.dest_uri, params, flags)
            except libvirt.libvirtError as exc:
                self.refused_as_unsafe = exc.get_error_code() == libvirt.VIR_ERR_MIGRATE_UNSAFE
                self._error = map_error(exc, _label(guest))
            finally:
                self._done.set()

        self._thread = threading.Thread(target=run, name=f"migrate {guest.name}", daemon=True)
        self._thread.start()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self._started

    def wait(self, seconds: float) -> bool:
        """True once the migration call has returned (either way)."""
        return self._done.wait(seconds)

    def error(self) -> VirtfleetError | None:
        """After wait() said done: None on success, else what libvirt said."""
        return self._error

    def progress(self, seconds: float) -> JobProgress | None:
        """The job's figures, or None between phases (no job, or the domain just left)."""
        try:
            st = bounded(_label(self.guest), seconds, lambda: self.guest.handle.jobStats(0))
        except VirtfleetError:
            return None
        if st.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
            return None
        return JobProgress(
            processed_bytes=int(st.get("data_processed", 0)),
            remaining_bytes=int(st.get("data_remaining", 0)),
            total_bytes=int(st.get("data_total", 0)),
            iteration=int(st.get("memory_iteration", 0)),
            elapsed_ms=int(st.get("time_elapsed", 0)))

    def abort(self, seconds: float) -> None:
        """Cancel the job; the source keeps running the guest (libvirt resumes it there). A
        job already finished or not yet started raises nothing: wait() then tells."""
        # No job (finished, or not begun): the migration call's outcome decides.
        with contextlib.suppress(VirtfleetError):
            bounded(_label(self.guest), seconds, lambda: self.guest.handle.abortJob())


def abort_job(guest: Guest, seconds: float) -> None:
    """Cancel a migration nobody watches any more (its client died), and wait until the
    domain's job has ended, so what the hosts say afterwards is final."""
    label = _label(guest)
    bounded(label, seconds, lambda: guest.handle.abortJob())
    deadline = time.monotonic() + seconds
    while job_running(guest, seconds):
        if time.monotonic() > deadline:
            raise OperationTimeout(f"{label}: its migration job did not end within "
                                   f"{seconds:g}s of being aborted")
        time.sleep(0.2)


def set_max_downtime(guest: Guest, ms: int, seconds: float) -> None:
    """The longest pause the final switch-over may take (virsh migrate-setmaxdowntime)."""
    bounded(_label(guest), seconds, lambda: guest.handle.migrateSetMaxDowntime(ms, 0))


def job_running(guest: Guest, seconds: float) -> bool:
    """Whether the domain has a job (a migration still under way after its client died). A
    driver without jobs (the test driver) has none."""
    def ask() -> bool:
        try:
            return bool(guest.handle.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
                return False
            raise

    return bounded(_label(guest), seconds, ask)


def completed(guest: Guest, seconds: float) -> Completed | None:
    """The finished incoming migration's figures, asked of the target's domain."""
    try:
        st = bounded(_label(guest), seconds, lambda: guest.handle.jobStats(
            libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED))
    except VirtfleetError:
        return None
    if not st:
        return None

    def num(key: str) -> int | None:
        return int(st[key]) if key in st else None
    return Completed(num("downtime"), num("data_processed"), num("time_elapsed"))


def make_persistent(target: Host, xml: str, autostart: bool, seconds: float) -> None:
    """Define the (running, transient) domain on `target` with `xml` as its persistent
    definition, and set its autostart as the source had it."""
    def define() -> None:
        dom = target.conn.defineXML(xml)
        if autostart:
            dom.setAutostart(1)

    bounded(target.label, seconds, define)


def undefine_left_behind(guest: Guest, seconds: float) -> None:
    """Remove the inactive definition a migration left on its source (its Confirm step did not
    run). Snapshots and managed-save images were refused before the migration began; an NVRAM
    file stays, since the target may be using it from shared storage."""
    bounded(_label(guest), seconds, lambda: guest.handle.undefineFlags(
        libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM))


def destroy_incoming(guest: Guest, seconds: float) -> None:
    """Stop a target's half-made incoming copy (its migration failed or was interrupted).
    Gone already (libvirt tears it down itself once the source gives up) counts as done."""
    def destroy() -> None:
        try:
            guest.handle.destroy()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in (libvirt.VIR_ERR_NO_DOMAIN,
                                            libvirt.VIR_ERR_OPERATION_INVALID):
                raise

    bounded(_label(guest), seconds, destroy)


def resume(guest: Guest, seconds: float) -> None:
    bounded(_label(guest), seconds, lambda: guest.handle.resume())
