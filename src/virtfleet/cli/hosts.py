"""`virtfleet host ...`: the inventory's hypervisors, and what each one is (virsh's words)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.fields import options_named
from virtfleet.cli.hostkey import FLAGS as KEY_FLAGS
from virtfleet.cli.hostkey import AcceptNew, host_key_step
from virtfleet.cli.options import Group, Json, Pod, Site
from virtfleet.cli.output import emit, emit_json, fields, report_failures, table
from virtfleet.cli.progress import fleet_progress
from virtfleet.errors import InvalidInput, NotFound
from virtfleet.inventory.records import HostRecord

# The fleet-file models and the libvirt layer are imported inside the commands that use them:
# `virtfleet list` served by the controller should not pay for importing them.

if TYPE_CHECKING:
    from virtfleet.virt.fanout import HostResult
    from virtfleet.virt.host import Host
    from virtfleet.xml.sysinfo import SysInfo

app = typer.Typer(no_args_is_help=True, help="Hypervisors: inventory and facts.")

Names = Annotated[list[str] | None, typer.Argument(help="Hypervisor names (default: all).")]


def select_hosts(ctx: typer.Context, names: list[str] | None, site: str | None,
                 pod: str | None, group: str | None) -> list[HostRecord]:
    hosts = app_context(ctx).store().hypervisors(site=site, pod=pod, group=group)
    if names:
        by_name = {h.name: h for h in hosts}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise NotFound(f"hypervisor {missing[0]!r} is not in the inventory"
                           + (" (or not in the given site/pod/group)" if site or pod or group
                              else ""))
        hosts = [by_name[n] for n in names]
    return hosts


_ADD_FIELDS = {
    "sites[0].name": "--site",
    "sites[0].pods[0].name": "--pod",
    "sites[0].pods[0].hypervisors[0].name": "NAME",
    "sites[0].pods[0].hypervisors[0].uri": "--uri",
    "sites[0].pods[0].hypervisors[0].groups": "--group",
}


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
    from virtfleet.inventory.fleetfile import parse_fleet

    # Validate through the fleet file model so `host add` and `apply` share every rule, and
    # name the command-line word, not the fleet-file path, in the error.
    try:
        # insecure_transport: whether qemu+tcp may join the pod is the stored pod's to say.
        fleet = parse_fleet({"sites": [{"name": site, "pods": [{
            "name": pod, "insecure_transport": True, "hypervisors": [
                {"name": name, "uri": uri, "groups": list(group or [])}]}]}]})
    except InvalidInput as exc:
        raise InvalidInput(_ADD_FIELDS.get(re.sub(r"\[\d+\]$", "", exc.field), exc.field),
                           exc.rule) from None
    hv = fleet.sites[0].pods[0].hypervisors[0]
    keys = host_key_step([(name, hv.uri)], accept_new)  # shown; refused unless accepted
    with options_named(KEY_FLAGS):
        app_context(ctx).store().add_hypervisor(site, pod, hv)
    keys.commit()
    emit(f"Hypervisor {name} added to {site}/{pod}\n" + keys.text)


@app.command("remove")
def remove(ctx: typer.Context,
           name: Annotated[str, typer.Argument(help="Hypervisor name.")]) -> None:
    """Remove a hypervisor from the inventory (its VMs are not touched)."""
    app_context(ctx).store().remove_hypervisor(name)
    emit(f"Hypervisor {name} removed from the inventory\n")


@app.command("list")
def list_hosts(ctx: typer.Context, site: Site = None, pod: Pod = None, group: Group = None,
               json: Json = False) -> None:
    """Hypervisors in the inventory, with the last known reachability."""
    store = app_context(ctx).store()
    hosts = store.hypervisors(site=site, pod=pod, group=group)
    status = {s.host: s for s in store.host_statuses()}
    if json:
        out = []
        for h in hosts:
            s = status.get(h.name)
            seen = s.observed_at if s is not None else None
            out.append({
                "name": h.name, "uri": h.uri, "site": h.site, "pod": h.pod,
                "groups": list(h.groups), "maintenance": h.maintenance,
                "reachable": s.reachable if s is not None else None,
                "error": s.error if s is not None else "",
                "observed_at": seen.isoformat() if seen is not None else None,
            })
        emit_json(out)
        return
    def state(h: HostRecord) -> str:
        s = status.get(h.name)
        if h.maintenance:
            return "maintenance"
        if s is None:
            return "unknown"
        return "up" if s.reachable else "down"
    emit(table(["Name", "Site", "Pod", "Groups", "State", "URI"],
               [(h.name, h.site, h.pod, ",".join(h.groups) or "-", state(h), h.uri)
                for h in hosts]))


T = TypeVar("T")


def _ask(ctx: typer.Context, what: str, work: Callable[[Host], T], names: list[str] | None,
         site: str | None, pod: str | None, group: str | None) -> list[HostResult[T]]:
    """Select hosts, ask each (with a progress bar), report failures on stderr."""
    from virtfleet.queries import ask_fleet, failures

    hosts = select_hosts(ctx, names, site, pod, group)
    with fleet_progress(len(hosts), what) as tick:
        results = ask_fleet(hosts, work, progress=tick)
    report_failures(failures(results), asked=len(results))
    return results


def _exit_if_failed(results: Sequence[HostResult[Any]]) -> None:
    if any(r.error is not None for r in results):
        raise typer.Exit(1)


@app.command("info")
def info(ctx: typer.Context, names: Names = None, site: Site = None, pod: Pod = None,
         group: Group = None, json: Json = False) -> None:
    """`virsh nodeinfo` for each hypervisor: CPU model, CPUs, MHz, topology, memory."""
    from virtfleet.queries import node_info_of

    results = _ask(ctx, "nodeinfo", node_info_of, names, site, pod, group)
    ok = [(r.host, r.value) for r in results if r.value is not None]
    if json:
        emit_json([{"host": h.name, "site": h.site, "pod": h.pod, **n.as_json()} for h, n in ok])
    else:
        emit("".join(f"{h.name}\n" + fields([
            ("CPU model", n.cpu_model), ("CPU(s)", n.cpus),
            ("CPU frequency", f"{n.mhz} MHz"), ("CPU socket(s)", n.sockets),
            ("Core(s) per socket", n.cores_per_socket),
            ("Thread(s) per core", n.threads_per_core), ("NUMA cell(s)", n.numa_cells),
            ("Memory size", f"{n.memory_kib} KiB")]) + "\n" for h, n in ok))
    _exit_if_failed(results)


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
    from virtfleet.queries import sysinfo_of

    results = _ask(ctx, "sysinfo", sysinfo_of, names, site, pod, group)
    ok = [(r.host, r.value) for r in results if r.value is not None]
    if json:
        emit_json([{"host": h.name, **s.as_json()} for h, s in ok])
    else:
        emit("".join(_sysinfo_text(h, s) for h, s in ok))
    _exit_if_failed(results)


@app.command("version")
def version(ctx: typer.Context, names: Names = None, site: Site = None, pod: Pod = None,
            group: Group = None, json: Json = False) -> None:
    """`virsh version` for each hypervisor: libvirt and hypervisor versions."""
    from virtfleet.queries import version_of

    results = _ask(ctx, "version", version_of, names, site, pod, group)
    ok = [(r.host, r.value) for r in results if r.value is not None]
    if json:
        emit_json([{"host": h.name, **v} for h, v in ok])
    else:
        emit(table(["Host", "Client library", "Daemon library", "Driver", "Hypervisor"],
                   [(h.name, v["client_library"], v["daemon_library"], v["driver"],
                     v["hypervisor"]) for h, v in ok]))
    _exit_if_failed(results)


@app.command("check")
def check(ctx: typer.Context, names: Names = None, site: Site = None, pod: Pod = None,
          group: Group = None, json: Json = False) -> None:
    """Preflight: reachable, virt types, VT-x/AMD-V, IOMMU, KVM usable; the pod's storage pool
    active and writable, autostart pools running (see docs/storage.md)."""
    from virtfleet.fleet.storage_check import host_check_with_storage, storage_by_host
    from virtfleet.queries import HostCheck, failures

    work = host_check_with_storage(storage_by_host(app_context(ctx).store()))
    results = _ask(ctx, "check", work, names, site, pod, group)
    why = {f.host: f.message for f in failures(results)}
    checks = [(r.host, r.value if r.value is not None
               else HostCheck.unreachable(why.get(r.host.name, ""))) for r in results]
    if json:
        emit_json([{"host": h.name, **c.as_json()} for h, c in checks])
    else:
        def yn(v: bool | None) -> str:
            return "-" if v is None else ("yes" if v else "no")
        emit(table(["Host", "Reachable", "Virt types", "VT", "IOMMU", "KVM", "Notes"], [
            (h.name, yn(c.reachable), ",".join(c.virt_types) or "-", c.hw_virt or "-",
             yn(c.iommu), yn(c.kvm_usable) if c.reachable else "-",
             "; ".join(c.problems) or "ok") for h, c in checks]))
    _exit_if_failed(results)
