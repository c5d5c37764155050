"""The `virtfleet` command: one sub-app per noun, one place that turns errors into exit codes."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from virtfleet.cli import controller, hosts, inventory, lab, vms
from virtfleet.cli.context import AppContext
from virtfleet.errors import VirtfleetError

app = typer.Typer(
    name="virtfleet",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Run a KVM estate through libvirt: inventory, fleet-wide queries, a local lab.",
)


@app.callback()
def root(
    ctx: typer.Context,
    db: Annotated[str | None, typer.Option(
        "--db", help="Store: a SQLite file path or a database URL (env VIRTFLEET_DB).",
        show_default=False)] = None,
) -> None:
    ctx.obj = AppContext(db=db)
    ctx.call_on_close(ctx.obj.close)


app.command("apply")(inventory.apply)
app.command("list")(vms.list_vms)
app.command("sync")(controller.sync)
app.command("serve")(controller.serve)
app.add_typer(hosts.app, name="host")
app.add_typer(lab.app, name="lab", help="A local lab of real libvirtd hypervisors.")


def main() -> None:
    try:
        app()
    except VirtfleetError as exc:
        sys.stderr.write(f"virtfleet: error: {exc.message}\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("virtfleet: interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
