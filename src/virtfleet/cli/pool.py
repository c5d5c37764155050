"""`virtfleet pool ...`: libvirt storage pools (virsh pool-*) on one hypervisor, a pod, a site
or the whole fleet, with a result per host; and the pods' shared storage as pools.

Read-only verbs (list, info, check) default to every hypervisor; verbs that change hosts need a
scope: --host, --pod, --site, --group or --all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.options import Group, HostOpt, Json, Pod, Site
from virtfleet.cli.output import emit, emit_json, fields, report_failures, table
from virtfleet.cli.progress import fleet_progress
from virtfleet.errors import InvalidInput
from virtfleet.units import human_bytes

if TYPE_CHECKING:
    from virtfleet.inventory.fleetfile import PodStorage
    from virtfleet.inventory.records import HostRecord
    from virtfleet.virt.fanout import HostResult
    from virtfleet.virt.host import Host
    from virtfleet.virt.pools import PoolDetail
    from virtfleet.xml.storage import Pool

app = typer.Typer(no_args_is_help=True,
                  help="Storage pools: dir, fs, netfs, logical, iscsi, mpath, disk.")

T = TypeVar("T")
PoolName = Annotated[str, typer.Argument(help="Pool name.", show_default=False)]
AllOpt = Annotated[bool, typer.Option("--all", help="Every hypervisor of the inventory.")]


@dataclass(frozen=True)
class Scope:
    site: str | None
    pod: str | None
    host: str | None
    group: str | None
    all: bool

    @property
    def given(self) -> bool:
        return any((self.site, self.pod, self.host, self.group, self.all))


def _hosts(ctx: typer.Context, scope: Scope, changes: bool) -> list[HostRecord]:
    if changes and not scope.given:
        raise InvalidInput("--host/--pod/--site/--group/--all",
                           "say which hypervisors to change (--all for the whole fleet)")
    return app_context(ctx).store().hypervisors(site=scope.site, pod=scope.pod,
                                                host=scope.host, group=scope.group)


def _run(ctx: typer.Context, what: str, scope: Scope, work: Callable[[Host], T],
         changes: bool, rows: bool = False) -> list[HostResult[T]]:
    """Run `work` on every host in scope with a progress bar; failures named on stderr
    (`rows`: the output will have a row for each of them too)."""
    from virtfleet.queries import ask_fleet, failures

    hosts = _hosts(ctx, scope, changes)
    with fleet_progress(len(hosts), what) as tick:
        results = ask_fleet(hosts, work, progress=tick)
    report_failures(failures(results), asked=len(results), rows=rows)
    return results


def _exit_if_failed(results: list[HostResult[Any]]) -> None:
    if any(r.error is not None for r in results):
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
    from virtfleet.virt.pools import list_pools as pools_of

    results = _run(ctx, "pool-list", Scope(site, pod, host, group, False), pools_of, False)
    _pool_rows([(r.host, d) for r in results if r.value is not None for d in r.value], json)
    _exit_if_failed(results)


@app.command("info")
def info(ctx: typer.Context, name: PoolName, site: Site = None, pod: Pod = None,
         host: HostOpt = None, group: Group = None, json: Json = False) -> None:
    """`virsh pool-info NAME` on every hypervisor in scope (default: all)."""
    from virtfleet.validate import check_name
    from virtfleet.virt.pools import pool_info

    check_name("NAME", name)
    results = _run(ctx, "pool-info", Scope(site, pod, host, group, False),
                   lambda h: pool_info(h, name), False)
    ok = [(r.host, r.value) for r in results if r.value is not None]
    if json:
        emit_json([{"host": h.name, **d.as_json()} for h, d in ok])
    else:
        emit("".join(f"{h.name}\n" + fields([
            ("Name", d.name), ("UUID", d.uuid), ("Type", d.type), ("State", d.state),
            ("Persistent", "yes" if d.persistent else "no"),
            ("Autostart", "yes" if d.autostart else "no"),
            ("Capacity", human_bytes(d.capacity_bytes)),
            ("Allocation", human_bytes(d.allocation_bytes)),
            ("Available", human_bytes(d.available_bytes)), ("Target", d.target),
            ("Source", d.source)]) + "\n" for h, d in ok))
    _exit_if_failed(results)


def _from_file(path: Path) -> Pool:
    from virtfleet.validate import check_name
    from virtfleet.xml.storage import POOL_TYPES, Pool, check_abs_path

    try:
        text = path.read_bytes()
    except OSError as exc:
        raise InvalidInput("--xml", f"cannot read {str(path)!r}: {exc.strerror}") from None
    doc = Pool.parse(text, "--xml")
    if doc.type not in POOL_TYPES:
        raise InvalidInput("--xml", f"pool type {doc.type!r} is not one of "
                           f"{', '.join(POOL_TYPES)}")
    check_name("--xml <name>", doc.name or "")
    if doc.target_path is not None:
        check_abs_path("--xml <target><path>", doc.target_path)
    if doc.source_dir is not None:
        check_abs_path("--xml <source><dir>", doc.source_dir)
    if doc.type != "iscsi":  # an iSCSI source "device" is the target's IQN, not a path
        for dev in doc.source_devices:
            check_abs_path("--xml <source><device>", dev.path or "")
    return doc


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
    from virtfleet.virt.pools import define_pool
    from virtfleet.xml.storage import pool_definition

    if xml is not None:
        if name is not None or kind is not None:
            raise InvalidInput("--xml", "give either an XML file or NAME with --type, not both")
        doc = _from_file(xml)
    else:
        if name is None or kind is None:
            raise InvalidInput("NAME/--type", "give NAME and --type (or --xml FILE)")
        doc = pool_definition(kind, name, target=target, source_host=source_host,
                              source_path=source_path, source_devs=tuple(source_dev or ()),
                              vg=vg, iqn=iqn, fmt=fmt)
    text = doc.to_xml()

    def work(h: Host) -> PoolDetail:
        from virtfleet.xml.storage import Pool

        return define_pool(h, Pool.parse(text))  # a fresh document per host thread

    results = _run(ctx, "pool-define", Scope(site, pod, host, group, all_), work, True)
    _pool_rows([(r.host, r.value) for r in results if r.value is not None], json)
    _exit_if_failed(results)


def _verb(verb: str, help_text: str, call: Callable[[Host, str], PoolDetail | None],
          done: str) -> None:
    def command(ctx: typer.Context, name: PoolName, site: Site = None, pod: Pod = None,
                host: HostOpt = None, group: Group = None, all_: AllOpt = False,
                json: Json = False) -> None:
        from virtfleet.validate import check_name

        check_name("NAME", name)
        results = _run(ctx, f"pool-{verb}", Scope(site, pod, host, group, all_),
                       lambda h: call(h, name), True, rows=True)
        _print_results(results, name, done, json)
        _exit_if_failed(results)
    command.__doc__ = help_text
    app.command(verb)(command)


def _failed(r: HostResult[Any]) -> str:
    assert r.error is not None
    return f"failed: {r.error.in_row(r.host.name)}"


def _print_results(results: list[HostResult[Any]], name: str, done: str, json: bool) -> None:
    rows = [(r.host.name, name, done if r.error is None else _failed(r), r.error is None)
            for r in results]
    if json:
        emit_json([{"host": h, "pool": n, "result": res, "ok": ok} for h, n, res, ok in rows])
    else:
        emit(table(["Host", "Pool", "Result"], [(h, n, res) for h, n, res, _ in rows]))


def _start(h: Host, name: str) -> PoolDetail:
    from virtfleet.virt.pools import start_pool
    return start_pool(h, name)


def _refresh(h: Host, name: str) -> PoolDetail:
    from virtfleet.virt.pools import refresh_pool
    return refresh_pool(h, name)


def _destroy(h: Host, name: str) -> PoolDetail:
    from virtfleet.virt.pools import destroy_pool
    return destroy_pool(h, name)


def _undefine(h: Host, name: str) -> None:
    from virtfleet.virt.pools import undefine_pool
    undefine_pool(h, name)


_verb("start", "`virsh pool-start`: activate (mount, log in, scan).", _start, "started")
_verb("refresh", "`virsh pool-refresh`: rescan volumes.", _refresh, "refreshed")
_verb("destroy", "`virsh pool-destroy`: stop (unmount, log out); data stays.", _destroy,
      "destroyed")
_verb("undefine", "`virsh pool-undefine`: forget a stopped pool; data stays.", _undefine,
      "undefined")


@app.command("build")
def build(ctx: typer.Context, name: PoolName,
          overwrite: Annotated[bool, typer.Option(
              "--overwrite", help="Format the device even if it holds a filesystem, label or "
              "volume group (its data is lost).")] = False,
          site: Site = None, pod: Pod = None, host: HostOpt = None, group: Group = None,
          all_: AllOpt = False, json: Json = False) -> None:
    """`virsh pool-build`: make the target directory, or format the device; a device that
    already holds a filesystem, label or VG is left alone unless --overwrite."""
    from virtfleet.validate import check_name
    from virtfleet.virt.pools import build_pool

    check_name("NAME", name)
    results = _run(ctx, "pool-build", Scope(site, pod, host, group, all_),
                   lambda h: build_pool(h, name, overwrite), True, rows=True)
    _print_results(results, name, "built", json)
    _exit_if_failed(results)


@app.command("autostart")
def autostart(ctx: typer.Context, name: PoolName,
              disable: Annotated[bool, typer.Option("--disable", help="Turn autostart off.")]
              = False, site: Site = None, pod: Pod = None, host: HostOpt = None,
              group: Group = None, all_: AllOpt = False, json: Json = False) -> None:
    """`virsh pool-autostart [--disable]`: start the pool when libvirtd starts."""
    from virtfleet.validate import check_name
    from virtfleet.virt.pools import set_autostart

    check_name("NAME", name)
    results = _run(ctx, "pool-autostart", Scope(site, pod, host, group, all_),
                   lambda h: set_autostart(h, name, not disable), True, rows=True)
    _print_results(results, name, "autostart off" if disable else "autostart on", json)
    _exit_if_failed(results)


def _pod_storage(ctx: typer.Context) -> dict[str, PodStorage | None]:
    fleet = app_context(ctx).store().fleet()
    return {p.name: p.storage for s in fleet.sites for p in s.pods}


@app.command("apply-pod")
def apply_pod(ctx: typer.Context, site: Site = None, pod: Pod = None, host: HostOpt = None,
              group: Group = None, all_: AllOpt = False, json: Json = False) -> None:
    """Make each pod's declared shared storage (fleet file `storage:`) a defined, active,
    autostarted pool on every hypervisor of the pod."""
    from virtfleet.fleet.podstorage import ensure_pod_pool, pod_pool
    from virtfleet.queries import ask_fleet, failures
    from virtfleet.xml.storage import Pool

    wanted = {name: pod_pool(name, st) for name, st in _pod_storage(ctx).items()
              if st is not None}
    texts = {name: doc.to_xml() for name, doc in wanted.items()}
    hosts = [h for h in _hosts(ctx, Scope(site, pod, host, group, all_), True)
             if h.pod in wanted]
    if not hosts:
        raise InvalidInput("--pod", "no pod in scope declares storage in the fleet file")
    pod_of = {h.name: h.pod for h in hosts}

    def work(h: Host) -> str:  # a document per host thread: lxml trees are not shared
        return ensure_pod_pool(h, Pool.parse(texts[pod_of[h.label]]))

    with fleet_progress(len(hosts), "apply-pod") as tick:
        results = ask_fleet(hosts, work, progress=tick)
    report_failures(failures(results), asked=len(results), rows=True)
    rows = [{"host": r.host.name, "pod": r.host.pod, "pool": wanted[r.host.pod].name,
             "result": r.value if r.error is None else _failed(r), "ok": r.error is None}
            for r in results]
    if json:
        emit_json(rows)
    else:
        emit(table(["Host", "Pod", "Pool", "Result"],
                   [(x["host"], x["pod"], x["pool"], x["result"]) for x in rows]))
    _exit_if_failed(results)


@app.command("check")
def check(ctx: typer.Context, site: Site = None, pod: Pod = None, host: HostOpt = None,
          group: Group = None, json: Json = False) -> None:
    """Storage preflight: the pod's pool active and writable, autostart pools running,
    SELinux virt_use_nfs where it can be read (default: every hypervisor)."""
    from virtfleet.fleet.storage_check import StorageCheck, storage_check_of

    storage = _pod_storage(ctx)
    pods = {h.name: h.pod for h in _hosts(ctx, Scope(site, pod, host, group, False), False)}

    def work(h: Host) -> StorageCheck:
        return storage_check_of(h, storage.get(pods[h.label]), pods[h.label])

    results = _run(ctx, "storage check", Scope(site, pod, host, group, False), work, False)
    ok = [(r.host, r.value) for r in results if r.value is not None]
    if json:
        emit_json([{"host": h.name, "pod": h.pod, **c.as_json()} for h, c in ok])
    else:
        def yn(v: bool | None) -> str:
            return "-" if v is None else ("yes" if v else "no")
        emit(table(["Host", "Pod pool", "Pool OK", "SELinux", "virt_use_nfs", "Notes"], [
            (h.name, c.pod_pool or "-", yn(c.pod_pool_ok), c.selinux, yn(c.virt_use_nfs),
             "; ".join(c.problems + c.notes) or "ok") for h, c in ok]))
    if any(r.value is None or not r.value.ok for r in results):
        raise typer.Exit(1)
