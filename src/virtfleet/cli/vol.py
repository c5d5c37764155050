"""`virtfleet vol ...`: volumes in one pool of one hypervisor (`--host H --pool P`), virsh's
vol-* verbs; and `vol disks VM`: where a VM's disks live and whether its pod shares them."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.options import Json
from virtfleet.cli.output import emit, emit_json, fields, table
from virtfleet.errors import InvalidInput, NotFound
from virtfleet.units import human_bytes

if TYPE_CHECKING:
    from virtfleet.fleet.podstorage import Sharing
    from virtfleet.virt.fanout import ConnectionPool
    from virtfleet.virt.host import Host
    from virtfleet.virt.pools import PoolDetail, VolumeDetail

app = typer.Typer(no_args_is_help=True, help="Volumes in a storage pool of one hypervisor.")

HostReq = Annotated[str, typer.Option("--host", help="The hypervisor.", show_default=False)]
PoolReq = Annotated[str, typer.Option("--pool", help="The storage pool.", show_default=False)]
VolArg = Annotated[str, typer.Argument(help="Volume name (or its path inside the pool).",
                                       show_default=False)]
FORMATS = ("raw", "qcow2")


@contextmanager
def _host(ctx: typer.Context, name: str) -> Iterator[tuple[Host, ConnectionPool]]:
    from virtfleet.validate import check_name
    from virtfleet.virt.fanout import ConnectionPool

    check_name("--host", name)
    records = app_context(ctx).store().hypervisors(host=name)
    if not records:
        raise NotFound(f"hypervisor {name!r} is not in the inventory")
    pool = ConnectionPool(one_shot=True)
    try:
        yield pool.get(records[0]), pool
    finally:
        pool.close()


def _name_in(h: Host, pool_name: str, ref: str) -> str:
    """A volume named, or given by a path that must lie directly in the pool's target."""
    from virtfleet.virt.pools import check_volume_ref, pool_info

    if "/" not in ref:
        return check_volume_ref("VOLUME", ref)
    target = pool_info(h, pool_name).target
    norm = posixpath.normpath(ref)
    if not target or posixpath.dirname(norm) != posixpath.normpath(target) or ".." in ref:
        raise InvalidInput("VOLUME", f"{ref!r} is not inside pool {pool_name!r} "
                           f"({target or 'no target path'})")
    return posixpath.basename(norm)


def _size(field: str, text: str) -> int:
    from virtfleet.design.sizes import parse_bytes
    return parse_bytes(field, text)


def _show(v: VolumeDetail, json: bool, extra: dict[str, object] | None = None) -> None:
    if json:
        emit_json({**v.as_json(), **(extra or {})})
        return
    rows: list[tuple[str, object]] = [
        ("Name", v.name), ("Pool", v.pool), ("Path", v.path), ("Type", v.type),
        ("Format", v.format), ("Capacity", human_bytes(v.capacity_bytes)),
        ("Allocation", human_bytes(v.allocation_bytes)), ("Backing file", v.backing_path)]
    for k, val in (extra or {}).items():
        shown = ("yes" if val else "no") if isinstance(val, bool) else val
        rows.append((k.replace("_", " ").capitalize(), shown))
    emit(fields(rows))


@app.command("list")
def list_vols(ctx: typer.Context, host: HostReq, pool: PoolReq, json: Json = False) -> None:
    """`virsh vol-list --details`, after a refresh."""
    from virtfleet.virt.pools import list_volumes

    with _host(ctx, host) as (h, _):
        vols = list_volumes(h, pool)
    if json:
        emit_json([v.as_json() for v in vols])
    else:
        emit(table(["Name", "Path", "Format", "Capacity", "Allocation", "Backing"],
                   [(v.name, v.path, v.format, human_bytes(v.capacity_bytes),
                     human_bytes(v.allocation_bytes), v.backing_path) for v in vols]))


def _sharing(ctx: typer.Context, h: Host, pool_name: str, cp: ConnectionPool) -> Sharing:
    """Whether `pool_name` on `h` is the same storage on every other hypervisor of its pod."""
    from virtfleet.fleet.podstorage import judge_sharing
    from virtfleet.virt.fanout import fan_out
    from virtfleet.virt.pools import list_pools, pool_info

    store = app_context(ctx).store()
    [me] = store.hypervisors(host=h.label)
    fleet = store.fleet()
    declared = next((p.storage for s in fleet.sites for p in s.pods if p.name == me.pod), None)
    others = [r for r in store.hypervisors(pod=me.pod) if r.name != me.name]
    results = fan_out(others, list_pools, cp)
    seen: dict[str, list[PoolDetail] | None] = {r.host.name: r.value for r in results}
    return judge_sharing(pool_info(h, pool_name), declared, seen)


@app.command("info")
def info(ctx: typer.Context, volume: VolArg, host: HostReq, pool: PoolReq,
         json: Json = False) -> None:
    """`virsh vol-info` plus format, backing file, and whether the pod shares the pool."""
    from virtfleet.virt.pools import volume_info

    with _host(ctx, host) as (h, cp):
        v = volume_info(h, pool, _name_in(h, pool, volume))
        sharing = _sharing(ctx, h, pool, cp)
    _show(v, json, {"shared_in_pod": sharing.shared, "sharing": sharing.basis})


@app.command("create")
def create(ctx: typer.Context, volume: VolArg, host: HostReq, pool: PoolReq,
           size: Annotated[str, typer.Option("--size", help="Capacity: 10G, 512M ...")],
           fmt: Annotated[str, typer.Option("--format", help="raw or qcow2.")] = "qcow2",
           json: Json = False) -> None:
    """`virsh vol-create-as`: an empty volume. Refused if it could outgrow the pool's free
    space (a thin qcow2 that fills its pool pauses its VM)."""
    from virtfleet.virt import storage
    from virtfleet.virt.pools import check_volume_name, pool_info, volume_info

    check_volume_name("VOLUME", volume)
    if fmt not in FORMATS:
        raise InvalidInput("--format", f"{fmt!r} is not one of {', '.join(FORMATS)}")
    capacity = _size("--size", size)
    with _host(ctx, host) as (h, _):
        storage.check_fits(pool, pool_info(h, pool).available_bytes, capacity, "--size")
        storage.create_volume(h, pool, volume, capacity, fmt, field="--size")
        _show(volume_info(h, pool, volume), json)


@app.command("clone")
def clone(ctx: typer.Context, volume: VolArg,
          new: Annotated[str, typer.Argument(help="Name of the copy.", show_default=False)],
          host: HostReq, pool: PoolReq,
          to_pool: Annotated[str | None, typer.Option(
              "--to-pool", help="Pool for the copy (default: the same).")] = None,
          json: Json = False) -> None:
    """`virsh vol-clone`: a full, independent copy (reflink where the filesystem can)."""
    from virtfleet.virt import storage
    from virtfleet.virt.pools import check_volume_name, pool_info, volume_in_pool, volume_info

    check_volume_name("NEW", new)
    with _host(ctx, host) as (h, _):
        src = volume_in_pool(h, pool, _name_in(h, pool, volume))
        dest = to_pool or pool
        free = pool_info(h, dest).available_bytes
        if src.capacity_bytes > free and (src.format or "raw") == "raw":
            raise InvalidInput("NEW", f"a copy of {human_bytes(src.capacity_bytes)} is more than "
                               f"the {human_bytes(free)} free in pool {dest!r}")
        storage.clone_volume(h, dest, src, new)
        _show(volume_info(h, dest, new), json)


@app.command("delete")
def delete(ctx: typer.Context, volume: VolArg, host: HostReq, pool: PoolReq) -> None:
    """`virsh vol-delete`; refused while another volume uses it as its backing file."""
    from virtfleet.virt.pools import delete_volume_named

    with _host(ctx, host) as (h, _):
        name = _name_in(h, pool, volume)
        delete_volume_named(h, pool, name)
    emit(f"Vol {name} deleted\n")


@app.command("resize")
def resize(ctx: typer.Context, volume: VolArg,
           size: Annotated[str, typer.Argument(help="New size (10G), or +N to grow by N.",
                                               show_default=False)],
           host: HostReq, pool: PoolReq,
           shrink: Annotated[bool, typer.Option("--shrink", help="Allow making it smaller "
                                                "(data past the end is lost).")] = False,
           json: Json = False) -> None:
    """`virsh vol-resize`: to an absolute size, or grow by +N."""
    from virtfleet.virt.pools import resize_volume, volume_info

    grow = size.startswith("+")
    amount = _size("SIZE", size[1:] if grow else size)
    with _host(ctx, host) as (h, _):
        name = _name_in(h, pool, volume)
        target = amount + (volume_info(h, pool, name).capacity_bytes if grow else 0)
        _show(resize_volume(h, pool, name, target, shrink), json)


@app.command("upload")
def upload(ctx: typer.Context,
           file: Annotated[Path, typer.Argument(help="Local file to send.", show_default=False)],
           volume: VolArg, host: HostReq, pool: PoolReq, json: Json = False) -> None:
    """`virsh vol-upload` into a new volume, holes kept (sparse stream)."""
    from virtfleet.fleet.images import info as image_info
    from virtfleet.virt import storage
    from virtfleet.virt.pools import check_volume_name, pool_info, volume_info

    check_volume_name("VOLUME", volume)
    if not file.is_file():
        raise InvalidInput("FILE", f"{str(file)!r} is not a file")
    fmt = image_info(str(file)).format
    with _host(ctx, host) as (h, _):
        free = pool_info(h, pool).available_bytes
        if file.stat().st_size > free:
            raise InvalidInput("FILE", f"{human_bytes(file.stat().st_size)} is more than the "
                               f"{human_bytes(free)} free in pool {pool!r}")
        storage.upload(h, pool, volume, str(file), fmt)
        _show(volume_info(h, pool, volume), json)


@app.command("download")
def download(ctx: typer.Context, volume: VolArg,
             file: Annotated[Path, typer.Argument(help="Local file to write (must not exist).",
                                                  show_default=False)],
             host: HostReq, pool: PoolReq) -> None:
    """`virsh vol-download` to a new local file, holes kept (sparse stream)."""
    from virtfleet.virt import storage
    from virtfleet.virt.pools import volume_info

    if file.exists():
        raise InvalidInput("FILE", f"{str(file)!r} exists; give a new file name")
    if not file.absolute().parent.is_dir():
        raise InvalidInput("FILE", f"directory {str(file.absolute().parent)!r} does not exist")
    with _host(ctx, host) as (h, _):
        v = volume_info(h, pool, _name_in(h, pool, volume))
        try:
            storage.download(h, v.path, str(file))
        except BaseException:
            file.unlink(missing_ok=True)
            raise
    emit(f"Vol {v.name} downloaded to {file}\n")


@app.command("disks")
def disks(ctx: typer.Context,
          vm: Annotated[str, typer.Argument(help="VM name.", show_default=False)],
          host: Annotated[str | None, typer.Option("--host", help="Its hypervisor, if the "
                                                   "name is ambiguous.")] = None,
          json: Json = False) -> None:
    """Where a VM's disks live, and whether each is in a pool its whole pod shares (the
    condition for live migration and restart elsewhere in the pod)."""
    from virtfleet.cli.vm import one_guest
    from virtfleet.virt.fanout import ConnectionPool
    from virtfleet.virt.storage import volume_at

    rows: list[dict[str, object]] = []
    with one_guest(ctx, vm, host) as guest:
        h = guest.host
        cp = ConnectionPool(one_shot=True)
        try:
            for path in guest.disk_sources():
                vol = volume_at(h, path)
                if vol is None:
                    rows.append({"disk": path, "pool": None, "shared_in_pod": False,
                                 "sharing": "not in any storage pool"})
                    continue
                s = _sharing(ctx, h, vol.pool, cp)
                rows.append({"disk": path, "pool": vol.pool, "shared_in_pod": s.shared,
                             "sharing": s.basis})
        finally:
            cp.close()
        where = h.label
    shared = bool(rows) and all(r["shared_in_pod"] for r in rows)
    if json:
        emit_json({"vm": vm, "host": where, "disks": rows, "all_shared_in_pod": shared})
    else:
        emit(table(["Disk", "Pool", "Shared in pod", "Why"],
                   [(r["disk"], r["pool"], "yes" if r["shared_in_pod"] else "no", r["sharing"])
                    for r in rows]))
        emit(f"{vm} on {where}: " + ("every disk is on pod-shared storage\n" if shared
                                     else "not every disk is on pod-shared storage\n"))
