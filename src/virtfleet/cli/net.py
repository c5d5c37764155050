"""`virtfleet net ...`: libvirt virtual networks (virsh's net-* verbs) on a hypervisor, a pod,
a site or the whole fleet, with a result per host.

Reading (`list`, `info`) covers the whole fleet unless narrowed; changing (`define`, `start`,
`destroy`, `undefine`, `autostart`) must say where: `--host`, `--pod`, `--site`, `--group` or
`--all`. `define` checks every host in scope first (name free, subnet not overlapping) and makes
nothing anywhere if one of them would refuse. The work is the network service's
(fleet/networks.py); this module parses options and prints what it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.fields import options_named, reword
from virtfleet.cli.options import SCOPE_FLAGS, Group, HostOpt, Json, Pod, Site
from virtfleet.cli.output import emit, emit_json, fields, report_failures, table
from virtfleet.cli.progress import step_progress
from virtfleet.errors import InvalidInput

if TYPE_CHECKING:
    from virtfleet.fleet.declared_networks import NetworkChanges
    from virtfleet.fleet.networks import NetworkOutcome, NetworkService
    from virtfleet.fleet.scope import Answers, Progress, Scope
    from virtfleet.inventory.fleetfile import Fleet

app = typer.Typer(no_args_is_help=True,
                  help="Virtual networks (virsh net-*), on one host or fleet-wide.")

NetName = Annotated[str, typer.Argument(help="Network name.", show_default=False)]
AllHosts = Annotated[bool, typer.Option("--all", help="Every hypervisor in the fleet.")]
MAX_XML = 1024 * 1024
# The service's field names as this command line names them.
FLAGS = {**SCOPE_FLAGS, "name": "NAME", "xml": "--file", "destroy": "--destroy"}


@contextmanager
def _service(ctx: typer.Context, flags: Mapping[str, str] = FLAGS
             ) -> Iterator[NetworkService]:
    from virtfleet.fleet.networks import NetworkService

    with NetworkService(app_context(ctx).store()) as service, options_named(flags):
        yield service


def _scope(host: str | None, pod: str | None, site: str | None, group: str | None,
           all_: bool) -> Scope:
    from virtfleet.fleet.scope import Scope

    return Scope(host=host, pod=pod, site=site, group=group, all=all_)


def _exit_if_failed(answers: Answers[Any]) -> None:
    """A reading verb: the hosts that failed are named on stderr and make the exit 1; the
    output holds the others' answers."""
    report_failures(answers.failures, asked=len(answers))
    if not answers.ok:
        raise typer.Exit(1)


def _report(outcomes: Sequence[NetworkOutcome], json: bool) -> None:
    """Every host's result: in JSON; for people, one line for one host, or a table of every
    host, failed ones included. Each failure is also named on stderr; any makes the exit 1."""
    for o in outcomes:
        if o.error is not None:
            reword(o.error, FLAGS)
    if json:
        emit_json([o.as_json() for o in outcomes])
    elif len(outcomes) == 1 and outcomes[0].ok:
        o = outcomes[0]
        emit(f"Network {o.name} {o.result} on {o.host}\n")
    elif len(outcomes) > 1:
        emit(table(["Host", "Network", "Result"],
                   [(o.host, o.name, f"failed: {o.result}" if o.error else o.result)
                    for o in outcomes]))
    # A row without an error was not done because another host failed: not its own failure.
    report_failures([f for f in (o.failure() for o in outcomes) if f is not None],
                    asked=len(outcomes), rows=True)
    if not all(o.ok for o in outcomes):
        raise typer.Exit(1)


@app.command("list")
def list_networks(ctx: typer.Context, host: HostOpt = None, pod: Pod = None, site: Site = None,
                  group: Group = None, all_: AllHosts = False, json: Json = False) -> None:
    """`virsh net-list --all` on every hypervisor in scope (the whole fleet by default)."""
    with _service(ctx) as service, step_progress() as tick:
        answers = service.list_networks(_scope(host, pod, site, group, all_), tick)
    rows = [(h, n) for h, nets in answers.values for n in nets]
    if json:
        emit_json([{"host": h.name, "site": h.site, "pod": h.pod, **n.as_json()}
                   for h, n in rows])
    else:
        emit(table(["Host", "Name", "State", "Autostart", "Persistent", "Mode", "Bridge",
                    "Subnet"],
                   [(h.name, n.name, "active" if n.active else "inactive",
                     "yes" if n.autostart else "no", "yes" if n.persistent else "no", n.mode,
                     n.bridge, ",".join(n.subnets) or None) for h, n in rows]))
    _exit_if_failed(answers)


@app.command("info")
def info(ctx: typer.Context, name: NetName, host: HostOpt = None, pod: Pod = None,
         site: Site = None, group: Group = None, all_: AllHosts = False,
         json: Json = False) -> None:
    """`virsh net-info NAME` on every hypervisor in scope that has it."""
    with _service(ctx) as service, step_progress() as tick:
        answers = service.info(name, _scope(host, pod, site, group, all_), tick)
    found = answers.values
    if json:
        emit_json([{"host": h.name, **n.as_json()} for h, n in found])
    else:
        emit("".join(f"{h.name}\n" + fields([
            ("Name", n.name), ("UUID", n.uuid), ("Active", "yes" if n.active else "no"),
            ("Persistent", "yes" if n.persistent else "no"),
            ("Autostart", "yes" if n.autostart else "no"), ("Bridge", n.bridge),
            ("Mode", n.mode), ("Subnet", ",".join(n.subnets) or None),
            ("Virtual port", n.virtualport), ("Portgroups", ",".join(n.portgroups) or None),
        ]) + "\n" for h, n in found))
    _exit_if_failed(answers)


@app.command("dumpxml")
def dumpxml(ctx: typer.Context, name: NetName,
            host: Annotated[str, typer.Option("--host", help="The hypervisor.")]) -> None:
    """`virsh net-dumpxml NAME` on one hypervisor (a file `net define --file` takes back)."""
    with _service(ctx) as service:
        emit(service.xml(name, host))


@app.command("dhcp-leases")
def dhcp_leases(ctx: typer.Context, name: NetName, host: HostOpt = None, pod: Pod = None,
                site: Site = None, group: Group = None, all_: AllHosts = False,
                json: Json = False) -> None:
    """`virsh net-dhcp-leases NAME` on every hypervisor in scope that has it."""
    from datetime import UTC, datetime

    with _service(ctx) as service, step_progress() as tick:
        answers = service.dhcp_leases(name, _scope(host, pod, site, group, all_), tick)
    rows = [(h.name, lease) for h, leases in answers.values for lease in leases]
    if json:
        emit_json([{"host": h, **lease.as_json()} for h, lease in rows])
    else:
        emit(table(["Host", "Expiry time (UTC)", "MAC address", "IP address", "Hostname"],
                   [(h, datetime.fromtimestamp(lease.expires, UTC).strftime(
                       "%Y-%m-%d %H:%M:%S"), lease.mac, lease.ip, lease.hostname)
                    for h, lease in rows]))
    _exit_if_failed(answers)


# -- define -----------------------------------------------------------------------------------

_KINDS = ("--nat", "--routed", "--open", "--isolated", "--bridge", "--ovs-bridge",
          "--hostdev-pf")


def _split(option: str, text: str, n_min: int, n_max: int) -> list[str]:
    parts = [p.strip() for p in text.split(",")]
    if not n_min <= len(parts) <= n_max or not all(parts):
        raise InvalidInput(option, f"{text!r} does not have the form the option takes "
                           "(see 'virtfleet net define --help')")
    return parts


def _portgroup(text: str) -> dict[str, object]:
    """NAME[,vlan=10[:20:30]][,trunk=yes][,default=yes]"""
    parts = _split("--portgroup", text, 1, 4)
    out: dict[str, object] = {"name": parts[0]}
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if not eq or key not in ("vlan", "trunk", "default") or key in out:
            raise InvalidInput("--portgroup", f"{part!r}: expected vlan=ID[:ID...], "
                               "trunk=yes or default=yes, each once")
        if key == "vlan":
            ids = value.split(":")
            if not all(i.isdigit() for i in ids):
                raise InvalidInput("--portgroup", f"vlan {value!r} is not VLAN ids "
                                   "separated by ':'")
            out["vlans"] = [int(i) for i in ids]
        else:
            if value not in ("yes", "no"):
                raise InvalidInput("--portgroup", f"{key} must be yes or no")
            out[key] = value == "yes"
    return out


@dataclass(frozen=True)
class NetOptions:
    """`net define`'s options for a network made from options, not from --file."""

    kinds: dict[str, str]  # the kind options given (--nat CIDR ...): exactly one is valid
    dhcp_range: Sequence[str] = ()
    dhcp_host: Sequence[str] = ()
    address: str | None = None
    bridge_name: str | None = None
    forward_dev: str | None = None
    portgroup: Sequence[str] = ()
    no_stp: bool = False

    def spec(self) -> tuple[dict[str, object], dict[str, str]]:
        """The spec's fields, parsed from the options, and which option set each of them."""
        if len(self.kinds) != 1:
            raise InvalidInput("/".join(_KINDS) + "/--file", "give exactly one kind of network")
        [(option, value)] = self.kinds.items()
        data: dict[str, object] = {}
        if option in ("--nat", "--routed", "--open", "--isolated"):
            mode = {"--nat": "nat", "--routed": "route"}.get(option, option[2:])
            data.update(mode=mode, subnet=value)
            if self.bridge_name is not None:
                data["bridge"] = self.bridge_name
        elif option in ("--bridge", "--ovs-bridge"):
            data.update(mode="bridge", bridge=value, ovs=option == "--ovs-bridge")
        else:
            data.update(mode="hostdev", pf=value)
        for key, given in (("address", self.address), ("forward_dev", self.forward_dev)):
            if given is not None:
                data[key] = given
        if self.no_stp:
            data["stp"] = False
        data["dhcp"] = [dict(zip(("start", "end"), _split("--dhcp-range", r, 2, 2),
                                 strict=True)) for r in self.dhcp_range]
        data["hosts"] = [dict(zip(("mac", "ip", "name"), _split("--dhcp-host", h, 2, 3),
                                  strict=False)) for h in self.dhcp_host]
        data["portgroups"] = [_portgroup(p) for p in self.portgroup]
        made_bridge = "--bridge-name" if "subnet" in data else option
        return data, {**FLAGS, **{f"spec.{k}": v for k, v in (
            ("subnet", option), ("address", "--address"), ("dhcp", "--dhcp-range"),
            ("hosts", "--dhcp-host"), ("bridge", made_bridge), ("forward_dev", "--forward-dev"),
            ("portgroups", "--portgroup"), ("pf", "--hostdev-pf"), ("ovs", "--ovs-bridge"),
            ("stp", "--no-stp"), ("mode", option))}}


def _read_file(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_XML:
            raise InvalidInput("--file", f"{str(path)!r} is larger than 1 MiB")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput("--file", f"{str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput("--file", f"{str(path)!r} cannot be read ({exc})") from None


@app.command("define")
def define(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(
        help="Network name (with --file, taken from the file).", show_default=False)] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f",
                                              help="A libvirt network XML file.")] = None,
    nat: Annotated[str | None, typer.Option("--nat", metavar="CIDR",
                                            help="NAT network, e.g. 192.168.122.0/24.")] = None,
    routed: Annotated[str | None, typer.Option("--routed", metavar="CIDR",
                                               help="Routed network (no NAT).")] = None,
    open_: Annotated[str | None, typer.Option(
        "--open", metavar="CIDR", help="Routed, without libvirt's firewall rules.")] = None,
    isolated: Annotated[str | None, typer.Option(
        "--isolated", metavar="CIDR", help="Isolated network: guests and host only.")] = None,
    bridge: Annotated[str | None, typer.Option(
        "--bridge", metavar="BRIDGE", help="An existing host (Linux) bridge, e.g. br0.")] = None,
    ovs_bridge: Annotated[str | None, typer.Option(
        "--ovs-bridge", metavar="BRIDGE", help="An existing Open vSwitch bridge.")] = None,
    hostdev_pf: Annotated[str | None, typer.Option(
        "--hostdev-pf", metavar="DEV", help="SR-IOV: a pool of the VFs of this PF.")] = None,
    dhcp_range: Annotated[list[str] | None, typer.Option(
        "--dhcp-range", metavar="START,END", help="DHCP range (repeat for more).")] = None,
    dhcp_host: Annotated[list[str] | None, typer.Option(
        "--dhcp-host", metavar="MAC,IP[,NAME]", help="Fixed lease (repeat).")] = None,
    address: Annotated[str | None, typer.Option(
        "--address", help="The host's address in the subnet (default: the first).")] = None,
    bridge_name: Annotated[str | None, typer.Option(
        "--bridge-name", help="Name of the bridge libvirt makes (default: virbrN).")] = None,
    forward_dev: Annotated[str | None, typer.Option(
        "--forward-dev", help="NAT/routed: only forward through this interface.")] = None,
    portgroup: Annotated[list[str] | None, typer.Option(
        "--portgroup", metavar="NAME[,vlan=ID[:ID..]][,trunk=yes][,default=yes]",
        help="OVS/SR-IOV portgroup with VLAN tags (repeat).")] = None,
    no_stp: Annotated[bool, typer.Option("--no-stp", help="No spanning tree on the bridge "
                                         "libvirt makes.")] = False,
    start: Annotated[bool, typer.Option("--start", help="Start it after defining.")] = False,
    autostart: Annotated[bool, typer.Option("--autostart",
                                            help="Start it when libvirtd starts.")] = False,
    host: HostOpt = None, pod: Pod = None, site: Site = None, group: Group = None,
    all_: AllHosts = False, json: Json = False,
) -> None:
    """Define a network on every hypervisor in scope, from an XML file or from options."""
    from virtfleet.fleet.networks import DefineNetwork

    kinds = {o: v for o, v in zip(_KINDS, (nat, routed, open_, isolated, bridge, ovs_bridge,
                                           hostdev_pf), strict=True) if v is not None}
    scope = _scope(host, pod, site, group, all_)
    if file is not None:
        if kinds:
            raise InvalidInput(next(iter(kinds)), "give a network XML file or options, not "
                               "both")
        req, flags = DefineNetwork(scope, name, xml=_read_file(file), start=start,
                                   autostart=autostart), FLAGS
    else:
        spec, flags = NetOptions(kinds, dhcp_range or (), dhcp_host or (), address,
                                 bridge_name, forward_dev, portgroup or (), no_stp).spec()
        req = DefineNetwork(scope, name, spec=spec, start=start, autostart=autostart)
    with _service(ctx, flags) as service, step_progress() as tick:
        outcomes = service.define(req, tick)
    _report(outcomes, json)


# -- lifecycle --------------------------------------------------------------------------------

Verb = Callable[["NetworkService", str, "Scope", "Progress"], "list[NetworkOutcome]"]


def _lifecycle(verb: Verb, doc: str) -> Callable[..., None]:
    def command(ctx: typer.Context, name: NetName, host: HostOpt = None, pod: Pod = None,
                site: Site = None, group: Group = None, all_: AllHosts = False,
                json: Json = False) -> None:
        with _service(ctx) as service, step_progress() as tick:
            outcomes = verb(service, name, _scope(host, pod, site, group, all_), tick)
        _report(outcomes, json)
    command.__doc__ = doc
    return command


app.command("start")(_lifecycle(lambda s, n, scope, tick: s.start(n, scope, tick),
                                "`virsh net-start NAME` on every hypervisor in scope."))
app.command("destroy")(_lifecycle(lambda s, n, scope, tick: s.destroy(n, scope, tick),
                                  "`virsh net-destroy NAME`: stop it (guests on it lose "
                                  "their link)."))


@app.command("undefine")
def undefine(ctx: typer.Context, name: NetName,
             destroy: Annotated[bool, typer.Option(
                 "--destroy", help="Stop it first if it is active (guests on it lose their "
                 "link); without it an active network is refused.")] = False,
             host: HostOpt = None, pod: Pod = None, site: Site = None, group: Group = None,
             all_: AllHosts = False, json: Json = False) -> None:
    """`virsh net-undefine NAME`: remove its definition. An active network is refused
    (destroy it first, or give --destroy): libvirt would keep it running, transient."""
    with _service(ctx) as service, step_progress() as tick:
        outcomes = service.undefine(name, _scope(host, pod, site, group, all_),
                                    destroy=destroy, progress=tick)
    _report(outcomes, json)


@app.command("autostart")
def autostart_cmd(ctx: typer.Context, name: NetName,
                  disable: Annotated[bool, typer.Option("--disable",
                                                        help="Turn autostart off.")] = False,
                  host: HostOpt = None, pod: Pod = None, site: Site = None,
                  group: Group = None, all_: AllHosts = False, json: Json = False) -> None:
    """`virsh net-autostart NAME [--disable]` on every hypervisor in scope."""
    with _service(ctx) as service, step_progress() as tick:
        outcomes = service.autostart(name, _scope(host, pod, site, group, all_),
                                     on=not disable, progress=tick)
    _report(outcomes, json)


# -- apply ------------------------------------------------------------------------------------

@dataclass
class FleetNetworks:
    """What `apply` did (or would do) to the declared libvirt networks, host by host."""

    rows: list[dict[str, object]]
    text: str
    failed: bool


class NetworkApply:
    """The fleet file's libvirt networks onto its hypervisors, in two steps (for `apply`).

    `check_networks` makes a dry pass over every host first: a declared subnet overlapping a
    network a host already has is bad input (exit 2), refused before the store or any host
    is changed. `finish` then applies (or, dry, reports the pass it already made).
    """

    def __init__(self, fleet: Fleet, dry: NetworkChanges) -> None:
        self.fleet, self.dry = fleet, dry

    def finish(self, dry_run: bool) -> FleetNetworks:
        from virtfleet.fleet.declared_networks import DeclaredNetworks

        done = self.dry
        if not dry_run:
            with DeclaredNetworks(self.fleet) as declared, step_progress() as tick:
                done = declared.apply(tick)
        report_failures(list(done.failures), asked=done.hosts)
        verb = "would" if dry_run else "did"
        lines = []
        for c in done.changes:
            if c.error:
                lines.append(f"! network {c.network} on {c.host}: {c.error.kind}: "
                             f"{c.error.in_row(c.host)}")
            elif c.changes:
                lines.append(f"+ network {c.network} on {c.host}: {verb} "
                             + ", ".join(c.changes))
        todo = sum(1 for c in done.changes if c.changes)
        lines.append(f"Networks: {verb} change {todo} of {len(done.changes)} on "
                     f"{done.hosts} hypervisor(s)")
        return FleetNetworks(done.as_json(), "\n".join(lines) + "\n", not done.ok)


def check_networks(fleet: Fleet) -> NetworkApply | None:
    """The dry pass (see NetworkApply); None if the fleet file declares no networks."""
    from virtfleet.fleet.declared_networks import DeclaredNetworks

    with DeclaredNetworks(fleet) as declared:
        if not declared.targets:
            return None
        with step_progress() as tick:
            return NetworkApply(fleet, declared.plan(tick))
