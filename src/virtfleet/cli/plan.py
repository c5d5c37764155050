"""`virtfleet plan ...`: capacity planning (reference, capacity) and placement on the live fleet
(headroom, place). The arithmetic and the scheduler live in virtfleet.placement, the live
fleet's facts come through the planning service (fleet/planning.py); this module turns flags
into their models and prints."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.fields import in_text
from virtfleet.cli.options import Json, Pod, Site
from virtfleet.cli.output import emit, emit_json, fields, report_failures, table
from virtfleet.cli.progress import step_progress
from virtfleet.errors import InvalidInput
from virtfleet.placement.kinds import Scope, Spread

if TYPE_CHECKING:
    from virtfleet.fleet.planning import PlanningService
    from virtfleet.placement.policy import Policy

app = typer.Typer(no_args_is_help=True,
                  help="Capacity planning and VM placement: the estate's sizing, done by code.")

# Model field -> the flag a user typed, so errors name what they can fix.
_FLAGS = {
    "default.cpu": "--cpu-ratio", "default.memory": "--memory-ratio", "memory_gib": "--memory-gib",
    "memory_mib": "--memory-mib", "memory_ratio": "--memory-ratio", "cpu_ratio": "--cpu-ratio",
    "shape.vcpus": "--vcpus", "shape.memory_mib": "--memory-mib", "shape.disk_gib": "--disk-gib",
    "reserve_memory_mib": "--reserve-mib", "anti_affinity": "--anti-affinity", "name": "NAME",
    "allow_memory_overcommit": "--allow-memory-overcommit",
}


def _flag(field: str) -> str:
    return _FLAGS.get(field, "--" + field.split(".")[-1].replace("_", "-"))


def _worded(field: str, rule: str, flags: Mapping[str, str] = _FLAGS) -> InvalidInput:
    """A model's or a service's field, and the fields its rule names, as the options a user
    typed."""
    return InvalidInput(field if field.startswith("--") else _flag(field), in_text(rule, flags))


@contextmanager
def _flagged() -> Iterator[None]:
    try:
        yield
    except InvalidInput as exc:
        raise _worded(exc.field, exc.rule) from None


def _parse(model: type[Any], data: dict[str, Any]) -> Any:
    from virtfleet.placement.models import parse

    with _flagged():
        return parse(model, data)


CpuRatio = Annotated[float, typer.Option("--cpu-ratio", help="vCPUs per host thread.")]
MemRatio = Annotated[float, typer.Option(
    "--memory-ratio", help="Memory overcommit; above 1.0 needs --allow-memory-overcommit.")]
AllowMem = Annotated[bool, typer.Option(
    "--allow-memory-overcommit", help="Accept a memory ratio above 1.0 (peak hours suffer).")]
Weigh = Annotated[Spread, typer.Option("--weigh", help="spread: emptiest hosts first; "
                                       "pack: fullest hosts that still fit.")]
PolicyFile = Annotated[Path | None, typer.Option(
    "--policy", help="YAML policy file (per-group ratios; see docs/placement.md).",
    show_default=False)]
ReserveMib = Annotated[int, typer.Option(
    "--reserve-mib", help="Memory each hypervisor keeps for itself.")]
Vcpus = Annotated[int, typer.Option("--vcpus", help="vCPUs per VM.")]
MemMib = Annotated[int, typer.Option("--memory-mib", help="Memory per VM, MiB.")]
GroupOpt = Annotated[str | None, typer.Option("--group", help="Application (host) group.")]


def _policy(file: Path | None, cpu: float | None, mem: float | None, allow: bool,
            reserve: int | None, weigh: Spread | None) -> Policy:
    from virtfleet.placement.models import parse
    from virtfleet.placement.policy import Policy
    data: dict[str, Any] = {}
    if file is not None:
        import yaml

        try:
            loaded = yaml.safe_load(file.read_text())
        except OSError as exc:
            raise InvalidInput("--policy", f"cannot read {str(file)!r} ({exc.strerror})") from None
        except yaml.YAMLError:
            raise InvalidInput("--policy", f"{str(file)!r} is not valid YAML") from None
        if not isinstance(loaded, dict):
            raise InvalidInput("--policy", "must be a YAML mapping")
        data = loaded
    default = dict(data.get("default") or {})
    if cpu is not None:
        default["cpu"] = cpu
    if mem is not None:
        default["memory"] = mem
    data["default"] = default
    if allow:
        data["allow_memory_overcommit"] = True
    if reserve is not None:
        data["reserve_memory_mib"] = reserve
    if weigh is not None:
        data["weigh"] = weigh
    try:
        return parse(Policy, data)
    except InvalidInput as exc:
        field = exc.field
        if file is None:
            raise _worded(field, exc.rule) from None
        # The policy file's own key is the other way to allow it.
        flags = {**_FLAGS, "allow_memory_overcommit": "--allow-memory-overcommit (or "
                 "allow_memory_overcommit: true in the --policy file)"}
        raise _worded(field if field.startswith("default") else f"--policy {field}", exc.rule,
                      flags) from None


# --------------------------------------------------------------------------- reference


@app.command("reference")
def reference(json: Json = False) -> None:
    """The reference estate, computed: 40 vCPUs, 10 VMs, 12 x 32 GB..."""
    from virtfleet.placement.capacity import reference as ref

    r = ref()
    if json:
        emit_json(r)
        return
    hv: Any = r["hypervisor"]
    vm: Any = r["vm"]
    sites: list[str] = r["sites"]  # type: ignore[assignment]
    swap: list[dict[str, str]] = r["swap_table"]  # type: ignore[assignment]
    emit("Reference architecture (sites: " + ", ".join(sites) + ")\n\n"
         + fields([
             ("Hypervisor CPUs", f"{hv['sockets']} x {hv['cores_per_socket']}-core/"
              f"{hv['cores_per_socket'] * hv['threads_per_core']}-thread = {hv['vcpus']} vCPUs"),
             ("VMs per hypervisor", f"{r['vms_per_hypervisor']} x {vm['vcpus']} vCPUs = "
              f"{r['vm_vcpus_per_hypervisor']} vCPUs"),
             ("VM memory", f"{r['vms_per_hypervisor']} x {vm['memory_gb']} GB = "
              f"{r['vm_memory_per_hypervisor_gb']} GB"),
             ("Hypervisor memory", f"{r['vm_memory_per_hypervisor_gb']} GB + "
              f"{r['hypervisor_reserve_gb']} GB hypervisor overhead = {r['memory_needed_gb']} GB"
              f" -> {hv['dimms']} x {hv['dimm_gb']} GB DIMMs = {hv['memory_gb']} GB"),
             ("Runs out first", r["runs_out_first"]),
             ("Pods", f"{r['pods_per_site']} pods x {r['hypervisors_per_pod']} hypervisors = "
              f"{r['hypervisors_per_site']} hypervisors per site, {r['hypervisors_total']} in all"),
             ("VMs", f"{r['vms_per_pod']} per pod, {r['vms_per_site']} per site, "
              f"{r['vms_total']} in all"),
             ("Filers", f"1 cluster (2 heads) per pod: {r['filer_clusters_per_site']} per site, "
              f"{r['filer_clusters_total']} in all"),
             ("VM memory (Apache)", f"{vm['apache_children']} children x "
              f"{vm['apache_child_mb']} MB = {vm['apache_gb']} GB + {vm['os_gb']} GB OS = "
              f"{vm['total_gb']} GB"),
             ("VM swap", f"{vm['swap_rule']} ({vm['swap_gb']:g} GB for {vm['memory_gb']} GB)"),
         ])
         + "\nRHEL swap table\n"
         + table(["RAM", "Swap"], [(s["ram"], s["swap"]) for s in swap]))


# --------------------------------------------------------------------------- capacity


@app.command("capacity")
def capacity(
    vms: Annotated[int, typer.Option("--vms", help="VMs in the workload.")] = 15_000,
    vcpus: Vcpus = 4,
    memory_gib: Annotated[int, typer.Option("--memory-gib", help="Memory per VM, GiB.")] = 32,
    disk_gib: Annotated[int, typer.Option("--disk-gib", help="Disk per VM on the filer.")] = 0,
    growth_pct: Annotated[float, typer.Option("--growth-pct", help="Growth to allow, %.")] = 0,
    sockets: Annotated[int, typer.Option("--sockets")] = 2,
    cores: Annotated[int, typer.Option("--cores", help="Cores per socket.")] = 10,
    threads: Annotated[int, typer.Option("--threads", help="Threads per core.")] = 2,
    dimm_slots: Annotated[int, typer.Option("--dimm-slots")] = 24,
    dimm_gib: Annotated[int, typer.Option("--dimm-gib", help="Size of one DIMM, GiB.")] = 32,
    cpu_ratio: Annotated[float, typer.Option("--cpu-ratio")] = 1.0,
    memory_ratio: Annotated[float, typer.Option("--memory-ratio")] = 1.0,
    allow_memory_overcommit: AllowMem = False,
    reserve_gib: Annotated[int, typer.Option("--reserve-gib",
                                             help="Memory for the hypervisor itself.")] = 16,
    spares_per_pod: Annotated[int, typer.Option("--spares-per-pod",
                                                help="Empty hypervisors per pod (N+1).")] = 1,
    pod_size: Annotated[int, typer.Option("--pod-size", help="Hypervisors per pod.")] = 100,
    sites: Annotated[int, typer.Option("--sites")] = 1,
    json: Json = False,
) -> None:
    """Hypervisors, pods, DIMMs and filers a workload needs, and what runs out first."""
    from virtfleet.placement.capacity import Hardware, PlanPolicy, Workload, plan_capacity

    w = _parse(Workload, {"vms": vms, "vcpus": vcpus, "memory_gib": memory_gib,
                          "disk_gib": disk_gib, "growth_pct": growth_pct})
    hw = _parse(Hardware, {"sockets": sockets, "cores": cores, "threads": threads,
                           "dimm_slots": dimm_slots, "dimm_gib": dimm_gib})
    pol = _parse(PlanPolicy, {"cpu_ratio": cpu_ratio, "memory_ratio": memory_ratio,
                              "allow_memory_overcommit": allow_memory_overcommit,
                              "reserve_gib": reserve_gib, "spares_per_pod": spares_per_pod,
                              "pod_size": pod_size, "sites": sites})
    try:
        plan = plan_capacity(w, hw, pol)
    except ValueError as exc:
        field, _, rule = str(exc).partition(": ")
        raise _worded(field, rule) from None
    if json:
        emit_json(plan.model_dump())
        return
    emit(fields([
        ("Hypervisor", f"{plan.host_vcpus} vCPUs, {plan.dimms} x {plan.dimm_gib} GiB DIMMs = "
                       f"{plan.host_memory_gib} GiB"),
        ("VMs per hypervisor", f"{plan.vms_per_host} (CPU allows {plan.vms_per_host_by_cpu}, "
                               f"memory {plan.vms_per_host_by_memory})"),
        ("Runs out first", plan.runs_out_first),
        ("Memory needed", f"{plan.vm_memory_per_host_gib} GiB VMs + {pol.reserve_gib} GiB "
                          f"reserve = {plan.host_memory_needed_gib} GiB"),
        ("Left per hypervisor", f"{plan.free_vcpus_per_host} vCPUs, "
                                f"{plan.free_memory_gib_per_host} GiB"),
        ("VMs", f"{plan.total_vms} ({plan.vms_per_site} per site)"),
        ("Pods per site", f"{plan.pods_per_site} x {plan.hosts_per_pod} hypervisors "
                          f"({plan.spares_per_pod} spare each)"),
        ("Hypervisors", f"{plan.hosts_per_site} per site, {plan.hosts_total} in all"),
        ("Filer clusters", f"{plan.filer_clusters_per_site} per site, "
                           f"{plan.filer_clusters_total} in all"
                           + (f", {plan.filer_gib_per_pod} GiB each" if w.disk_gib else "")),
    ]))


# --------------------------------------------------------------------------- live fleet


@contextmanager
def _planning(ctx: typer.Context, policy: Policy) -> Iterator[PlanningService]:
    from virtfleet.fleet.planning import PlanningService

    with PlanningService(app_context(ctx).store(), policy=policy) as service, _flagged():
        yield service


@app.command("headroom")
def headroom(
    ctx: typer.Context,
    vcpus: Vcpus = 4,
    memory_mib: MemMib = 32768,
    group: GroupOpt = None,
    site: Site = None,
    pod: Pod = None,
    cpu_ratio: Annotated[float | None, typer.Option("--cpu-ratio")] = None,
    memory_ratio: Annotated[float | None, typer.Option("--memory-ratio")] = None,
    allow_memory_overcommit: AllowMem = False,
    reserve_mib: Annotated[int | None, typer.Option("--reserve-mib")] = None,
    policy_file: PolicyFile = None,
    json: Json = False,
) -> None:
    """How many more VMs of a shape fit, where, and what fails first if a hypervisor or a pod
    is lost."""
    from virtfleet.fleet.planning import HeadroomRequest
    from virtfleet.fleet.scope import Scope as Where
    from virtfleet.placement.models import PlacementRequest

    shape = _parse(PlacementRequest, {"name": "headroom", "shape": {
        "vcpus": vcpus, "memory_mib": memory_mib}}).shape
    policy = _policy(policy_file, cpu_ratio, memory_ratio, allow_memory_overcommit,
                     reserve_mib, None)
    with _planning(ctx, policy) as plan, step_progress() as tick:
        room = plan.headroom(HeadroomRequest(shape, Where(site=site, pod=pod, group=group)),
                             progress=tick)
    report_failures(room.failed, asked=room.asked)
    if json:
        emit_json(room.as_json())
    else:
        emit(f"{room.fits} more VMs of {shape.vcpus} vCPUs/{shape.memory_mib} MiB fit"
             + (f" in group {group}" if group else "") + "\n\n")
        emit(table(["Host", "Site", "Pod", "Groups", "Fits", "Free vCPUs", "Free MiB", "Bound by"],
                   [(f.host, f.site, f.pod, ",".join(f.groups) or "-", f.fits, f.free_vcpus,
                     f.free_memory_mib, f.bound_by) for f in room.hosts]))
        emit("\nIf one is lost\n")
        emit(table(["Lost", "Restart in", "VMs", "Re-placed", "Runs out first", "Spare after"],
                   [(f"{c.kind} {c.lost}", c.scope, c.displaced, c.placed,
                     c.runs_out_first, c.spare_after) for c in room.loss]))
    if room.failed:
        raise typer.Exit(1)


@app.command("place")
def place(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="VM name (members are NAME-1 .. NAME-N).")],
    vcpus: Vcpus = 4,
    memory_mib: MemMib = 32768,
    count: Annotated[int, typer.Option("--count", help="How many VMs.")] = 1,
    group: GroupOpt = None,
    site: Site = None,
    pod: Pod = None,
    anti_affinity: Annotated[Scope | None, typer.Option(
        "--anti-affinity", help="Members on different hosts or pods.")] = None,
    affinity: Annotated[Scope | None, typer.Option(
        "--affinity", help="Members on one host or one pod.")] = None,
    weigh: Weigh = Spread.spread,
    cpu_ratio: Annotated[float | None, typer.Option("--cpu-ratio")] = None,
    memory_ratio: Annotated[float | None, typer.Option("--memory-ratio")] = None,
    allow_memory_overcommit: AllowMem = False,
    reserve_mib: Annotated[int | None, typer.Option("--reserve-mib")] = None,
    policy_file: PolicyFile = None,
    explain: Annotated[bool, typer.Option("--explain",
                                          help="Say which hosts each filter removed.")] = False,
    claim: Annotated[bool, typer.Option("--claim", help="Hold the room in the store "
                                        "(released by whoever defines the VMs).")] = False,
    json: Json = False,
) -> None:
    """Where the scheduler would put NAME on the live fleet (nothing is defined)."""
    from virtfleet.fleet.planning import PlaceRequest
    from virtfleet.placement.models import PlacementRequest

    req = _parse(PlacementRequest, {
        "name": name, "shape": {"vcpus": vcpus, "memory_mib": memory_mib}, "count": count,
        "group": group, "site": site, "pod": pod, "anti_affinity": anti_affinity,
        "affinity": affinity})
    policy = _policy(policy_file, cpu_ratio, memory_ratio, allow_memory_overcommit,
                     reserve_mib, weigh)
    with _planning(ctx, policy) as plan, step_progress() as tick:
        placed = plan.place(PlaceRequest(req, explain, claim), progress=tick)
    report_failures(placed.failed, asked=placed.asked)
    if json:
        emit_json(placed.as_json())
    else:
        if placed.placed.explain is not None:
            emit(placed.placed.explain.text())
        emit(table(["VM", "Host"], placed.placed.vms))
    if placed.failed:
        raise typer.Exit(1)
