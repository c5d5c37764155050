"""`virtfleet pool ...`: libvirt storage pools (virsh pool-*) on one hypervisor, a pod, a site
or the whole fleet, with a result per host; and the pods' shared storage as pools.

Read-only verbs (list, info, check) default to every hypervisor; verbs that change hosts need a
scope: --host, --pod, --site, --group or --all. The work is the pool service's
(fleet/pools.py); this module parses options and prints what it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.fields import options_named, reword
from virtfleet.cli.options import SCOPE_FLAGS, Group, HostOpt, Json, Pod, Site
from virtfleet.cli.output import emit, emit_json, fields, report_failures, table
from virtfleet.cli.progress import step_progress
from virtfleet.errors import InvalidInput
from virtfleet.units import human_bytes

if TYPE_CHECKING:
    from virtfleet.fleet.pools import PoolDetail, PoolOutcome, PoolService
    from virtfleet.fleet.scope import Answers, Progress, Scope
    from virtfleet.inventory.records import HostRecord

app = typer.Typer(no_args_is_help=True,
                  help="Storage pools: dir, fs, netfs, logical, iscsi, mpath, disk.")

PoolName = Annotated[str, typer.Argument(help="Pool name.", show_default=False)]
AllOpt = Annotated[bool, typer.Option("--all", help="Every hypervisor of the inventory.")]
# The service's field names as this command line names them.
FLAGS = {**SCOPE_FLAGS, "name": "NAME", "type": "--type", "name/type": "NAME/--type",
         "target": "--target", "source_host": "--source-host", "source_path": "--source-path",
         "source_devs": "--source-dev", "vg": "--vg", "iqn": "--iqn", "format": "--format",
         "xml": "--xml"}


@contextmanager
def _service(ctx: typer.Context) -> Iterator[tuple[PoolService, Progress]]:
    """The pool service and a progress callback; its errors worded as this CLI's options."""
    from virtfleet.fleet.pools import PoolService

    with PoolService(app_context(ctx).store()) as service, options_named(FLAGS), \
            step_progress() as tick:
        yield service, tick


def _scope(site: str | None, pod: str | None, host: str | None, group: str | None,
           all_: bool = False) -> Scope:
    from virtfleet.fleet.scope import Scope

    return Scope(host=host, pod=pod, site=site, group=group, all=all_)


def _read(answers: Answers[Any]) -> None:
    """The hosts that failed, named on stderr (the output holds the others' answers)."""
    report_failures(answers.failures, asked=len(answers))


def _exit_if_failed(answers: Answers[Any]) -> None:
    if not answers.ok:
        raise typer.Exit(1)


def _pool_rows(pairs: list[tuple[HostRecord, PoolDetail]], json: bool) -> None:
    if json:
        emit_json([{"host": h.name, "site": h.site, "pod": h.pod, **d.as_json()}
                   for h, d in pairs])
        return
    emit(table(["Host", "Name", "Type", "State", "Autostart", "Capacity", "Available",
                "Target", "Source"],
               [(h.name, d.name, d.type, d.state, "yes" if d.autostart else "no",
                 human_bytes(d.capacity_bytes), human_bytes(d.available_bytes), d.target,
                 d.source) for h, d in pairs]))


@app.command("list")
def list_pools(ctx: typer.Context, site: Site = None, pod: Pod = None, host: HostOpt = None,
               group: Group = None, json: Json = False) -> None:
    """`virsh pool-list --all --details` on every hypervisor in scope (default: all)."""
    with _service(ctx) as (service, tick):
        answers = service.list_pools(_scope(site, pod, host, group), tick)
    _read(answers)
    _pool_rows([(h, d) for h, details in answers.values for d in details], json)
    _exit_if_failed(answers)


@app.command("info")
def info(ctx: typer.Context, name: PoolName, site: Site = None, pod: Pod = None,
         host: HostOpt = None, group: Group = None, json: Json = False) -> None:
    """`virsh pool-info NAME` on every hypervisor in scope (default: all)."""
    with _service(ctx) as (service, tick):
        answers = service.info(name, _scope(site, pod, host, group), tick)
    _read(answers)
    if json:
        emit_json([{"host": h.name, **d.as_json()} for h, d in answers.values])
    else:
        emit("".join(f"{h.name}\n" + fields([
            ("Name", d.name), ("UUID", d.uuid), ("Type", d.type), ("State", d.state),
            ("Persistent", "yes" if d.persistent else "no"),
            ("Autostart", "yes" if d.autostart else "no"),
            ("Capacity", human_bytes(d.capacity_bytes)),
            ("Allocation", human_bytes(d.allocation_bytes)),
            ("Available", human_bytes(d.available_bytes)), ("Target", d.target),
            ("Source", d.source)]) + "\n" for h, d in answers.values))
    _exit_if_failed(answers)


def _read_xml(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput("--xml", f"cannot read {str(path)!r}: {exc.strerror}") from None


@app.command("define")
def define(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Pool name (omit with --xml).",
                                               show_default=False)] = None,
    xml: Annotated[Path | None, typer.Option("--xml", help="A pool XML file.")] = None,
    kind: Annotated[str | None, typer.Option(
        "--type", help="dir, fs, netfs, logical, iscsi, mpath or disk.")] = None,
    target: Annotated[str | None, typer.Option("--target", help="Target path.")] = None,
    source_host: Annotated[str | None, typer.Option(
        "--source-host", help="NFS filer or iSCSI portal.")] = None,
    source_path: Annotated[str | None, typer.Option(
        "--source-path", help="NFS export path.")] = None,
    source_dev: Annotated[list[str] | None, typer.Option(
        "--source-dev", help="Source device (repeat for an LVM VG on several PVs).")] = None,
    vg: Annotated[str | None, typer.Option("--vg", help="LVM volume group name.")] = None,
    iqn: Annotated[str | None, typer.Option("--iqn", help="iSCSI target IQN.")] = None,
    fmt: Annotated[str | None, typer.Option(
        "--format", help="fs: xfs, ext4 ...; netfs: nfs; disk: gpt, dos.")] = None,
    site: Site = None, pod: Pod = None, host: HostOpt = None, group: Group = None,
    all_: AllOpt = False, json: Json = False,
) -> None:
    """Define a persistent pool on every hypervisor in scope (`virsh pool-define[-as]`)."""
    from virtfleet.fleet.pools import DefinePool

    req = DefinePool(_scope(site, pod, host, group, all_), name, kind, target, source_host,
                     source_path, tuple(source_dev or ()), vg, iqn, fmt,
                     _read_xml(xml) if xml is not None else None)
    with _service(ctx) as (service, tick):
        answers = service.define(req, tick)
    _read(answers)
    _pool_rows(answers.values, json)
    _exit_if_failed(answers)


def _print_results(outcomes: Sequence[PoolOutcome], json: bool) -> None:
    """A row for every host, the failed ones too (each also named on stderr); exit 1 if any
    failed."""
    for o in outcomes:
        if o.error is not None:
            reword(o.error, FLAGS)
    report_failures([f for f in (o.failure() for o in outcomes) if f is not None],
                    asked=len(outcomes), rows=True)
    if json:
        emit_json([o.as_json() for o in outcomes])
    else:
        emit(table(["Host", "Pool", "Result"], [(o.host, o.name, o.result) for o in outcomes]))
    if not all(o.ok for o in outcomes):
        raise typer.Exit(1)


Verb = Callable[["PoolService", str, "Scope", "Progress"], "list[PoolOutcome]"]


def _verb(verb: str, help_text: str, call: Verb) -> None:
    def command(ctx: typer.Context, name: PoolName, site: Site = None, pod: Pod = None,
                host: HostOpt = None, group: Group = None, all_: AllOpt = False,
                json: Json = False) -> None:
        with _service(ctx) as (service, tick):
            outcomes = call(service, name, _scope(site, pod, host, group, all_), tick)
        _print_results(outcomes, json)
    command.__doc__ = help_text
    app.command(verb)(command)


_verb("start", "`virsh pool-start`: activate (mount, log in, scan).",
      lambda s, name, scope, tick: s.start(name, scope, tick))
_verb("refresh", "`virsh pool-refresh`: rescan volumes.",
      lambda s, name, scope, tick: s.refresh(name, scope, tick))
_verb("destroy", "`virsh pool-destroy`: stop (unmount, log out); data stays.",
      lambda s, name, scope, tick: s.destroy(name, scope, tick))
_verb("undefine", "`virsh pool-undefine`: forget a stopped pool; data stays.",
      lambda s, name, scope, tick: s.undefine(name, scope, tick))


@app.command("build")
def build(ctx: typer.Context, name: PoolName,
          overwrite: Annotated[bool, typer.Option(
              "--overwrite", help="Format the device even if it holds a filesystem, label or "
              "volume group (its data is lost).")] = False,
          site: Site = None, pod: Pod = None, host: HostOpt = None, group: Group = None,
          all_: AllOpt = False, json: Json = False) -> None:
    """`virsh pool-build`: make the target directory, or format the device; a device that
    already holds a filesystem, label or VG is left alone unless --overwrite."""
    with _service(ctx) as (service, tick):
        outcomes = service.build(name, _scope(site, pod, host, group, all_),
                                 overwrite=overwrite, progress=tick)
    _print_results(outcomes, json)


@app.command("autostart")
def autostart(ctx: typer.Context, name: PoolName,
              disable: Annotated[bool, typer.Option("--disable", help="Turn autostart off.")]
              = False, site: Site = None, pod: Pod = None, host: HostOpt = None,
              group: Group = None, all_: AllOpt = False, json: Json = False) -> None:
    """`virsh pool-autostart [--disable]`: start the pool when libvirtd starts."""
    with _service(ctx) as (service, tick):
        outcomes = service.autostart(name, _scope(site, pod, host, group, all_),
                                     on=not disable, progress=tick)
    _print_results(outcomes, json)


@app.command("apply-pod")
def apply_pod(ctx: typer.Context, site: Site = None, pod: Pod = None, host: HostOpt = None,
              group: Group = None, all_: AllOpt = False, json: Json = False) -> None:
    """Make each pod's declared shared storage (fleet file `storage:`) a defined, active,
    autostarted pool on every hypervisor of the pod."""
    with _service(ctx) as (service, tick):
        outcomes = service.apply_pod(_scope(site, pod, host, group, all_), tick)
    report_failures([f for f in (o.failure() for o in outcomes) if f is not None],
                    asked=len(outcomes), rows=True)
    if json:
        emit_json([o.as_json() for o in outcomes])
    else:
        emit(table(["Host", "Pod", "Pool", "Result"],
                   [(o.host, o.pod, o.name, o.result) for o in outcomes]))
    if not all(o.ok for o in outcomes):
        raise typer.Exit(1)


@app.command("check")
def check(ctx: typer.Context, site: Site = None, pod: Pod = None, host: HostOpt = None,
          group: Group = None, json: Json = False) -> None:
    """Storage preflight: the pod's pool active and writable, autostart pools running,
    SELinux virt_use_nfs where it can be read (default: every hypervisor)."""
    with _service(ctx) as (service, tick):
        answers = service.check(_scope(site, pod, host, group), tick)
    _read(answers)
    if json:
        emit_json([{"host": h.name, "pod": h.pod, **c.as_json()} for h, c in answers.values])
    else:
        def yn(v: bool | None) -> str:
            return "-" if v is None else ("yes" if v else "no")
        emit(table(["Host", "Pod pool", "Pool OK", "SELinux", "virt_use_nfs", "Notes"], [
            (h.name, c.pod_pool or "-", yn(c.pod_pool_ok), c.selinux, yn(c.virt_use_nfs),
             "; ".join(c.problems + c.notes) or "ok") for h, c in answers.values]))
    if not answers.ok or not all(c.ok for _h, c in answers.values):
        raise typer.Exit(1)
