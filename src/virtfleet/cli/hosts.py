"""`virtfleet host ...`: the inventory's hypervisors, and what each one is (virsh's words),
through the host service (fleet/hosts.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.fields import options_named
from virtfleet.cli.hostkey import AcceptNew, host_key_step
from virtfleet.cli.options import Group, Json, Pod, Site
from virtfleet.cli.output import emit, emit_json, fields, report_failures, table
from virtfleet.cli.progress import step_progress

# The services (and through them the fleet-file models and the libvirt layer) are imported
# inside the commands: `virtfleet list` served by the controller should not pay for them.

if TYPE_CHECKING:
    from virtfleet.fleet.hosts import HostQuery, HostService, NodeInfo
    from virtfleet.fleet.scope import Answers, Progress
    from virtfleet.inventory.records import HostRecord
    from virtfleet.xml.sysinfo import SysInfo

app = typer.Typer(no_args_is_help=True, help="Hypervisors: inventory and facts.")

T = TypeVar("T")

Names = Annotated[list[str] | None, typer.Argument(help="Hypervisor names (default: all).")]

# The service names its requests' fields; the command line names its options.
FLAGS = {"name": "NAME", "uri": "--uri", "site": "--site", "pod": "--pod", "groups": "--group"}


@contextmanager
def _hosts(ctx: typer.Context) -> Iterator[HostService]:
    from virtfleet.fleet.hosts import HostService

    with HostService(app_context(ctx).store()) as service, options_named(FLAGS):
        yield service


def _query(names: list[str] | None, site: str | None, pod: str | None,
           group: str | None) -> HostQuery:
    from virtfleet.fleet.hosts import HostQuery

    return HostQuery(tuple(names or ()), site, pod, group)


def _facts(ctx: typer.Context, question: Callable[[HostService, HostQuery, Progress], Answers[T]],
           query: HostQuery, json: bool, row: Callable[[HostRecord, T], dict[str, Any]],
           text: Callable[[list[tuple[HostRecord, T]]], str]) -> None:
    """Ask each host one question: a row (or text) per host that answered, a line on stderr
    per host that did not, and then exit 1."""
    with _hosts(ctx) as hosts, step_progress() as tick:
        answers = question(hosts, query, tick)
    report_failures(answers.failures, asked=len(answers))
    if json:
        emit_json([row(h, v) for h, v in answers.values])
    else:
        emit(text(answers.values))
    if not answers.ok:
        raise typer.Exit(1)


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Hypervisor name (its DNS name).")],
    uri: Annotated[str, typer.Option("--uri", help="libvirt URI, e.g. qemu+ssh://hv1/system.")],
    site: Annotated[str, typer.Option("--site", help="Site it is in (created if new).")],
    pod: Annotated[str, typer.Option("--pod", help="Pod it is in (created if new).")],
    group: Annotated[list[str] | None, typer.Option("--group", help="Host group (repeat).")] = None,
    accept_new: AcceptNew = False,
) -> None:
    """Add one hypervisor to the inventory (`apply -f` does many)."""
    from virtfleet.fleet.hosts import AddHostRequest

    req = AddHostRequest(name, uri, site, pod, tuple(group or ()))
    with _hosts(ctx) as hosts:
        hv = hosts.validate(req)
        # shown; refused unless accepted, or if the host did not answer
        keys = host_key_step([(name, hv.uri)], accept_new, need_answer=True)
        hosts.add(req)  # qemu+tcp only into a pod that allows it (Store.add_hypervisor)
    keys.commit()
    emit(f"Hypervisor {name} added to {site}/{pod}\n" + keys.text)


@app.command("remove")
def remove(ctx: typer.Context,
           name: Annotated[str, typer.Argument(help="Hypervisor name.")]) -> None:
    """Remove a hypervisor from the inventory (its VMs are not touched)."""
    with _hosts(ctx) as hosts:
        hosts.remove(name)
    emit(f"Hypervisor {name} removed from the inventory\n")


@app.command("list")
def list_hosts(ctx: typer.Context, site: Site = None, pod: Pod = None, group: Group = None,
               json: Json = False) -> None:
    """Hypervisors in the inventory, with the last known reachability."""
    with _hosts(ctx) as hosts:
        rows = hosts.hosts(_query(None, site, pod, group))
    if json:
        emit_json([r.as_json() for r in rows])
        return
    emit(table(["Name", "Site", "Pod", "Groups", "State", "URI"],
               [(r.host.name, r.host.site, r.host.pod, ",".join(r.host.groups) or "-",
                 r.state, r.host.uri) for r in rows]))


@app.command("info")
def info(ctx: typer.Context, names: Names = None, site: Site = None, pod: Pod = None,
         group: Group = None, json: Json = False) -> None:
    """`virsh nodeinfo` for each hypervisor: CPU model, CPUs, MHz, topology, memory."""
    from virtfleet.fleet.hosts import HostService

    def one(h: HostRecord, n: NodeInfo) -> str:
        return f"{h.name}\n" + fields([
            ("CPU model", n.cpu_model), ("CPU(s)", n.cpus), ("CPU frequency", f"{n.mhz} MHz"),
            ("CPU socket(s)", n.sockets), ("Core(s) per socket", n.cores_per_socket),
            ("Thread(s) per core", n.threads_per_core), ("NUMA cell(s)", n.numa_cells),
            ("Memory size", f"{n.memory_kib} KiB")]) + "\n"

    _facts(ctx, HostService.info, _query(names, site, pod, group), json,
           lambda h, n: {"host": h.name, "site": h.site, "pod": h.pod, **n.as_json()},
           lambda found: "".join(one(h, n) for h, n in found))


def _sysinfo_text(h: HostRecord, s: SysInfo) -> str:
    dimms = s.populated_dimms
    dimm_sizes = sorted({d.get("size", "?") for d in dimms})
    return f"{h.name}\n" + fields([
        ("BIOS", " ".join(filter(None, [s.bios.get("vendor"), s.bios.get("version"),
                                       s.bios.get("date")])) or None),
        ("System", " ".join(filter(None, [s.system.get("manufacturer"),
                                         s.system.get("product")])) or None),
        ("Serial", s.system.get("serial")),
        ("UUID", s.system.get("uuid")),
        ("Processors", "; ".join(p.get("version", "?") for p in s.processors) or None),
        ("DIMMs", f"{len(dimms)} populated of {len(s.memory_devices)}"
                  + (f" ({', '.join(dimm_sizes)})" if dimm_sizes else "")),
    ]) + "\n"


@app.command("sysinfo")
def sysinfo(ctx: typer.Context, names: Names = None, site: Site = None, pod: Pod = None,
            group: Group = None, json: Json = False) -> None:
    """`virsh sysinfo` parsed: BIOS, system, processors and DIMMs of each hypervisor."""
    from virtfleet.fleet.hosts import HostService

    _facts(ctx, HostService.sysinfo, _query(names, site, pod, group), json,
           lambda h, s: {"host": h.name, **s.as_json()},
           lambda found: "".join(_sysinfo_text(h, s) for h, s in found))


@app.command("version")
def version(ctx: typer.Context, names: Names = None, site: Site = None, pod: Pod = None,
            group: Group = None, json: Json = False) -> None:
    """`virsh version` for each hypervisor: libvirt and hypervisor versions."""
    from virtfleet.fleet.hosts import HostService

    _facts(ctx, HostService.version, _query(names, site, pod, group), json,
           lambda h, v: {"host": h.name, **v},
           lambda found: table(["Host", "Client library", "Daemon library", "Driver",
                                "Hypervisor"],
                               [(h.name, v["client_library"], v["daemon_library"], v["driver"],
                                 v["hypervisor"]) for h, v in found]))


@app.command("check")
def check(ctx: typer.Context, names: Names = None, site: Site = None, pod: Pod = None,
          group: Group = None, json: Json = False) -> None:
    """Preflight: reachable, virt types, VT-x/AMD-V, IOMMU, KVM usable; the pod's storage pool
    active and writable, autostart pools running (see docs/storage.md)."""
    with _hosts(ctx) as hosts, step_progress() as tick:
        checks = hosts.check(_query(names, site, pod, group), progress=tick)
    report_failures(checks.failed, asked=len(checks.hosts))
    if json:
        emit_json([c.as_json() for c in checks.hosts])
    else:
        def yn(v: bool | None) -> str:
            return "-" if v is None else ("yes" if v else "no")
        emit(table(["Host", "Reachable", "Virt types", "VT", "IOMMU", "KVM", "Notes"], [
            (c.host.name, yn(c.check.reachable), ",".join(c.check.virt_types) or "-",
             c.check.hw_virt or "-", yn(c.check.iommu),
             yn(c.check.kvm_usable) if c.check.reachable else "-",
             "; ".join(c.check.problems) or "ok") for c in checks.hosts]))
    if not checks.ok:
        raise typer.Exit(1)
