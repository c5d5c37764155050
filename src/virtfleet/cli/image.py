"""`virtfleet image ...`: local disk image files through qemu-img (info, convert)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from virtfleet.cli.options import Json
from virtfleet.cli.output import emit, emit_json, fields
from virtfleet.units import human_bytes

app = typer.Typer(no_args_is_help=True, help="Local disk images: info and raw/qcow2 convert.")


@app.command("info")
def info(file: Annotated[str, typer.Argument(help="Image file.", show_default=False)],
         fmt: Annotated[str | None, typer.Option(
             "--format", help="Say the format instead of probing (raw, qcow2, vmdk, vdi, vpc, "
             "vhdx, qed ...).")] = None,
         json: Json = False) -> None:
    """`qemu-img info`: format, virtual and on-disk size, backing file."""
    from virtfleet.fleet.images import info as image_info

    i = image_info(file, fmt)
    if json:
        emit_json(i.as_json())
        return
    emit(fields([("Image", i.path), ("Format", i.format),
                 ("Virtual size", f"{human_bytes(i.virtual_size)} ({i.virtual_size} bytes)"),
                 ("Disk size", human_bytes(i.actual_size)), ("Backing file", i.backing_file),
                 ("Backing format", i.backing_format), ("Dirty", "yes" if i.dirty else "no")]))


@app.command("convert")
def convert(src: Annotated[str, typer.Argument(help="Source image.", show_default=False)],
            dst: Annotated[str, typer.Argument(help="New image file.", show_default=False)],
            to: Annotated[str, typer.Option("--to", help="raw (speed) or qcow2 (snapshots).")],
            src_format: Annotated[str | None, typer.Option(
                "--from", help="Source format, instead of probing.")] = None,
            compress: Annotated[bool, typer.Option("--compress",
                                                   help="Compressed qcow2.")] = False,
            force: Annotated[bool, typer.Option("--force", help="Replace DST.")] = False,
            json: Json = False) -> None:
    """`qemu-img convert -p`, then `qemu-img compare` proves the content is identical."""
    from virtfleet.fleet.images import convert as do_convert

    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeElapsedColumn

        with Progress("[bold]convert", BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                      transient=True, console=Console(stderr=True)) as bar:
            task = bar.add_task("convert", total=100.0)
            out = do_convert(src, dst, to, src_format=src_format, compress=compress,
                             force=force,
                             progress=lambda pct: bar.update(task, completed=pct))
    else:
        out = do_convert(src, dst, to, src_format=src_format, compress=compress, force=force)
    if json:
        emit_json(out.as_json())
    else:
        size = human_bytes(out.actual_size)
        emit(f"Converted {src} to {out.path} ({out.format}, {size} on disk); "
             "qemu-img compare: identical\n")
