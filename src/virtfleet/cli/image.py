"""`virtfleet image ...`: local disk image files through qemu-img (info, convert); the work is
fleet/images.py's."""

from __future__ import annotations

from typing import Annotated

import typer

from virtfleet.cli.fields import options_named
from virtfleet.cli.options import Json
from virtfleet.cli.output import emit, emit_json, fields
from virtfleet.cli.progress import percent_progress
from virtfleet.units import human_bytes

app = typer.Typer(no_args_is_help=True, help="Local disk images: info and raw/qcow2 convert.")
# fleet/images.py's parameter names as these commands name them.
FLAGS = {"path": "FILE", "format": "--format", "src": "SRC", "dst": "DST", "to": "--to",
         "src_format": "--from", "compress": "--compress", "force": "--force"}


@app.command("info")
def info(file: Annotated[str, typer.Argument(help="Image file.", show_default=False)],
         fmt: Annotated[str | None, typer.Option(
             "--format", help="Say the format instead of probing (raw, qcow2, vmdk, vdi, vpc, "
             "vhdx, qed ...).")] = None,
         json: Json = False) -> None:
    """`qemu-img info`: format, virtual and on-disk size, backing file."""
    from virtfleet.fleet.images import info as image_info

    with options_named(FLAGS):
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

    with options_named(FLAGS), percent_progress("convert") as tick:
        out = do_convert(src, dst, to, src_format=src_format, compress=compress, force=force,
                         progress=tick)
    if json:
        emit_json(out.as_json())
    else:
        size = human_bytes(out.actual_size)
        emit(f"Converted {src} to {out.path} ({out.format}, {size} on disk); "
             "qemu-img compare: identical\n")
