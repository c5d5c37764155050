"""Every top-level command of `virtfleet`: where it lives and the one-line help the root lists.

The CLI imports a command's module only when that command runs (cli/app.py), so the root's
`--help` cannot ask the modules for their help without importing all of them: it reads this
table instead. tests/unit/test_cli_startup.py checks each line against the real module, so the
table cannot drift from the commands it names. This module imports nothing: the fast paths
(cli/quick.py) read it before typer is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer


ROOT_HELP = "Run a KVM estate through libvirt: inventory, fleet-wide queries, a local lab."
DB_HELP = "Store: a SQLite file path or a database URL (env VIRTFLEET_DB)."


@dataclass(frozen=True)
class Entry:
    """One top-level command: a function (a single command) or a Typer app (a group)."""

    module: str  # under virtfleet.cli
    attr: str  # the command function, or the module's Typer app
    help: str  # exactly what the root's help shows for it
    group: bool = False
    # A group's help as the root gives it (add_typer(help=...)), where it differs from the app's
    own_help: bool = False
    # Commands defined in other modules and added to this group: (name, module, function)
    extra: tuple[tuple[str, str, str], ...] = ()


COMMANDS: dict[str, Entry] = {
    "apply": Entry("inventory", "apply", "Validate a fleet file and record it in the store "
                   "(adds, changes, removes)."),
    "list": Entry("vms", "list_vms", "Every VM of the fleet with its state, like `virsh list "
                  "--all` on every hypervisor."),
    "sync": Entry("controller", "sync", "One pass by hand: every hypervisor's VMs into the "
                  "store (through the controller if one\nis running, so its own view is "
                  "refreshed too)."),
    "serve": Entry("controller", "serve", "Run the controller: connections kept open, events "
                   "followed, the store kept current,\nand HA in the pods where it is enabled "
                   "(docs/ha.md): lost hypervisors fenced through their\nBMCs, their HA VMs "
                   "restarted elsewhere (placed with --cpu-ratio/--policy)."),
    "events": Entry("events", "events", "The controller's events: VM state changes, "
                    "hypervisors lost and back, operations, HA.\n\nWithout --follow, prints the "
                    "events the controller still keeps and exits."),
    "host": Entry("hosts", "app", "Hypervisors: inventory and facts.", group=True, extra=(
        ("maintenance", "migrate", "host_maintenance"), ("activate", "migrate", "host_activate"),
        ("cpu-baseline", "migrate", "host_cpu_baseline"))),
    "hostkey": Entry("hostkey", "app", "ssh host keys of qemu+ssh hypervisors.", group=True),
    "vm": Entry("vm", "app", "VMs: lifecycle by name, anywhere in the fleet.", group=True,
                extra=(("clone", "template", "clone_vm"), ("migrate", "migrate", "vm_migrate"))),
    "template": Entry("template", "app", "Templates: sealed (virt-sysprep) images that VMs are "
                      "cloned from.", group=True),
    "ops": Entry("ops", "app", "Operations in progress or interrupted, and cleaning up after "
                 "them.", group=True),
    "ha": Entry("ha", "app", "High availability: fencing and restart of HA VMs when a hypervisor "
                "fails (run by `virtfleet serve`).", group=True),
    "snapshot": Entry("snapshot", "app", "VM snapshots (internal, qcow2), by VM name.",
                      group=True),
    "plan": Entry("plan", "app", "Capacity planning and VM placement: the estate's sizing, "
                  "done by code.", group=True),
    "boot": Entry("boot", "app", "Network installs: DHCP, PXE/iPXE/GRUB, Kickstart, HAProxy.",
                  group=True, own_help=True),
    "net": Entry("net", "app", "Virtual networks (virsh net-*), on one host or fleet-wide.",
                 group=True, own_help=True),
    "pool": Entry("pool", "app", "Storage pools: dir, fs, netfs, logical, iscsi, mpath, disk.",
                  group=True),
    "vol": Entry("vol", "app", "Volumes in a storage pool of one hypervisor.", group=True),
    "image": Entry("image", "app", "Local disk images: info and raw/qcow2 convert.", group=True),
    "netcfg": Entry("netcfg", "app", "Hypervisor network configuration: ifcfg, NetworkManager "
                    "keyfiles, nmstate.", group=True, own_help=True),
    "lab": Entry("lab", "app", "A local lab of real libvirtd hypervisors.", group=True,
                 own_help=True),
    "user": Entry("access", "user_app", "API users (local; a directory later).", group=True),
    "token": Entry("access", "token_app", "API tokens: shown once, stored hashed.",
                   group=True),
    "grant": Entry("access", "grant_app", "Roles (viewer, operator, admin) on all, a site, a "
                   "pod or a group.", group=True),
    "audit": Entry("audit", "app", "The audit log of writes (API and CLI), and its retention.",
                   group=True),
}


def mount(name: str, root: typer.Typer) -> None:
    """Register command `name` on `root` the way an eagerly built root would: importing its
    module (and those of the commands added to it) now."""
    from importlib import import_module

    entry = COMMANDS[name]
    target = getattr(import_module(f"virtfleet.cli.{entry.module}"), entry.attr)
    # Registered in two steps: tests/unit/test_cli_layout.py reads the table for these
    if not entry.group:
        register = root.command(name)
        register(target)
        return
    have = {c.name for c in target.registered_commands}
    for sub, module, func in entry.extra:
        if sub not in have:  # a module is imported once, but mount may run again (tests)
            add = target.command(sub)
            add(getattr(import_module(f"virtfleet.cli.{module}"), func))
    if entry.own_help:
        root.add_typer(target, name=name, help=entry.help)
    else:
        root.add_typer(target, name=name)
