"""`virtfleet vm migrate`, `host maintenance`, `host activate`, `host cpu-baseline`.

Parse options, call the migration service (fleet/migration.py), render its result. A progress
bar per migration from the job's own figures, on a terminal; --json prints the results only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.fields import in_text, reword
from virtfleet.cli.options import CpuRatioOpt, Json
from virtfleet.cli.output import emit, emit_json, table, warn
from virtfleet.cli.plan import PolicyFile
from virtfleet.errors import InvalidInput, VirtfleetError

if TYPE_CHECKING:
    from virtfleet.fleet.migration import (
        DrainResult,
        MigrationResult,
        MigrationService,
        MoveProgress,
    )

# The service names its request's fields; the command line names its options.
FLAGS = {"vm": "NAME", "to": "--to", "pod": "--pod", "mode": "--live/--offline",
         "copy_storage": "--copy-storage", "max_downtime_ms": "--max-downtime",
         "bandwidth_mib": "--bandwidth", "host": "HOST", "max_outgoing": "--max-outgoing",
         "max_incoming": "--max-incoming", "reason": "--reason"}

To = Annotated[str | None, typer.Option("--to", help="Target hypervisor (default: the "
                                        "scheduler picks one in the VM's pod).")]
PodOpt = Annotated[str | None, typer.Option("--pod", help="Let the scheduler pick in this pod.")]
Live = Annotated[bool, typer.Option("--live", help="Move it running (default for a running "
                                    "VM).")]
Offline = Annotated[bool, typer.Option("--offline", help="Move a shut-off VM's definition "
                                       "(default for a shut-off VM).")]
CopyStorage = Annotated[bool, typer.Option(
    "--copy-storage", help="Copy disks the target cannot see into its pod's shared pool "
    "(live by QEMU; a shut-off VM's streamed first; the originals stay).")]
MaxDowntime = Annotated[int | None, typer.Option(
    "--max-downtime", metavar="MS", help="Longest pause at the switch-over, in ms.")]
Bandwidth = Annotated[int | None, typer.Option("--bandwidth", metavar="MIB",
                                               help="Migration bandwidth cap, MiB/s.")]
MaxOut = Annotated[int | None, typer.Option(
    "--max-outgoing", help="Migrations at once out of the host (default 2, env "
    "VIRTFLEET_MIGRATE_MAX_OUTGOING).", show_default=False)]
MaxIn = Annotated[int | None, typer.Option(
    "--max-incoming", help="Migrations at once into any one target (default 2, env "
    "VIRTFLEET_MIGRATE_MAX_INCOMING).", show_default=False)]


def _flagged(exc: VirtfleetError) -> VirtfleetError:
    """The service's field names as the options a user typed (a field, or one named in
    backquotes in the text)."""
    if isinstance(exc, InvalidInput) and exc.field in FLAGS:
        return InvalidInput(FLAGS[exc.field], in_text(exc.rule, FLAGS))
    reword(exc, FLAGS)
    return exc


def _words(result: MigrationResult) -> str:
    if result.ok or result.error is None:
        return result.result
    return f"stayed: {_flagged(result.error).message}"


@contextmanager
def _service(ctx: typer.Context, policy_file: Path | None = None,
             cpu_ratio: float | None = None) -> Iterator[MigrationService]:
    from virtfleet.cli.plan import _policy
    from virtfleet.fleet.migration import MigrationService

    policy = _policy(policy_file, cpu_ratio, None, False, None, None)
    with MigrationService(app_context(ctx).store(), policy=policy) as service:
        try:
            yield service
        except VirtfleetError as exc:
            raise _flagged(exc) from None


@contextmanager
def _bars(quiet: bool) -> Iterator[Callable[[MoveProgress], None]]:
    """A bar per migration on stderr (a terminal only), filled from the job's figures."""
    if quiet or not sys.stderr.isatty():
        yield lambda _p: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeElapsedColumn

    tasks: dict[str, Any] = {}
    with Progress("[bold]{task.description}", BarColumn(), "{task.percentage:>3.0f}%",
                  DownloadColumn(binary_units=True), TimeElapsedColumn(), transient=True,
                  console=Console(stderr=True)) as bar:
        def update(p: MoveProgress) -> None:
            key = p.vm
            if key not in tasks:
                tasks[key] = bar.add_task(f"{p.vm} {p.source} -> {p.target}", total=None)
            job = p.job
            if job is not None and job.processed_bytes + job.remaining_bytes:
                bar.update(tasks[key], completed=job.processed_bytes,
                           total=job.processed_bytes + job.remaining_bytes)
        yield update


def _mode(live: bool, offline: bool) -> str:
    if live and offline:
        raise InvalidInput("--live/--offline", "give one of them, not both")
    return "live" if live else "offline" if offline else "auto"


def vm_migrate(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="VM name (omit with --all --host H).",
                                               show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every VM of --host.")] = False,
    host: Annotated[str | None, typer.Option("--host", help="With --all: the hypervisor to "
                                             "empty (it stays schedulable).")] = None,
    to: To = None, pod: PodOpt = None, live: Live = False, offline: Offline = False,
    copy_storage: CopyStorage = False, max_downtime: MaxDowntime = None,
    bandwidth: Bandwidth = None, max_outgoing: MaxOut = None, max_incoming: MaxIn = None,
    cpu_ratio: CpuRatioOpt = None, policy_file: PolicyFile = None, json: Json = False,
) -> None:
    """Move a VM to another hypervisor (`virsh migrate`), live or offline; or every VM of a
    host with --all --host H. Nothing moves unless every check passes; Ctrl-C aborts the
    migration and the VM keeps running where it was."""
    from virtfleet.fleet.migration import DrainRequest, MigrateRequest

    mode = _mode(live, offline)
    if all_:
        if name is not None or host is None:
            raise InvalidInput("--all", "goes with --host H and no NAME")
        if to is not None or mode != "auto":
            raise InvalidInput("--to" if to is not None else "--live/--offline",
                               "does not go with --all (each VM moves as it is, where the "
                               "scheduler puts it)")
        with _service(ctx, policy_file, cpu_ratio) as service, _bars(json) as bar:
            drained = service.drain(DrainRequest(
                host=host, pod=pod, copy_storage=copy_storage, max_outgoing=max_outgoing,
                max_incoming=max_incoming, max_downtime_ms=max_downtime,
                bandwidth_mib=bandwidth, maintenance=False), progress=bar)
        _show_drain(drained, json, maintenance=False)
        return
    if name is None:
        raise InvalidInput("NAME", "name one VM, or use --all --host H")
    if host is not None or max_outgoing is not None or max_incoming is not None:
        raise InvalidInput("--host" if host is not None else "--max-outgoing/--max-incoming",
                           "only goes with --all")
    with _service(ctx, policy_file, cpu_ratio) as service, _bars(json) as bar:
        result = service.migrate(MigrateRequest(
            vm=name, to=to, pod=pod, mode=mode, copy_storage=copy_storage,
            max_downtime_ms=max_downtime, bandwidth_mib=bandwidth), progress=bar)
    if json:
        emit_json(result.as_json())
        return
    copy = (f" with {result.copy_seconds:.1f}s disk copy" if result.copy_seconds is not None
            and result.mode == "offline" else "")
    cost = f"{result.mode}, {result.seconds or 0:.1f}s{copy}" + (
        f", downtime {result.downtime_ms} ms" if result.downtime_ms is not None else "")
    emit(f"Domain '{result.vm}' migrated from {result.source} to {result.target} ({cost})\n")
    for new, old in zip(result.copied, result.kept_on_source, strict=True):
        emit(f"  disk copied to {new}; the original stays on {result.source}: {old}\n")
    if result.unsafe_lab is not None:
        warn(f"lab {result.unsafe_lab}: libvirt's shared-storage check was waived for this "
             "lab's shared directory (see docs/migration.md)")


def host_maintenance(
    ctx: typer.Context,
    host: Annotated[str, typer.Argument(help="Hypervisor to take out of service.")],
    reason: Annotated[str, typer.Option("--reason", help="Why, for the record.")] = "",
    pod: PodOpt = None, copy_storage: CopyStorage = False, max_outgoing: MaxOut = None,
    max_incoming: MaxIn = None, max_downtime: MaxDowntime = None, bandwidth: Bandwidth = None,
    cpu_ratio: CpuRatioOpt = None, policy_file: PolicyFile = None, json: Json = False,
) -> None:
    """Take a hypervisor out of service: placement skips it from now on, and its VMs move
    away (running ones live, shut-off ones offline), a few at a time. A VM that cannot move
    stays, named with the reason. `host activate` brings the host back."""
    from virtfleet.fleet.migration import DrainRequest

    with _service(ctx, policy_file, cpu_ratio) as service, _bars(json) as bar:
        drained = service.drain(DrainRequest(
            host=host, pod=pod, copy_storage=copy_storage, max_outgoing=max_outgoing,
            max_incoming=max_incoming, max_downtime_ms=max_downtime, bandwidth_mib=bandwidth,
            maintenance=True, reason=reason), progress=bar)
    _show_drain(drained, json, maintenance=True)


def _show_drain(drained: DrainResult, json: bool, *, maintenance: bool) -> None:
    if json:
        out = drained.as_json()
        out["vms"] = [{**r.as_json(), "error": _flagged(r.error).message if r.error else None}
                      for r in drained.results]
        emit_json(out)
    else:
        if drained.results:
            emit(table(["Name", "From", "To", "Result"],
                       [(r.vm, r.source, r.target if r.ok else "-", _words(r))
                        for r in drained.results]))
        moved = sum(r.ok for r in drained.results)
        stayed = len(drained.results) - moved
        state = " is in maintenance;" if drained.maintenance else ":"
        emit(f"{drained.host}{state} {moved} VM(s) migrated, {stayed} stayed\n")
    if drained.error is not None:
        warn(f"{drained.error.message}; its VMs were not moved"
             + (" (it stays in maintenance)" if maintenance else ""))
    if drained.cancelled:
        raise typer.Exit(130)
    if not drained.ok:
        raise typer.Exit(1)


def host_activate(ctx: typer.Context,
                  host: Annotated[str, typer.Argument(help="Hypervisor to bring back.")],
                  json: Json = False) -> None:
    """Make a hypervisor schedulable again after `host maintenance` (its VMs stay where they
    went)."""
    with _service(ctx) as service:
        done = service.activate(host)
    if json:
        emit_json(done.as_json())
        return
    if done.declared_maintenance:
        warn(f"{host} is still in maintenance: the fleet file says so (maintenance: true)")
    emit(f"Hypervisor {host} "
         + ("activated" if done.was_in_maintenance else "was not in maintenance") + "\n")


def host_cpu_baseline(
    ctx: typer.Context,
    pod: Annotated[str, typer.Option("--pod", help="Every hypervisor of this pod.")],
    virt_type: Annotated[str, typer.Option("--virt-type", help="kvm or qemu.")] = "kvm",
) -> None:
    """A guest <cpu> every hypervisor of the pod can run (virsh hypervisor-cpu-baseline over
    their host CPUs): VMs given it can live-migrate anywhere in the pod."""
    if virt_type not in ("kvm", "qemu"):
        raise InvalidInput("--virt-type", f"{virt_type!r} is not kvm or qemu")
    with _service(ctx) as service:
        emit(service.cpu_baseline(pod, virt_type).rstrip("\n") + "\n")
