"""`virtfleet boot ...`: network installs of hypervisors (PXE/iPXE, Kickstart, DHCP)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from virtfleet.cli.options import Json, Site
from virtfleet.cli.output import emit, emit_json, table
from virtfleet.errors import VirtfleetError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Network installs: DHCP, PXE/iPXE/GRUB, Kickstart, HAProxy configs.")


@app.callback()
def boot() -> None:
    """Network installs: DHCP, PXE/iPXE/GRUB, Kickstart, HAProxy configs."""


class ValidationFailed(VirtfleetError):
    """A generated file did not pass its real validator (a virtfleet bug: please report)."""


def _checker(tree: Path) -> None:
    from virtfleet.boot import validators

    for kind, pattern in (("dhcpd", "*/dhcpd/*.conf"), ("kea", "*/kea/*.json"),
                          ("haproxy", "*/haproxy/haproxy.cfg")):
        for path in sorted(tree.glob(pattern)):
            verdict = validators.check(kind, path)
            if not verdict.ok:
                last = (verdict.output.splitlines() or ["(no output)"])[-1]
                raise ValidationFailed(f"{path.relative_to(tree)}: "
                                       f"{validators.COMMANDS[kind][0]} refused it: {last}")


@app.command("render")
def render(
    file: Annotated[Path, typer.Option("-f", "--file", help="Fleet file (YAML).")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the tree into "
                                      "(replaced as a whole if an earlier render made it).")],
    site: Site = None,
    check: Annotated[bool, typer.Option(
        "--check", help="Run dhcpd -t, kea-dhcp4 -t and haproxy -c on the files before "
        "publishing the tree.")] = False,
    json: Json = False,
) -> None:
    """Write every generated boot file (dhcpd, Kea, HAProxy, PXELINUX, GRUB, iPXE, kickstarts).

    Everything is validated and generated first; nothing is written if any input is invalid.
    """
    from virtfleet.boot.render import render_fleet, write_tree
    from virtfleet.inventory.fleetfile import load_fleet

    files = render_fleet(load_fleet(file), site=site)
    paths = write_tree(files, out, before_publish=_checker if check else None)
    if json:
        emit_json([{"path": str(p), "kind": f.kind} for p, f in zip(paths, files, strict=True)])
    else:
        emit(table(["Kind", "File"], [(f.kind, str(p)) for p, f in zip(paths, files,
                                                                      strict=True)]))
        emit(f"{len(files)} files written under {out.absolute()}\n")
