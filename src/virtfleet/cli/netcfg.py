"""`virtfleet netcfg ...`: a hypervisor's own network files (bonds, VLANs, bridges, OVS)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.fields import options_named
from virtfleet.cli.options import Json
from virtfleet.cli.output import emit, emit_json, table, warn

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Hypervisor network configuration: ifcfg, NetworkManager keyfiles, "
                       "nmstate.")


@app.callback()
def netcfg() -> None:
    """Hypervisor network configuration: ifcfg, NetworkManager keyfiles, nmstate."""


class Format(StrEnum):
    ifcfg = "ifcfg"
    keyfile = "keyfile"
    nmstate = "nmstate"
    all = "all"


@app.command("render")
def render(
    ctx: typer.Context,
    host: Annotated[str, typer.Argument(help="Hypervisor name, as in the inventory.")],
    fmt: Annotated[Format, typer.Option(
        "--format", help="Which files: ifcfg, keyfile (NetworkManager), nmstate, or all.")
    ] = Format.all,
    fleet_file: Annotated[Path | None, typer.Option(
        "-f", "--fleet", help="Fleet file (YAML). Without it, the store's inventory is used: "
        "it holds no NIC layouts or addresses, so the built-in layout is rendered unaddressed.")
    ] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Write the files under this directory (replaced as a whole if an "
        "earlier render made it) instead of printing them.")] = None,
    json: Json = False,
) -> None:
    """Generate a hypervisor's network files from its NIC layout.

    Everything is validated and generated (and parsed back) first; with --out, nothing is
    written if any input is invalid.
    """
    from virtfleet.fleet.netcfg import RenderNetworkFiles, render_network_files
    from virtfleet.inventory.fleetfile import load_fleet
    from virtfleet.netcfg.render import FORMATS

    fleet = (load_fleet(fleet_file) if fleet_file is not None
             else app_context(ctx).store().fleet())
    req = RenderNetworkFiles(host, FORMATS if fmt is Format.all else (fmt.value,), out)
    with options_named({"formats": "--format", "out": "--out"}):
        done = render_network_files(fleet, req)
    if json:
        emit_json(done.as_json())
        return
    if out is not None:
        emit(table(["Kind", "File"], [(f.kind, str(p))
                                      for p, f in zip(done.written, done.files, strict=True)]))
        emit(f"{len(done.files)} files written under {out.absolute()}\n")
    else:
        emit("".join(f"==> {f.path} <==\n{f.text}\n" for f in done.files))
    for remark in done.notes:
        warn(remark)
