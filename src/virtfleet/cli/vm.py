"""`virtfleet vm ...`: virsh's lifecycle verbs, by VM name anywhere in the fleet.

One VM: `vm start NAME`. Many: `vm start --all` with `--site/--pod/--host/--group`, which acts
on every VM in scope that the verb applies to (start: shut-off ones; shutdown: running ones),
with a progress bar and a result per VM; any failure makes the exit code 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.options import CpuRatioOpt, Group, HostOpt, Json, Pod, Site
from virtfleet.cli.output import emit, emit_json, fields, report_failures, table, warn
from virtfleet.cli.plan import PolicyFile
from virtfleet.cli.progress import fleet_progress
from virtfleet.errors import InvalidInput, VirtfleetError

if TYPE_CHECKING:
    from virtfleet.inventory.records import HostFailure
    from virtfleet.virt.fanout import ConnectionPool
    from virtfleet.virt.guest import Guest
    from virtfleet.virt.host import Host

app = typer.Typer(no_args_is_help=True, help="VMs: lifecycle by name, anywhere in the fleet.")

Name = Annotated[str | None, typer.Argument(help="VM name (omit with --all).", show_default=False)]
AllOpt = Annotated[bool, typer.Option("--all", help="Every VM in scope the verb applies to.")]
Timeout = Annotated[float, typer.Option("--timeout", min=0,
                                        help="Seconds to wait for an ACPI shutdown.")]
Force = Annotated[bool, typer.Option("--force",
                                     help="Destroy a VM still running after --timeout.")]


def find_guest(ctx: typer.Context, name: str, host: str | None, pool: ConnectionPool) -> Guest:
    from virtfleet.fleet.locate import locate_vm
    from virtfleet.validate import check_name
    from virtfleet.virt.guest import Guest

    check_name("NAME", name)
    record = locate_vm(name, app_context(ctx).store(), pool, host=host)
    return Guest.lookup(pool.get(record), name)


@contextmanager
def one_guest(ctx: typer.Context, name: str, host: str | None,
              operation: str | None = None) -> Iterator[Guest]:
    """The VM `name`, found anywhere in the fleet, its connection closed afterwards; with an
    `operation`, held for it (a concurrent one on the same VM gets 'busy')."""
    from virtfleet.provision.locks import vm_lock
    from virtfleet.virt.fanout import ConnectionPool

    pool = ConnectionPool()
    try:
        guest = find_guest(ctx, name, host, pool)
        if operation is None:
            yield guest
        else:
            with vm_lock(app_context(ctx).store(), lock_key(guest), operation):
                yield guest
    finally:
        pool.close()


def lock_key(guest: Guest) -> str:
    """A VM is its name on its hypervisor: two hosts may carry VMs of the same name (made
    outside virtfleet, or copies), and each is its own VM to lock."""
    return f"{guest.host.label}/{guest.name}"


@dataclass
class Outcome:
    host: str
    name: str
    result: str
    ok: bool


def _act(ctx: typer.Context, verb: str, name: str | None, all_: bool, scope: dict[str, str | None],
         applies: Callable[[str], bool], action: Callable[[Guest], str], json: bool,
         passes_by: Callable[[Guest], bool] | None = None) -> None:
    """Run `action` on one named VM, or on every VM in scope whose state `applies` (and that
    `passes_by` does not leave out: `start --all` leaves templates alone)."""
    from virtfleet.fleet.queries import failures
    from virtfleet.provision.locks import vm_lock
    from virtfleet.virt.fanout import ConnectionPool, fan_out
    from virtfleet.virt.guest import Guest

    if (name is None) == (not all_):
        raise InvalidInput("NAME", f"name one VM, or use --all to {verb} every VM in scope")
    if name is not None and any(scope[k] for k in ("site", "pod", "group")):
        raise InvalidInput("--site/--pod/--group", "only go with --all")

    store = app_context(ctx).store()

    def on_host(h: Host) -> list[Outcome]:
        out = []
        for dom in h.list_domains():
            if not applies(dom.state):
                continue
            try:
                guest = Guest.lookup(h, dom.name)
                if passes_by is not None and passes_by(guest):
                    continue
                with vm_lock(store, lock_key(guest), verb):
                    result = action(guest)
                out.append(Outcome(h.label, dom.name, result, True))
            except VirtfleetError as exc:  # one VM's failure is its row, not the host's
                text = exc.in_row(h.label, dom.name)
                out.append(Outcome(h.label, dom.name, text, False))
        return out

    pool = ConnectionPool()
    failed: list[HostFailure] = []
    asked = 1
    try:
        if name is not None:
            guest = find_guest(ctx, name, scope["host"], pool)
            with vm_lock(store, lock_key(guest), verb):
                outcomes = [Outcome(guest.host.label, guest.name, action(guest), True)]
        else:
            hosts = app_context(ctx).store().hypervisors(**scope)
            with fleet_progress(len(hosts), verb) as tick:
                results = fan_out(hosts, on_host, pool, progress=tick)
            outcomes = [o for r in results if r.value for o in r.value]
            failed, asked = failures(results), len(results)
    finally:
        pool.close()
    _print(outcomes, failed, json)
    report_failures(failed, asked=asked, rows=not json)
    if failed or not all(o.ok for o in outcomes):
        raise typer.Exit(1)


def _print(outcomes: list[Outcome], failed: list[HostFailure], json: bool) -> None:
    """One line for one VM done; else a row per VM, and (for people) one per host that did
    not answer, so the table says what succeeded and what failed."""
    if json:
        emit_json([o.__dict__ for o in outcomes])
    elif len(outcomes) == 1 and outcomes[0].ok and not failed:
        emit(f"Domain '{outcomes[0].name}' {outcomes[0].result}\n")
    else:
        emit(table(["Host", "Name", "Result"], [(o.host, o.name, o.result) for o in outcomes]
                   + [(f.host, None, f"failed: {f.kind}: {f.message}") for f in failed]))
        if not outcomes and not failed:
            warn("no VM in scope needed it")


def _scope(site: str | None, pod: str | None, host: str | None,
           group: str | None) -> dict[str, str | None]:
    return {"site": site, "pod": pod, "host": host, "group": group}


def _verb(verb: str, applies: Callable[[str], bool], done: str,
          run: Callable[[Guest], object], help_text: str) -> None:
    def command(ctx: typer.Context, name: Name = None, all_: AllOpt = False, site: Site = None,
                pod: Pod = None, host: HostOpt = None, group: Group = None,
                json: Json = False) -> None:
        def action(g: Guest) -> str:
            run(g)
            return done
        _act(ctx, verb, name, all_, _scope(site, pod, host, group), applies, action, json)
    command.__doc__ = help_text
    app.command(verb)(command)


def _running(state: str) -> bool:
    return state in ("running", "idle", "paused", "in shutdown", "pmsuspended")


Until = Annotated[str | None, typer.Option(
    "--until", help="Print the console until this text appears, then leave (for scripts).")]
ConsoleTimeout = Annotated[float, typer.Option("--timeout", min=0, help="Seconds for --until.")]


def _console(guest: Guest, until: str | None, timeout: float, force: bool,
             stream: object | None = None) -> None:
    import sys

    from virtfleet.virt.console import attach, open_console, read_until

    if until is None and not sys.stdin.isatty():
        raise InvalidInput("--until", "an interactive console needs a terminal; give --until")
    s = stream if stream is not None else open_console(guest, force)
    if until is None:
        sys.stderr.write(f"Connected to domain '{guest.name}'\nEscape character is ^]\n")
        attach(s)
    else:
        read_until(s, until.encode(), timeout, f"{guest.host.label}/{guest.name}",
                   echo_fd=sys.stdout.fileno())
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

    if (console or until) and (all_ or name is None):
        raise InvalidInput("--console", "goes with one named VM")
    if not console and until is None:
        _act(ctx, "start", name, all_, _scope(site, pod, host, group),
             lambda s: s in ("shut off", "crashed"), _started, json, passes_by=_is_template)
        return
    from virtfleet.virt.console import open_console

    assert name is not None
    with one_guest(ctx, name, host, "start") as guest:
        _refuse_template(guest)
        guest.start(paused=True)
        stream = open_console(guest)
        guest.resume()
        _console(guest, until, timeout, False, stream)


def _started(g: Guest) -> str:
    _refuse_template(g)
    g.start()
    return "started"


def _is_template(g: Guest) -> bool:
    from virtfleet.provision.templates import is_template

    return is_template(g.domain())


def _refuse_template(g: Guest) -> None:
    from virtfleet.errors import Conflict

    if _is_template(g):
        raise Conflict(f"{g.host.label}/{g.name} is a template: templates are never started "
                       f"(their images are read-only); clone it: virtfleet vm clone {g.name} NEW")


@app.command("console")
def console_cmd(ctx: typer.Context, name: Annotated[str, typer.Argument(help="VM name.")],
                until: Until = None, timeout: ConsoleTimeout = 120.0,
                force: Annotated[bool, typer.Option(
                    "--force", help="Take the console from another client.")] = False,
                host: HostOpt = None) -> None:
    """The VM's serial console (`virsh console`); Ctrl+] leaves."""
    with one_guest(ctx, name, host) as guest:
        _console(guest, until, timeout, force)

_verb("destroy", _running, "destroyed", lambda g: g.destroy(),
      "Power VMs off at once, like pulling the plug (`virsh destroy`).")
_verb("reboot", lambda s: s == "running", "is being rebooted", lambda g: g.reboot(),
      "Ask VMs to reboot through ACPI (`virsh reboot`).")
_verb("suspend", lambda s: s == "running", "suspended", lambda g: g.suspend(),
      "Pause VMs in memory (`virsh suspend`).")
_verb("resume", lambda s: s == "paused", "resumed", lambda g: g.resume(),
      "Resume paused VMs (`virsh resume`).")


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
    json: Json = False,
) -> None:
    """Create a VM the way virt-install does, on a named hypervisor or in a pod or site."""
    from virtfleet.design.spec import vm_spec
    from virtfleet.provision.create import create_vm, reserve_host
    from virtfleet.validate import check_name
    from virtfleet.virt.fanout import ConnectionPool

    spec = vm_spec(name=name, memory=memory, vcpus=vcpus, disks=list(disk or []),
                   networks=list(network or []), graphics=graphics, cdrom=cdrom, pxe=pxe,
                   kernel=kernel, initrd=initrd, cmdline=cmdline, import_disk=import_disk,
                   serial_console=console, autostart=autostart, os_variant=os_variant,
                   graphics_password=_graphics_password(graphics_password_file))
    if sum(x is not None for x in (host, pod, site)) != 1:
        raise InvalidInput("--host/--pod/--site", "give exactly one place for the VM")
    facts = {k: check_name(f"--{k}", v) for k, v in (("app", app_group), ("owner", owner))
             if v is not None}
    from virtfleet.cli.plan import _policy
    from virtfleet.provision.locks import vm_lock

    policy = _policy(policy_file, cpu_ratio, None, False, None, None)
    store = app_context(ctx).store()
    pool = ConnectionPool()
    try:
        with vm_lock(store, f"create/{name}", "create"):  # two creates of one name
            target = reserve_host(store, pool, spec, host=host, site=site, pod=pod,
                                  group=app_group, policy=policy)
            made = create_vm(spec, target, store, pool, start=start, virt_type=virt_type,
                             facts=facts)
    finally:
        pool.close()
    if json:
        emit_json(made.as_json())
    else:
        emit(f"Domain '{made.name}' created on {made.host} ({made.virt_type})"
             + (" and started" if made.started else "") + "\n")


def _graphics_password(path: Path | None) -> tuple[str, str] | None:
    """(where it came from, the password) from --graphics-password-file or the environment:
    argv is world-readable in ps, a file, stdin or this process's environment are not."""
    import os
    import sys

    from virtfleet.design.spec import PASSWORD_ENV

    if path is None:
        value = os.environ.get(PASSWORD_ENV)
        return None if value is None else (PASSWORD_ENV, value)
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
    def action(g: Guest) -> str:
        how = g.shutdown(timeout=timeout, force=force)
        return "is shut off" if how == "shut off" else "destroyed after the shutdown timeout"
    _act(ctx, "shutdown", name, all_, _scope(site, pod, host, group), _running, action, json)


@app.command("autostart")
def autostart(ctx: typer.Context, name: Annotated[str, typer.Argument(help="VM name.")],
              disable: Annotated[bool, typer.Option("--disable")] = False,
              host: HostOpt = None) -> None:
    """Start the VM when its hypervisor boots (`virsh autostart [--disable]`)."""
    with one_guest(ctx, name, host, "autostart") as guest:
        guest.set_autostart(not disable)
    emit(f"Domain '{name}' {'unmarked' if disable else 'marked'} as autostarted\n")


@app.command("undefine")
def undefine(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="VM name.")],
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
    from virtfleet.fleet.locate import locate_vm
    from virtfleet.provision.locks import vm_lock
    from virtfleet.provision.remove import undefine_vm
    from virtfleet.validate import check_name
    from virtfleet.virt.fanout import ConnectionPool
    from virtfleet.virt.guest import Guest, Removal

    if remove_all_storage and storage_targets is not None:
        raise InvalidInput("--storage", "give --storage or --remove-all-storage, not both")
    targets = None if storage_targets is None else [
        t.strip() for t in storage_targets.split(",") if t.strip()]
    check_name("NAME", name)
    store = app_context(ctx).store()
    pool = ConnectionPool()
    try:
        record = locate_vm(name, store, pool, host=host)
        guest = Guest.lookup(pool.get(record), name)
        with vm_lock(store, lock_key(guest), "undefine"):
            removed = undefine_vm(store, pool, guest, record, Removal(
                managed_save=remove_managed_save, snapshots=remove_snapshots,
                nvram=remove_nvram), targets if targets else
                (None if remove_all_storage else []))
    finally:
        pool.close()
    emit(f"Domain '{name}' has been undefined\n")
    for path in removed:
        emit(f"Volume '{path}' removed.\n")


@app.command("dominfo")
def dominfo(ctx: typer.Context, name: Annotated[str, typer.Argument(help="VM name.")],
            host: HostOpt = None, json: Json = False) -> None:
    """`virsh dominfo`, plus the hypervisor it is on."""
    with one_guest(ctx, name, host) as guest:
        info = guest.info()
    if json:
        emit_json({"host": guest.host.label, **info.as_json()})
        return
    yes = {True: "yes", False: "no"}
    emit(fields([
        ("Id", info.id), ("Name", info.name), ("UUID", info.uuid), ("Host", guest.host.label),
        ("OS Type", info.os_type), ("State", info.state), ("CPU(s)", info.vcpus),
        ("CPU time", f"{info.cpu_time_s:.1f}s"), ("Max memory", f"{info.max_memory_kib} KiB"),
        ("Used memory", f"{info.used_memory_kib} KiB"), ("Persistent", yes[info.persistent]),
        ("Autostart", "enable" if info.autostart else "disable"),
        ("Managed save", yes[info.managed_save]), ("Snapshots", info.snapshots),
    ]))


@app.command("dumpxml")
def dumpxml(ctx: typer.Context, name: Annotated[str, typer.Argument(help="VM name.")],
            host: HostOpt = None) -> None:
    """The VM's domain XML (`virsh dumpxml`; secrets such as graphics passwords left out)."""
    with one_guest(ctx, name, host) as guest:
        emit(guest.xml())


@app.command("domstats")
def domstats(ctx: typer.Context, name: Annotated[str, typer.Argument(help="VM name.")],
             host: HostOpt = None, json: Json = False) -> None:
    """`virsh domstats`: every statistic the hypervisor reports for the VM."""
    with one_guest(ctx, name, host) as guest:
        stats = guest.stats()
    if json:
        emit_json({"host": guest.host.label, "name": guest.name, **stats})
    else:
        emit(f"Domain: '{guest.name}'\n" + "".join(f"  {k}={v}\n" for k, v in stats.items()))
