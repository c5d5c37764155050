"""`virtfleet vol ...`: volumes in one pool of one hypervisor (`--host H --pool P`), virsh's
vol-* verbs; and `vol disks VM`: where a VM's disks live and whether its pod shares them. The
work is the volume service's (fleet/volumes.py); this module parses options and prints."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.fields import options_named
from virtfleet.cli.options import Json
from virtfleet.cli.output import emit, emit_json, fields, table
from virtfleet.units import human_bytes

if TYPE_CHECKING:
    from virtfleet.fleet.volumes import VolumeDetail, VolumeService

app = typer.Typer(no_args_is_help=True, help="Volumes in a storage pool of one hypervisor.")

HostReq = Annotated[str, typer.Option("--host", help="The hypervisor.", show_default=False)]
PoolReq = Annotated[str, typer.Option("--pool", help="The storage pool.", show_default=False)]
VolArg = Annotated[str, typer.Argument(help="Volume name (or its path inside the pool).",
                                       show_default=False)]
# The service's field names as these commands name them; `size_bytes` is each one's own.
FLAGS = {"host": "--host", "pool": "--pool", "volume": "VOLUME", "new": "NEW",
         "to_pool": "--to-pool", "format": "--format", "shrink": "--shrink", "file": "FILE",
         "force": "--force", "vm": "NAME"}


@contextmanager
def _service(ctx: typer.Context, flags: Mapping[str, str] = FLAGS
             ) -> Iterator[VolumeService]:
    from virtfleet.fleet.volumes import VolumeService

    with VolumeService(app_context(ctx).store()) as service, options_named(flags):
        yield service


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
    with _service(ctx) as service:
        vols = service.list_volumes(host, pool)
    if json:
        emit_json([v.as_json() for v in vols])
    else:
        emit(table(["Name", "Path", "Format", "Capacity", "Allocation", "Backing"],
                   [(v.name, v.path, v.format, human_bytes(v.capacity_bytes),
                     human_bytes(v.allocation_bytes), v.backing_path) for v in vols]))


@app.command("info")
def info(ctx: typer.Context, volume: VolArg, host: HostReq, pool: PoolReq,
         json: Json = False) -> None:
    """`virsh vol-info` plus format, backing file, and whether the pod shares the pool."""
    from virtfleet.fleet.volumes import VolumeRef

    with _service(ctx) as service:
        report = service.info(VolumeRef(host, pool, volume))
    _show(report.volume, json, {"shared_in_pod": report.sharing.shared,
                                "sharing": report.sharing.basis})


@app.command("create")
def create(ctx: typer.Context, volume: VolArg, host: HostReq, pool: PoolReq,
           size: Annotated[str, typer.Option("--size", help="Capacity: 10G, 512M ...")],
           fmt: Annotated[str, typer.Option("--format", help="raw or qcow2.")] = "qcow2",
           json: Json = False) -> None:
    """`virsh vol-create-as`: an empty volume. Refused if it could outgrow the pool's free
    space (a thin qcow2 that fills its pool pauses its VM)."""
    from virtfleet.fleet.volumes import CreateVolume

    req = CreateVolume(host, pool, volume, _size("--size", size), fmt)
    with _service(ctx, {**FLAGS, "size_bytes": "--size"}) as service:
        _show(service.create(req), json)


@app.command("clone")
def clone(ctx: typer.Context, volume: VolArg,
          new: Annotated[str, typer.Argument(help="Name of the copy.", show_default=False)],
          host: HostReq, pool: PoolReq,
          to_pool: Annotated[str | None, typer.Option(
              "--to-pool", help="Pool for the copy (default: the same).")] = None,
          json: Json = False) -> None:
    """`virsh vol-clone`: a full, independent copy (reflink where the filesystem can)."""
    from virtfleet.fleet.volumes import CloneVolume

    with _service(ctx) as service:
        _show(service.clone(CloneVolume(host, pool, volume, new, to_pool)), json)


@app.command("delete")
def delete(ctx: typer.Context, volume: VolArg, host: HostReq, pool: PoolReq,
           force: Annotated[bool, typer.Option(
               "--force", help="Delete it even if a VM has it as a disk (the VM loses that "
               "disk). A volume another one is backed by is never deleted.")] = False) -> None:
    """`virsh vol-delete`; refused while another volume uses it as its backing file, or
    (without --force) while a VM has it as a disk, on its host or anywhere in its pod."""
    from virtfleet.fleet.volumes import DeleteVolume

    with _service(ctx) as service:
        gone = service.delete(DeleteVolume(host, pool, volume, force))
    emit(f"Vol {gone.name} deleted\n")


@app.command("resize")
def resize(ctx: typer.Context, volume: VolArg,
           size: Annotated[str, typer.Argument(help="New size (10G), or +N to grow by N.",
                                               show_default=False)],
           host: HostReq, pool: PoolReq,
           shrink: Annotated[bool, typer.Option("--shrink", help="Allow making it smaller "
                                                "(data past the end is lost).")] = False,
           json: Json = False) -> None:
    """`virsh vol-resize`: to an absolute size, or grow by +N."""
    from virtfleet.fleet.volumes import ResizeVolume

    grow = size.startswith("+")
    req = ResizeVolume(host, pool, volume, _size("SIZE", size[1:] if grow else size), grow,
                       shrink)
    with _service(ctx, {**FLAGS, "size_bytes": "SIZE"}) as service:
        _show(service.resize(req), json)


@app.command("upload")
def upload(ctx: typer.Context,
           file: Annotated[Path, typer.Argument(help="Local file to send.", show_default=False)],
           volume: VolArg, host: HostReq, pool: PoolReq, json: Json = False) -> None:
    """`virsh vol-upload` into a new volume, holes kept (sparse stream)."""
    from virtfleet.fleet.volumes import UploadVolume

    with _service(ctx) as service:
        _show(service.upload(UploadVolume(host, pool, volume, str(file))), json)


@app.command("download")
def download(ctx: typer.Context, volume: VolArg,
             file: Annotated[Path, typer.Argument(help="Local file to write (must not exist).",
                                                  show_default=False)],
             host: HostReq, pool: PoolReq) -> None:
    """`virsh vol-download` to a new local file, holes kept (sparse stream)."""
    from virtfleet.fleet.volumes import DownloadVolume

    with _service(ctx) as service:
        v = service.download(DownloadVolume(host, pool, volume, str(file)))
    emit(f"Vol {v.name} downloaded to {file}\n")


@app.command("disks")
def disks(ctx: typer.Context,
          vm: Annotated[str, typer.Argument(help="VM name.", show_default=False)],
          host: Annotated[str | None, typer.Option("--host", help="Its hypervisor, if the "
                                                   "name is ambiguous.")] = None,
          json: Json = False) -> None:
    """Where a VM's disks live, and whether each is in a pool its whole pod shares (the
    condition for live migration and restart elsewhere in the pod)."""
    with _service(ctx) as service:
        where = service.disks(vm, host)
    if json:
        emit_json(where.as_json())
        return
    emit(table(["Disk", "Pool", "Shared in pod", "Why"],
               [(d.disk, d.pool, "yes" if d.shared_in_pod else "no", d.sharing)
                for d in where.disks]))
    emit(f"{vm} on {where.host}: " + ("every disk is on pod-shared storage\n"
                                      if where.all_shared_in_pod
                                      else "not every disk is on pod-shared storage\n"))
