"""`virtfleet vm ...`: virsh's lifecycle verbs, by VM name anywhere in the fleet.

One VM: `vm start NAME`. Many: `vm start --all` with `--site/--pod/--host/--group`, which acts
on every VM in scope that the verb applies to (start: shut-off ones; shutdown: running ones),
with a progress bar and a result per VM; any failure makes the exit code 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypeVar

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.fields import in_text, options_named
from virtfleet.cli.options import (
    CpuRatioOpt,
    Group,
    HAOpt,
    HAPriorityOpt,
    HostOpt,
    Json,
    Pod,
    Site,
)
from virtfleet.cli.output import emit, emit_json, fields, report_failures, table, warn
from virtfleet.cli.plan import PolicyFile
from virtfleet.cli.progress import step_progress
from virtfleet.config import GRAPHICS_PASSWORD_ENV
from virtfleet.errors import InvalidInput

if TYPE_CHECKING:
    from virtfleet.fleet.scope import Scope
    from virtfleet.fleet.vms import ActResult, ConsoleRequest, VMInfo, VMService
    from virtfleet.placement.policy import Policy

app = typer.Typer(no_args_is_help=True, help="VMs: lifecycle by name, anywhere in the fleet.")

Name = Annotated[str | None, typer.Argument(help="VM name (omit with --all).", show_default=False)]
VMName = Annotated[str, typer.Argument(help="VM name.")]
AllOpt = Annotated[bool, typer.Option("--all", help="Every VM in scope the verb applies to.")]
Timeout = Annotated[float, typer.Option("--timeout", min=0,
                                        help="Seconds to wait for an ACPI shutdown.")]
Force = Annotated[bool, typer.Option("--force",
                                     help="Destroy a VM still running after --timeout.")]


# The service names its requests' fields; the command line names its options.
FLAGS = {"vm": "NAME", "timeout": "--timeout", "force": "--force"}
CREATE_FLAGS = {
    "name": "NAME", "memory": "--memory", "vcpus": "--vcpus", "disks": "--disk",
    "networks": "--network", "cdrom/pxe/kernel/import_disk": "--cdrom/--pxe/--kernel/--import",
    "initrd/cmdline": "--initrd/--cmdline", "import_disk": "--import", "cdrom": "--cdrom",
    "kernel": "--kernel", "initrd": "--initrd", "cmdline": "--cmdline",
    "graphics": "--graphics", "graphics_password": "--graphics-password-file",
    "os_variant": "--os-variant", "host/pod/site": "--host/--pod/--site", "app": "--app",
    "owner": "--owner", "virt_type": "virt type", "ha": "--ha", "ha_priority": "--ha-priority",
    "autostart": "--autostart",
}
UNDEFINE_FLAGS = {"vm": "NAME", "storage": "--storage",
                  "remove_all_storage": "--remove-all-storage",
                  "remove_managed_save": "--remove-managed-save",
                  "remove_snapshots": "--remove-snapshots", "remove_nvram": "--remove-nvram"}


@contextmanager
def vm_service(ctx: typer.Context, flags: dict[str, str] | None = None,
               policy: Policy | None = None) -> Iterator[VMService]:
    """The VM service on this command's store; its errors name this command's options."""
    from virtfleet.fleet.vms import VMService

    with VMService(app_context(ctx).store(), policy=policy) as service, \
            options_named(FLAGS if flags is None else flags):
        yield service


def _one_or_all(verb: str, name: str | None, all_: bool, scope: Scope) -> None:
    if (name is None) == (not all_):
        raise InvalidInput("NAME", f"name one VM, or use --all to {verb} every VM in scope")
    if name is not None and any((scope.site, scope.pod, scope.group)):
        raise InvalidInput("--site/--pod/--group", "only go with --all")


def _act(ctx: typer.Context, verb: str, name: str | None, all_: bool, scope: Scope,
         json: bool, **tuning: Any) -> None:
    """Run `verb` on one named VM, or on every VM in scope that it applies to."""
    from virtfleet.fleet.vms import ActRequest

    _one_or_all(verb, name, all_, scope)
    with vm_service(ctx) as vms, step_progress() as tick:
        done = vms.act(ActRequest(verb, name, scope, **tuning), progress=tick)
    _print(done, json)
    report_failures(done.failed, asked=done.asked, rows=not json)
    if not done.ok:
        raise typer.Exit(1)


def _print(done: ActResult, json: bool) -> None:
    """One line for one VM done; else a row per VM, and (for people) one per host that did
    not answer, so the table says what succeeded and what failed. A failed VM's row words
    the fields it names as options."""
    vms = [v if v.ok else replace(v, result=in_text(v.result, FLAGS)) for v in done.vms]
    if json:
        emit_json([v.as_json() for v in vms])
    elif len(vms) == 1 and done.ok:
        emit(f"Domain '{vms[0].name}' {vms[0].result}\n")
    else:
        emit(table(["Host", "Name", "Result"], [(v.host, v.name, v.result) for v in vms]
                   + [(f.host, None, f"failed: {f.kind}: {f.message}") for f in done.failed]))
        if not done.vms and not done.failed:
            warn("no VM in scope needed it")


def _scope(site: str | None, pod: str | None, host: str | None, group: str | None) -> Scope:
    from virtfleet.fleet.scope import Scope

    return Scope(site=site, pod=pod, host=host, group=group)


def _verb(verb: str, help_text: str) -> None:
    def command(ctx: typer.Context, name: Name = None, all_: AllOpt = False, site: Site = None,
                pod: Pod = None, host: HostOpt = None, group: Group = None,
                json: Json = False) -> None:
        _act(ctx, verb, name, all_, _scope(site, pod, host, group), json)
    command.__doc__ = help_text
    app.command(verb)(command)


Until = Annotated[str | None, typer.Option(
    "--until", help="Print the console until this text appears, then leave (for scripts).")]
ConsoleTimeout = Annotated[float, typer.Option("--timeout", min=0, help="Seconds for --until.")]


def _console(ctx: typer.Context, req: ConsoleRequest, until: str | None,
             timeout: float) -> None:
    """Attach this terminal to the console, or (--until) print it up to a line."""
    if until is None and not sys.stdin.isatty():
        raise InvalidInput("--until", "an interactive console needs a terminal; give --until")
    with vm_service(ctx) as vms, vms.console(req) as con:
        if until is None:
            sys.stderr.write(f"Connected to domain '{con.vm}'\nEscape character is ^]\n")
            con.attach()
        else:
            con.read_until(until, timeout, echo_fd=sys.stdout.fileno())
            sys.stdout.write("\n")


@app.command("start")
def start(ctx: typer.Context, name: Name = None, all_: AllOpt = False, site: Site = None,
          pod: Pod = None, host: HostOpt = None, group: Group = None,
          console: Annotated[bool, typer.Option(
              "--console", help="Attach to the console from the first byte of the boot.")]
          = False, until: Until = None, timeout: ConsoleTimeout = 120.0,
          json: Json = False) -> None:
    """Start VMs (`virsh start`); `--console` attaches before the CPUs run, so nothing of the
    boot is missed."""
    from virtfleet.fleet.vms import ConsoleRequest

    if (console or until) and (all_ or name is None):
        raise InvalidInput("--console", "goes with one named VM")
    if not console and until is None:
        _act(ctx, "start", name, all_, _scope(site, pod, host, group), json)
        return
    assert name is not None
    _console(ctx, ConsoleRequest(name, host, start=True), until, timeout)


@app.command("console")
def console_cmd(ctx: typer.Context, name: VMName,
                until: Until = None, timeout: ConsoleTimeout = 120.0,
                force: Annotated[bool, typer.Option(
                    "--force", help="Take the console from another client.")] = False,
                host: HostOpt = None) -> None:
    """The VM's serial console (`virsh console`); Ctrl+] leaves."""
    from virtfleet.fleet.vms import ConsoleRequest

    _console(ctx, ConsoleRequest(name, host, force=force), until, timeout)

_verb("destroy", "Power VMs off at once, like pulling the plug (`virsh destroy`).")
_verb("reboot", "Ask VMs to reboot through ACPI (`virsh reboot`).")
_verb("suspend", "Pause VMs in memory (`virsh suspend`).")
_verb("resume", "Resume paused VMs (`virsh resume`).")


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="VM name, unique across the fleet.")],
    memory: Annotated[str, typer.Option("--memory", "--ram", help="32G, 512M; a bare number "
                                        "is MiB.")],
    vcpus: Annotated[int, typer.Option("--vcpus")],
    disk: Annotated[list[str] | None, typer.Option(
        "--disk", help="size=80G[,format=qcow2|raw][,pool=P][,bus=virtio|sata|scsi|ide] or "
        "path=IMAGE; the bus defaults to the OS variant's.")] = None,
    network: Annotated[list[str] | None, typer.Option(
        "--network", help="bridge=br0[,vlan=N] or network=default [,model=,mac=]; the model "
        "defaults to the OS variant's.")] = None,
    cdrom: Annotated[str | None, typer.Option("--cdrom", help="Install from this ISO.")] = None,
    pxe: Annotated[bool, typer.Option("--pxe", help="Boot from the network.")] = False,
    kernel: Annotated[str | None, typer.Option("--kernel")] = None,
    initrd: Annotated[str | None, typer.Option("--initrd")] = None,
    cmdline: Annotated[str | None, typer.Option("--cmdline")] = None,
    import_disk: Annotated[str | None, typer.Option(
        "--import", help="Boot an existing image (inside a storage pool).")] = None,
    os_variant: Annotated[str | None, typer.Option(
        "--os-variant", "--osinfo", help="The guest OS as libosinfo names it (rhel9.0, "
        "win2k19, ubuntu22.04, generic): it picks the chipset, buses and devices, as "
        "virt-install does. Default linux2022.")] = None,
    graphics: Annotated[str | None, typer.Option(
        "--graphics", help="spice|vnc|none[,listen=127.0.0.1].")] = None,
    graphics_password_file: Annotated[Path | None, typer.Option(
        "--graphics-password-file", help="Read the graphics password from this file ('-': "
        "stdin), or set VIRTFLEET_GRAPHICS_PASSWORD; never on the command line.",
        show_default=False)] = None,
    console: Annotated[bool, typer.Option("--console/--no-console",
                                          help="A serial console.")] = True,
    autostart: Annotated[bool, typer.Option("--autostart")] = False,
    start: Annotated[bool, typer.Option("--start/--no-start")] = True,
    virt_type: Annotated[str | None, typer.Option(
        "--virt-type", help="auto|kvm|qemu (env VIRTFLEET_VIRT_TYPE).")] = None,
    app_group: Annotated[str | None, typer.Option("--app", help="Application group.")] = None,
    owner: Annotated[str | None, typer.Option("--owner")] = None,
    host: HostOpt = None, pod: Pod = None, site: Site = None,
    cpu_ratio: CpuRatioOpt = None,
    policy_file: PolicyFile = None,
    ha: HAOpt = False, ha_priority: HAPriorityOpt = None,
    json: Json = False,
) -> None:
    """Create a VM the way virt-install does, on a named hypervisor or in a pod or site.
    With --ha it is restarted elsewhere in its pod when its hypervisor fails (docs/ha.md)."""
    from virtfleet.cli.plan import _policy
    from virtfleet.fleet.vms import CreateRequest

    source, password = _graphics_password(graphics_password_file) or (None, None)
    req = CreateRequest(
        name=name, memory=memory, vcpus=vcpus, disks=tuple(disk or ()),
        networks=tuple(network or ()), graphics=graphics, cdrom=cdrom, pxe=pxe, kernel=kernel,
        initrd=initrd, cmdline=cmdline, import_disk=import_disk, serial_console=console,
        autostart=autostart, os_variant=os_variant, graphics_password=password,
        password_from_env=source == GRAPHICS_PASSWORD_ENV, start=start, virt_type=virt_type,
        app=app_group, owner=owner, host=host, pod=pod, site=site, ha=ha,
        ha_priority=ha_priority)
    flags = {**CREATE_FLAGS, "graphics_password": source or CREATE_FLAGS["graphics_password"]}
    policy = _policy(policy_file, cpu_ratio, None, False, None, None)
    with vm_service(ctx, flags, policy) as vms:
        made = vms.create(req)
    if json:
        emit_json(made.as_json())
    else:
        emit(f"Domain '{made.name}' created on {made.host} ({made.virt_type})"
             + (" and started" if made.started else "")
             + (f", HA priority {made.ha_priority}" if made.ha_priority is not None else "")
             + "\n")


def _graphics_password(path: Path | None) -> tuple[str, str] | None:
    """(where it came from, the password) from --graphics-password-file or the environment:
    argv is world-readable in ps, a file, stdin or this process's environment are not."""
    import os

    if path is None:
        value = os.environ.get(GRAPHICS_PASSWORD_ENV)
        return None if value is None else (GRAPHICS_PASSWORD_ENV, value)
    field = "--graphics-password-file"
    if str(path) == "-":
        if sys.stdin.isatty():  # typed by hand: not echoed
            import getpass

            return field, getpass.getpass("Graphics password: ")
        text = sys.stdin.read(4096)
    else:
        try:
            text = path.read_text(errors="strict")[:4096]
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(field, f"cannot read {str(path)!r} "
                               f"({getattr(exc, 'strerror', None) or exc.__class__.__name__})"
                               ) from None
    return field, text.partition("\n")[0]  # the first line, as `pass show` prints it


@app.command("shutdown")
def shutdown(ctx: typer.Context, name: Name = None, all_: AllOpt = False, site: Site = None,
             pod: Pod = None, host: HostOpt = None, group: Group = None,
             timeout: Timeout = 120.0, force: Force = False, json: Json = False) -> None:
    """ACPI shutdown; wait up to --timeout; --force destroys VMs still running then."""
    _act(ctx, "shutdown", name, all_, _scope(site, pod, host, group), json, timeout=timeout,
         force=force)


@app.command("autostart")
def autostart(ctx: typer.Context, name: VMName,
              disable: Annotated[bool, typer.Option("--disable")] = False,
              host: HostOpt = None) -> None:
    """Start the VM when its hypervisor boots (`virsh autostart [--disable]`)."""
    with vm_service(ctx) as vms:
        vms.set_autostart(name, not disable, host)
    emit(f"Domain '{name}' {'unmarked' if disable else 'marked'} as autostarted\n")


@app.command("undefine")
def undefine(
    ctx: typer.Context, name: VMName,
    remove_managed_save: Annotated[bool, typer.Option("--remove-managed-save")] = False,
    remove_snapshots: Annotated[bool, typer.Option("--remove-snapshots")] = False,
    remove_nvram: Annotated[bool, typer.Option("--remove-nvram")] = False,
    remove_all_storage: Annotated[bool, typer.Option(
        "--remove-all-storage", help="Delete its disk volumes too.")] = False,
    storage_targets: Annotated[str | None, typer.Option(
        "--storage", help="Delete these disks too: target devs or paths, comma-separated "
        "(vda,vdb).", show_default=False)] = None,
    host: HostOpt = None,
) -> None:
    """Remove a VM's definition; its disks are kept unless named. Refuses if a managed-save
    image, snapshots, NVRAM or storage would go that is not named, or storage that another
    VM or a linked clone still needs."""
    from virtfleet.fleet.vms import UndefineRequest

    if remove_all_storage and storage_targets is not None:
        raise InvalidInput("--storage", "give --storage or --remove-all-storage, not both")
    targets = tuple(t.strip() for t in (storage_targets or "").split(",") if t.strip())
    with vm_service(ctx, UNDEFINE_FLAGS) as vms:
        gone = vms.undefine(UndefineRequest(
            name, host, remove_managed_save=remove_managed_save,
            remove_snapshots=remove_snapshots, remove_nvram=remove_nvram,
            remove_all_storage=remove_all_storage, storage=targets))
    emit(f"Domain '{name}' has been undefined\n")
    for path in gone.removed:
        emit(f"Volume '{path}' removed.\n")


class _Facts(Protocol):
    def as_json(self) -> dict[str, object]: ...


F = TypeVar("F", bound=_Facts)


def _facts(ctx: typer.Context, ask: Callable[[VMService], F], json: bool,
           text: Callable[[F], str]) -> None:
    """One VM's facts: JSON for scripts, else the text a person reads."""
    with vm_service(ctx) as vms:
        found = ask(vms)
    if json:
        emit_json(found.as_json())
    else:
        emit(text(found))


def _dominfo_text(found: VMInfo) -> str:
    info, yes = found.info, {True: "yes", False: "no"}
    return fields([
        ("Id", info.id), ("Name", info.name), ("UUID", info.uuid), ("Host", found.host),
        ("OS Type", info.os_type), ("State", info.state), ("CPU(s)", info.vcpus),
        ("CPU time", f"{info.cpu_time_s:.1f}s"), ("Max memory", f"{info.max_memory_kib} KiB"),
        ("Used memory", f"{info.used_memory_kib} KiB"), ("Persistent", yes[info.persistent]),
        ("Autostart", "enable" if info.autostart else "disable"),
        ("Managed save", yes[info.managed_save]), ("Snapshots", info.snapshots),
    ])


@app.command("dominfo")
def dominfo(ctx: typer.Context, name: VMName, host: HostOpt = None,
            json: Json = False) -> None:
    """`virsh dominfo`, plus the hypervisor it is on."""
    _facts(ctx, lambda vms: vms.info(name, host), json, _dominfo_text)


@app.command("dumpxml")
def dumpxml(ctx: typer.Context, name: VMName, host: HostOpt = None) -> None:
    """The VM's domain XML (`virsh dumpxml`; secrets such as graphics passwords left out)."""
    with vm_service(ctx) as vms:
        emit(vms.dumpxml(name, host))


@app.command("domstats")
def domstats(ctx: typer.Context, name: VMName, host: HostOpt = None,
             json: Json = False) -> None:
    """`virsh domstats`: every statistic the hypervisor reports for the VM."""
    _facts(ctx, lambda vms: vms.stats(name, host), json, lambda found: (
        f"Domain: '{found.name}'\n" + "".join(f"  {k}={v}\n" for k, v in found.stats.items())))
