"""The `virtfleet` command: one sub-app per noun, one place that turns errors into exit codes."""

from __future__ import annotations

import sys
from typing import Annotated

import click
import typer

from virtfleet.cli import (
    access,
    audit,
    boot,
    controller,
    events,
    ha,
    hostkey,
    hosts,
    image,
    inventory,
    lab,
    migrate,
    net,
    netcfg,
    ops,
    plan,
    pool,
    snapshot,
    template,
    vm,
    vms,
    vol,
)
from virtfleet.cli.audit import audited
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
app.command("events")(events.events)
hosts.app.command("maintenance")(migrate.host_maintenance)
hosts.app.command("activate")(migrate.host_activate)
hosts.app.command("cpu-baseline")(migrate.host_cpu_baseline)
app.add_typer(hosts.app, name="host")
app.add_typer(hostkey.app, name="hostkey")
vm.app.command("clone")(template.clone_vm)
vm.app.command("migrate")(migrate.vm_migrate)
app.add_typer(vm.app, name="vm")
app.add_typer(template.app, name="template")
app.add_typer(ops.app, name="ops")
app.add_typer(ha.app, name="ha")
app.add_typer(snapshot.app, name="snapshot")
app.add_typer(plan.app, name="plan")
app.add_typer(boot.app, name="boot",
              help="Network installs: DHCP, PXE/iPXE/GRUB, Kickstart, HAProxy.")
app.add_typer(net.app, name="net",
              help="Virtual networks (virsh net-*), on one host or fleet-wide.")
app.add_typer(pool.app, name="pool")
app.add_typer(vol.app, name="vol")
app.add_typer(image.app, name="image")
app.add_typer(netcfg.app, name="netcfg",
              help="Hypervisor network configuration: ifcfg, NetworkManager keyfiles, nmstate.")
app.add_typer(lab.app, name="lab", help="A local lab of real libvirtd hypervisors.")
app.add_typer(access.user_app, name="user")
app.add_typer(access.token_app, name="token")
app.add_typer(access.grant_app, name="grant")
app.add_typer(audit.app, name="audit")


# Recent typer releases carry their own copy of click; older ones use the click package.
_USAGE_ERRORS: tuple[type[Exception], ...] = (click.ClickException, getattr(
    typer, "TyperException", click.ClickException))


@audited
def main() -> None:
    # standalone_mode=False: errors come back to us, so every one is a single line on stderr
    # (click's own usage errors included) with the README's exit code; never a traceback.
    try:
        code = app(standalone_mode=False)
    except VirtfleetError as exc:
        sys.stderr.write(f"virtfleet: error: {exc.message}\n")
        sys.exit(exc.exit_code)
    except _USAGE_ERRORS as exc:  # bad options or arguments: exit 2, like click itself
        message = str(getattr(exc, "format_message", exc.__str__)())
        if message:  # empty when a bare group printed its help instead
            ctx = getattr(exc, "ctx", None)
            where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            sys.stderr.write(f"virtfleet: error: {message}{where}\n")
        sys.exit(getattr(exc, "exit_code", 2))
    except (typer.Abort, click.Abort, KeyboardInterrupt):
        sys.stderr.write("virtfleet: interrupted\n")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
