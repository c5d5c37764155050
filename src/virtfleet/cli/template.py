"""`virtfleet template ...` and `virtfleet vm clone`: sealed templates and the VMs made from
them (virt-sysprep and virt-clone, for a fleet; the template service, fleet/templates.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.fields import options_named
from virtfleet.cli.options import CpuRatioOpt, HAOpt, HAPriorityOpt, HostOpt, Json, Pod, Site
from virtfleet.cli.output import emit, emit_json, fields, report_failures, table, warn
from virtfleet.cli.plan import PolicyFile
from virtfleet.cli.progress import step_progress

if TYPE_CHECKING:
    from virtfleet.fleet.templates import TemplateService
    from virtfleet.placement.policy import Policy

app = typer.Typer(no_args_is_help=True,
                  help="Templates: sealed (virt-sysprep) images that VMs are cloned from.")

# The service names its requests' fields; the command line names its options.
FLAGS = {"name": "NAME", "source": "--from", "profile": "--profile", "template": "TEMPLATE",
         "linked": "--linked", "linked=false": "--full", "pool": "--pool", "networks": "--network",
         "count": "--count", "host/pod/site": "--host/--pod/--site",
         "ha": "--ha", "ha_priority": "--ha-priority"}


@contextmanager
def _templates(ctx: typer.Context, policy: Policy | None = None
               ) -> Iterator[TemplateService]:
    from virtfleet.fleet.templates import TemplateService

    with TemplateService(app_context(ctx).store(), policy=policy) as service, \
            options_named(FLAGS):
        yield service


TemplateName = Annotated[str, typer.Argument(help="Template name.", show_default=False)]


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Template name, unique across the fleet.")],
    source: Annotated[str, typer.Option("--from", help="A shut-off VM whose disks to seal.",
                                        show_default=False)],
    profile: Annotated[str | None, typer.Option(
        "--profile", help="Also tune the guest (virt-customize): 'optimize' sets tuned "
        "virtual-guest profile, unneeded services off, acpid on, a serial console in "
        "the boot loader, IPv6 off.")] = None,
    host: HostOpt = None,
    json: Json = False,
) -> None:
    """Seal a copy of a shut-off VM's disks with virt-sysprep into a read-only template."""
    from virtfleet.fleet.templates import TemplateRequest

    with _templates(ctx) as templates:
        tpl = templates.create(TemplateRequest(name, source, profile, host), say=warn)
    if json:
        emit_json(tpl.as_json())
    else:
        emit(f"Template '{tpl.name}' created on {tpl.record.name} from '{source}' (sealed; "
             f"{', '.join(d.path for d in tpl.disks)} read-only)\n")


@app.command("list")
def list_templates(ctx: typer.Context, site: Site = None, pod: Pod = None, host: HostOpt = None,
                   json: Json = False) -> None:
    """Every template in scope, with the hypervisor that holds it."""
    from virtfleet.fleet.scope import Scope

    with _templates(ctx) as templates, step_progress() as tick:
        found = templates.templates(Scope(site=site, pod=pod, host=host), progress=tick)
    if json:
        emit_json([t.as_json() for t in found.templates])
    else:
        emit(table(["Site", "Pod", "Host", "Template"],
                   [(t.holder.site, t.holder.pod, t.holder.name, t.name)
                    for t in found.templates]))
    report_failures(found.failed, asked=found.asked)
    if not found.ok:
        raise typer.Exit(1)


@app.command("info")
def info(ctx: typer.Context, name: TemplateName, host: HostOpt = None,
         json: Json = False) -> None:
    """A template's hypervisor, size, images and linked clones."""
    with _templates(ctx) as templates:
        found = templates.info(name, host)
    if json:
        emit_json(found.as_json())
        return
    tpl, clones = found.template, found.linked_clones
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
    with _templates(ctx) as templates:
        tpl = templates.delete(name, host)
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
    ha: HAOpt = False, ha_priority: HAPriorityOpt = None,
    json: Json = False,
) -> None:
    """Clone VMs from a template (virt-clone): new name, UUID, MACs; hostname via SMBIOS.

    Without --host/--pod/--site, clones go to the template's pod (linked clones: to hypervisors
    that see the template's image). With --ha each clone is restarted elsewhere in its pod
    when its hypervisor fails (docs/ha.md)."""
    from virtfleet.cli.plan import _policy
    from virtfleet.fleet.templates import CloneRequest

    req = CloneRequest(template=template, name=name, count=count, linked=linked, host=host,
                       pod=pod, site=site, template_host=template_host, pool=storage_pool,
                       start=start, ha=ha, ha_priority=ha_priority)
    policy = _policy(policy_file, cpu_ratio, None, False, None, None)
    with _templates(ctx, policy) as templates, step_progress() as tick:
        made = templates.clone(req, progress=tick)
    if json:
        emit_json([c.as_json() for c in made])
    elif len(made) == 1 and made[0].ok:
        emit(f"Domain '{made[0].name}' {made[0].result} from '{template}' on {made[0].host}\n")
    else:
        emit(table(["Host", "Name", "Result"], [(c.host, c.name, c.result) for c in made]))
    if not all(c.ok for c in made):
        raise typer.Exit(1)
