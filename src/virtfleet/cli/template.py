"""`virtfleet template ...` and `virtfleet vm clone`: sealed templates and the VMs made from
them (virt-sysprep and virt-clone, for a fleet)."""

from __future__ import annotations

from typing import Annotated

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.options import CpuRatioOpt, HostOpt, Json, Pod, Site
from virtfleet.cli.output import emit, emit_json, fields, report_failures, table, warn
from virtfleet.cli.plan import PolicyFile
from virtfleet.cli.progress import fleet_progress
from virtfleet.errors import InvalidInput

app = typer.Typer(no_args_is_help=True,
                  help="Templates: sealed (virt-sysprep) images that VMs are cloned from.")

TemplateName = Annotated[str, typer.Argument(help="Template name.", show_default=False)]


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Template name, unique across the fleet.")],
    source: Annotated[str, typer.Option("--from", help="A shut-off VM whose disks to seal.",
                                        show_default=False)],
    profile: Annotated[str | None, typer.Option(
        "--profile", help="Also tune the guest (virt-customize): 'optimize' is the chapter's "
        "profile (tuned virtual-guest, unneeded services off, acpid, serial console in the "
        "boot loader, IPv6 off).")] = None,
    host: HostOpt = None,
    json: Json = False,
) -> None:
    """Seal a copy of a shut-off VM's disks with virt-sysprep into a read-only template."""
    from virtfleet.fleet.locate import locate_vm
    from virtfleet.provision.locks import vm_lock
    from virtfleet.provision.templates import create_template
    from virtfleet.validate import check_name
    from virtfleet.virt.fanout import ConnectionPool

    check_name("NAME", name)
    check_name("--from", source)
    store = app_context(ctx).store()
    pool = ConnectionPool()
    try:
        where = locate_vm(source, store, pool, host=host).name
        with vm_lock(store, f"{where}/{source}", "template create"), \
                vm_lock(store, f"create/{name}", "template create"):
            tpl = create_template(store, pool, name, source, host=where, profile=profile,
                                  progress=warn)
    finally:
        pool.close()
    if json:
        emit_json(tpl.as_json())
    else:
        emit(f"Template '{tpl.name}' created on {tpl.record.name} from '{source}' (sealed; "
             f"{', '.join(d.path for d in tpl.disks)} read-only)\n")


@app.command("list")
def list_templates(ctx: typer.Context, site: Site = None, pod: Pod = None, host: HostOpt = None,
                   json: Json = False) -> None:
    """Every template in scope, with the hypervisor that holds it."""
    from virtfleet.fleet.queries import failures
    from virtfleet.provision.templates import templates_on
    from virtfleet.virt.fanout import ConnectionPool, fan_out

    hosts = app_context(ctx).store().hypervisors(site=site, pod=pod, host=host)
    pool = ConnectionPool()
    try:
        with fleet_progress(len(hosts), "templates") as tick:
            results = fan_out(hosts, templates_on, pool, progress=tick)
    finally:
        pool.close()
    rows = [(r.host.site, r.host.pod, r.host.name, t) for r in results for t in r.value or ()]
    if json:
        emit_json([{"site": s, "pod": p, "host": h, "name": t} for s, p, h, t in rows])
    else:
        emit(table(["Site", "Pod", "Host", "Template"], rows))
    failed = failures(results)
    report_failures(failed, asked=len(results))
    if failed:
        raise typer.Exit(1)


@app.command("info")
def info(ctx: typer.Context, name: TemplateName, host: HostOpt = None,
         json: Json = False) -> None:
    """A template's hypervisor, size, images and linked clones."""
    from virtfleet.provision.templates import find_template, linked_clones
    from virtfleet.validate import check_name
    from virtfleet.virt.fanout import ConnectionPool

    check_name("TEMPLATE", name)
    store = app_context(ctx).store()
    pool = ConnectionPool()
    try:
        tpl = find_template(store, pool, name, host=host)
        clones = linked_clones(store, pool, tpl)
    finally:
        pool.close()
    if json:
        emit_json({**tpl.as_json(), "linked_clones": clones})
        return
    emit(fields([("Name", tpl.name), ("Host", tpl.record.name), ("Pod", tpl.record.pod),
                 ("CPU(s)", tpl.domain.vcpus),
                 ("Memory", f"{(tpl.domain.memory_kib or 0) // 1024} MiB"),
                 *[(f"Image {i}", f"{d.path} ({d.format}, mode {d.mode})")
                   for i, d in enumerate(tpl.disks)],
                 ("Linked clones", len(clones)),
                 *[("Linked clone", f"{path} ({', '.join(users) or 'no VM uses it'})")
                   for path, users in clones.items()]]))


@app.command("delete")
def delete(ctx: typer.Context, name: TemplateName, host: HostOpt = None) -> None:
    """Undefine a template and delete its images; refused while linked clones use them."""
    from virtfleet.provision.locks import vm_lock
    from virtfleet.provision.templates import delete_template, find_template
    from virtfleet.validate import check_name
    from virtfleet.virt.fanout import ConnectionPool

    check_name("TEMPLATE", name)
    store = app_context(ctx).store()
    pool = ConnectionPool()
    try:
        where = find_template(store, pool, name, host=host).record.name
        with vm_lock(store, f"{where}/{name}", "template delete"):
            tpl = delete_template(store, pool, name, host=where)
            store.forget_vm(where, name, tpl.domain.uuid)
    finally:
        pool.close()
    emit(f"Template '{tpl.name}' deleted from {tpl.record.name} with "
         f"{', '.join(d.path for d in tpl.disks)}\n")


def clone_vm(
    ctx: typer.Context,
    template: Annotated[str, typer.Argument(help="The template to clone.", show_default=False)],
    name: Annotated[str, typer.Argument(help="New VM name (with --count: NAME-1 .. NAME-N).",
                                        show_default=False)],
    linked: Annotated[bool, typer.Option(
        "--linked/--full", help="Linked: a qcow2 overlay on the template's image (fast, "
        "needs the template); full: an independent copy.")] = True,
    count: Annotated[int, typer.Option("--count", min=1, max=10_000,
                                       help="Make this many.")] = 1,
    start: Annotated[bool, typer.Option("--start/--no-start",
                                        help="Start each clone once made.")] = False,
    template_host: Annotated[str | None, typer.Option(
        "--template-host", help="The hypervisor holding the template, if the name is on "
        "several.")] = None,
    storage_pool: Annotated[str | None, typer.Option(
        "--pool", help="Full clones: the storage pool to copy into (default: the template's "
        "on its own host, 'default' elsewhere).")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Put the clones on this "
                                             "hypervisor.")] = None,
    pod: Annotated[str | None, typer.Option("--pod", help="Let the scheduler place them in "
                                            "this pod.")] = None,
    site: Annotated[str | None, typer.Option("--site", help="... or in this site.")] = None,
    cpu_ratio: CpuRatioOpt = None,
    policy_file: PolicyFile = None,
    json: Json = False,
) -> None:
    """Clone VMs from a template (virt-clone): new name, UUID, MACs; hostname via SMBIOS.

    Without --host/--pod/--site, clones go to the template's pod (linked clones: to hypervisors
    that see the template's image)."""
    from virtfleet.cli.plan import _policy
    from virtfleet.provision.clone import Cloned, CloneRequest, clone
    from virtfleet.virt.fanout import ConnectionPool

    if sum(x is not None for x in (host, pod, site)) > 1:
        raise InvalidInput("--host/--pod/--site", "give at most one place for the clones")
    req = CloneRequest(template=template, name=name, count=count, linked=linked, host=host,
                       pod=pod, site=site, template_host=template_host, pool=storage_pool,
                       start=start)
    policy = _policy(policy_file, cpu_ratio, None, False, None, None)
    store = app_context(ctx).store()
    pool = ConnectionPool()
    try:
        with fleet_progress(count, "clone") as tick:
            def done(c: Cloned) -> None:
                tick(c)
            made = clone(store, pool, req, progress=done, policy=policy)
    finally:
        pool.close()
    if json:
        emit_json([c.as_json() for c in made])
    elif len(made) == 1 and made[0].ok:
        emit(f"Domain '{made[0].name}' {made[0].result} from '{template}' on {made[0].host}\n")
    else:
        emit(table(["Host", "Name", "Result"], [(c.host, c.name, c.result) for c in made]))
    if not all(c.ok for c in made):
        raise typer.Exit(1)
