"""`virtfleet net ...`: libvirt virtual networks (virsh's net-* verbs) on a hypervisor, a pod,
a site or the whole fleet, with a result per host.

Reading (`list`, `info`) covers the whole fleet unless narrowed; changing (`define`, `start`,
`destroy`, `undefine`, `autostart`) must say where: `--host`, `--pod`, `--site`, `--group` or
`--all`. `define` checks every host in scope first (name free, subnet not overlapping) and makes
nothing anywhere if one of them would refuse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from virtfleet.cli.options import Group, HostOpt, Json, Pod, Site
from virtfleet.cli.output import emit, emit_json, fields, report_failures, table
from virtfleet.cli.progress import fleet_progress
from virtfleet.errors import InvalidInput, NotFound, VirtfleetError

if TYPE_CHECKING:
    from virtfleet.fleet.declared_networks import NetChange
    from virtfleet.inventory.fleetfile import Fleet
    from virtfleet.inventory.networks import NetworkSpec
    from virtfleet.inventory.records import HostRecord
    from virtfleet.virt.fanout import HostResult
    from virtfleet.virt.host import Host
    from virtfleet.xml.network import Network

app = typer.Typer(no_args_is_help=True,
                  help="Virtual networks (virsh net-*), on one host or fleet-wide.")

T = TypeVar("T")
NetName = Annotated[str, typer.Argument(help="Network name.", show_default=False)]
AllHosts = Annotated[bool, typer.Option("--all", help="Every hypervisor in the fleet.")]
MAX_XML = 1024 * 1024


def _hosts(ctx: typer.Context, host: str | None, pod: str | None, site: str | None,
           group: str | None, all_: bool, *, required: bool) -> list[HostRecord]:
    from virtfleet.cli.hosts import select_hosts

    if required and not (host or pod or site or group or all_):
        raise InvalidInput("--host/--pod/--site/--group/--all", "say where: one hypervisor, "
                           "a pod, a site, a group, or --all for the whole fleet")
    if all_ and (host or pod or site or group):
        raise InvalidInput("--all", "the whole fleet; do not combine it with "
                           "--host/--pod/--site/--group")
    hosts = select_hosts(ctx, [host] if host else None, site, pod, group)
    if not hosts:
        raise NotFound("no hypervisors in scope")
    return hosts


def _ask(hosts: Sequence[HostRecord], what: str, work: Callable[[Host], T], *,
         report: bool = True) -> list[HostResult[T]]:
    """Ask every host; with `report`, the hosts that failed are named on stderr (for reading
    verbs, whose output then holds only the other hosts' results)."""
    from virtfleet.queries import ask_fleet, failures

    with fleet_progress(len(hosts), what) as tick:
        results = ask_fleet(hosts, work, progress=tick)
    if report:
        report_failures(failures(results), asked=len(results))
    return results


@dataclass
class Outcome:
    host: str
    network: str
    result: str  # what was done, or for a failure "kind: why"
    ok: bool
    why: str = ""  # a failure without its kind, for stderr
    kind: str = ""

    def as_json(self) -> dict[str, object]:
        return {"host": self.host, "network": self.network, "result": self.result,
                "ok": self.ok}


def _failed(host: str, name: str, exc: VirtfleetError) -> Outcome:
    why = exc.in_row(host)
    return Outcome(host, name, f"{exc.kind}: {why}", False, why, exc.kind)


def _outcomes(results: Sequence[HostResult[T]], name: str, done: Callable[[T | None], str]
              ) -> list[Outcome]:
    return [Outcome(r.host.name, name, done(r.value), True) if r.error is None else
            _failed(r.host.name, name, r.error) for r in results]


def _report(outcomes: list[Outcome], json: bool) -> None:
    """Every host's result: in JSON; for people, one line for one host, or a table of every
    host, failed ones included. Each failure is also named on stderr; any makes the exit 1."""
    from virtfleet.inventory.records import HostFailure

    failed = [o for o in outcomes if not o.ok]
    if json:
        emit_json([o.as_json() for o in outcomes])
    elif len(outcomes) == 1 and not failed:
        o = outcomes[0]
        emit(f"Network {o.network} {o.result} on {o.host}\n")
    elif len(outcomes) > 1:
        emit(table(["Host", "Network", "Result"],
                   [(o.host, o.network, f"failed: {o.result}" if o.kind else o.result)
                    for o in outcomes]))
    # A row without a kind was not done because another host failed: not its own failure.
    report_failures([HostFailure(o.host, o.kind, o.why) for o in failed if o.kind],
                    asked=len(outcomes), rows=True)
    if failed:
        raise typer.Exit(1)


def _act(hosts: Sequence[HostRecord], name: str, verb: str,
         action: Callable[[Host, str], str], json: bool) -> None:
    """Run one net-* verb on every host in scope; a host's failure is its row. `action`
    returns what was done there ("started")."""
    from virtfleet.validate import check_name

    check_name("NAME", name)

    def work(h: Host) -> str:
        return action(h, name)

    results = _ask(hosts, verb, work, report=False)
    _report(_outcomes(results, name, lambda v: v or ""), json)


@app.command("list")
def list_networks(ctx: typer.Context, host: HostOpt = None, pod: Pod = None, site: Site = None,
                  group: Group = None, all_: AllHosts = False, json: Json = False) -> None:
    """`virsh net-list --all` on every hypervisor in scope (the whole fleet by default)."""
    from virtfleet.virt.networks import list_networks as on_host

    results = _ask(_hosts(ctx, host, pod, site, group, all_, required=False), "net-list",
                   on_host)
    rows = [(r.host, n) for r in results if r.value is not None for n in r.value]
    if json:
        emit_json([{"host": h.name, "site": h.site, "pod": h.pod, **n.as_json()}
                   for h, n in rows])
    else:
        emit(table(["Host", "Name", "State", "Autostart", "Persistent", "Mode", "Bridge",
                    "Subnet"],
                   [(h.name, n.name, "active" if n.active else "inactive",
                     "yes" if n.autostart else "no", "yes" if n.persistent else "no", n.mode,
                     n.bridge, ",".join(n.subnets) or None) for h, n in rows]))
    if any(not r.ok for r in results):
        raise typer.Exit(1)


@app.command("info")
def info(ctx: typer.Context, name: NetName, host: HostOpt = None, pod: Pod = None,
         site: Site = None, group: Group = None, all_: AllHosts = False,
         json: Json = False) -> None:
    """`virsh net-info NAME` on every hypervisor in scope that has it."""
    from virtfleet.validate import check_name
    from virtfleet.virt import networks

    check_name("NAME", name)

    def work(h: Host) -> networks.NetworkInfo | None:
        return networks.info(h, name) if networks.has_network(h, name) else None

    results = _ask(_hosts(ctx, host, pod, site, group, all_, required=False), "net-info", work)
    found = [(r.host, r.value) for r in results if r.value is not None]
    if not found and all(r.ok for r in results):
        raise NotFound(f"no hypervisor in scope has a network {name!r}")
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
    if any(not r.ok for r in results):
        raise typer.Exit(1)


@app.command("dumpxml")
def dumpxml(ctx: typer.Context, name: NetName,
            host: Annotated[str, typer.Option("--host", help="The hypervisor.")]) -> None:
    """`virsh net-dumpxml NAME` on one hypervisor (a file `net define --file` takes back)."""
    from virtfleet.validate import check_name
    from virtfleet.virt import networks

    check_name("NAME", name)
    [result] = _ask(_hosts(ctx, host, None, None, None, False, required=True), "net-dumpxml",
                    lambda h: networks.network_xml(h, name), report=False)
    if result.error is not None:
        raise result.error
    emit(result.value or "")


@app.command("dhcp-leases")
def dhcp_leases(ctx: typer.Context, name: NetName, host: HostOpt = None, pod: Pod = None,
                site: Site = None, group: Group = None, all_: AllHosts = False,
                json: Json = False) -> None:
    """`virsh net-dhcp-leases NAME` on every hypervisor in scope that has it."""
    from virtfleet.validate import check_name
    from virtfleet.virt import networks

    check_name("NAME", name)

    def work(h: Host) -> list[networks.Lease]:
        return networks.dhcp_leases(h, name) if networks.has_network(h, name) else []

    results = _ask(_hosts(ctx, host, pod, site, group, all_, required=False),
                   "net-dhcp-leases", work)
    rows = [(r.host.name, lease) for r in results for lease in r.value or ()]
    if json:
        emit_json([{"host": h, **lease.as_json()} for h, lease in rows])
    else:
        from datetime import UTC, datetime

        emit(table(["Host", "Expiry time (UTC)", "MAC address", "IP address", "Hostname"],
                   [(h, datetime.fromtimestamp(lease.expires, UTC).strftime(
                       "%Y-%m-%d %H:%M:%S"), lease.mac, lease.ip, lease.hostname)
                    for h, lease in rows]))
    if any(not r.ok for r in results):
        raise typer.Exit(1)


# -- define -----------------------------------------------------------------------------------

_MODE_OPTIONS = {"nat": "--nat", "route": "--routed", "open": "--open",
                 "isolated": "--isolated", "bridge": "--bridge", "hostdev": "--hostdev-pf"}


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


def spec_from_options(name: str, *, nat: str | None = None, routed: str | None = None,
                      open_: str | None = None, isolated: str | None = None,
                      bridge: str | None = None, ovs_bridge: str | None = None,
                      hostdev_pf: str | None = None, dhcp_range: Sequence[str] = (),
                      dhcp_host: Sequence[str] = (), address: str | None = None,
                      bridge_name: str | None = None, forward_dev: str | None = None,
                      portgroup: Sequence[str] = (), no_stp: bool = False) -> NetworkSpec:
    """`net define`'s options as a checked NetworkSpec; errors name the option."""
    from pydantic import ValidationError

    from virtfleet.inventory.networks import NetworkSpec, check_spec

    kinds = [(mode, value) for mode, value in (
        ("nat", nat), ("route", routed), ("open", open_), ("isolated", isolated),
        ("bridge", bridge), ("ovs", ovs_bridge), ("hostdev", hostdev_pf)) if value is not None]
    if len(kinds) != 1:
        raise InvalidInput("--nat/--routed/--open/--isolated/--bridge/--ovs-bridge/"
                           "--hostdev-pf/--file", "give exactly one kind of network")
    kind, value = kinds[0]
    option = "--ovs-bridge" if kind == "ovs" else _MODE_OPTIONS[kind]
    data: dict[str, object] = {"name": name}
    if kind in ("nat", "route", "open", "isolated"):
        data.update(mode=kind, subnet=value)
        if bridge_name is not None:
            data["bridge"] = bridge_name
    elif kind in ("bridge", "ovs"):
        data.update(mode="bridge", bridge=value, ovs=kind == "ovs")
    else:
        data.update(mode="hostdev", pf=value)
    if address is not None:
        data["address"] = address
    if forward_dev is not None:
        data["forward_dev"] = forward_dev
    if no_stp:
        data["stp"] = False
    data["dhcp"] = [dict(zip(("start", "end"), _split("--dhcp-range", r, 2, 2), strict=True))
                    for r in dhcp_range]
    data["hosts"] = [dict(zip(("mac", "ip", "name"), _split("--dhcp-host", h, 2, 3),
                              strict=False)) for h in dhcp_host]
    data["portgroups"] = [_portgroup(p) for p in portgroup]
    where = {"name": "NAME", "subnet": option, "address": "--address", "dhcp": "--dhcp-range",
             "hosts": "--dhcp-host", "bridge": "--bridge-name" if kind in (
                 "nat", "route", "open", "isolated") else option,
             "forward_dev": "--forward-dev", "portgroups": "--portgroup", "pf": "--hostdev-pf",
             "ovs": "--ovs-bridge", "stp": "--no-stp", "mode": option}
    try:
        spec = NetworkSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        top = str(err["loc"][0]) if err["loc"] else "name"
        msg = err["msg"].removeprefix("Value error, ")
        raise InvalidInput(where.get(top, top), msg) from None
    check_spec(spec, lambda f: where.get(f, f))
    return spec


def _read_file(path: Path) -> Network:
    from virtfleet.xml.network import Network

    try:
        if path.stat().st_size > MAX_XML:
            raise InvalidInput("--file", f"{str(path)!r} is larger than 1 MiB")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput("--file", f"{str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput("--file", f"{str(path)!r} cannot be read ({exc})") from None
    return Network.parse(text, field="--file")


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
    from virtfleet.fleet.declared_networks import define_on, undo_define
    from virtfleet.inventory.networks import build_network, check_spec, spec_of
    from virtfleet.validate import check_name
    from virtfleet.virt import networks

    hosts = _hosts(ctx, host, pod, site, group, all_, required=True)
    spec: NetworkSpec | None
    if file is not None:
        given = [o for o, v in (("--nat", nat), ("--routed", routed), ("--open", open_),
                                ("--isolated", isolated), ("--bridge", bridge),
                                ("--ovs-bridge", ovs_bridge), ("--hostdev-pf", hostdev_pf))
                 if v is not None]
        if given:
            raise InvalidInput(given[0], "give a network XML file or options, not both")
        doc = _read_file(file)
        check_name("--file name", doc.name or "")
        if name is not None and name != doc.name:
            raise InvalidInput("NAME", f"{name!r} differs from the file's name {doc.name!r}")
        spec = spec_of(doc)
        if spec is not None:
            check_spec(spec, lambda f: f"--file {f}")
    else:
        if name is None:
            raise InvalidInput("NAME", "missing: name the network (or give --file)")
        check_name("NAME", name)
        spec = spec_from_options(
            name, nat=nat, routed=routed, open_=open_, isolated=isolated, bridge=bridge,
            ovs_bridge=ovs_bridge, hostdev_pf=hostdev_pf, dhcp_range=dhcp_range or (),
            dhcp_host=dhcp_host or (), address=address, bridge_name=bridge_name,
            forward_dev=forward_dev, portgroup=portgroup or (), no_stp=no_stp)
        doc = build_network(spec)
    net_name = str(doc.name)
    field = "--file" if file is not None else next(
        (o for o, v in (("--nat", nat), ("--routed", routed), ("--open", open_),
                        ("--isolated", isolated)) if v is not None), "network")

    # Phase 1: would every host accept it? Refuse before making anything anywhere.
    def preflight(h: Host) -> None:
        from virtfleet.errors import Conflict

        if networks.has_network(h, net_name):
            raise Conflict(f"{h.label}: network {net_name!r} already exists")
        networks.check_overlap(doc, networks.subnets_in_use(h), field, h.label)

    checks = _ask(hosts, "check", preflight, report=False)
    for r in checks:
        if isinstance(r.error, InvalidInput):
            raise r.error  # bad input: one line, exit 2
    if any(not r.ok for r in checks):
        refused = ", ".join(r.host.name for r in checks if r.error is not None)
        _report([Outcome(r.host.name, net_name, f"not defined ({refused} refused)", False)
                 if r.error is None else _failed(r.host.name, net_name, r.error)
                 for r in checks], json)

    # Phase 2: define (start, autostart) everywhere; if any host fails, undo it on the others
    # too, so the command leaves all or nothing and can simply be run again.
    def work(h: Host) -> list[str]:
        return define_on(h, doc, field, start=start, autostart=autostart)

    results = _ask(hosts, "net-define", work, report=False)
    outcomes = _outcomes(results, net_name, lambda v: ", ".join(v or ()))
    if any(not o.ok for o in outcomes):
        made = {r.host.name: r.value for r in results if r.value is not None}

        def undo(h: Host) -> None:
            undo_define(h, net_name, made[h.label])

        undone = {r.host.name: r for r in _ask([h for h in hosts if h.name in made],
                                               "roll back", undo, report=False)}
        bad = ", ".join(o.host for o in outcomes if not o.ok)
        for i, o in enumerate(outcomes):
            u = undone.get(o.host)
            if u is None:
                continue
            if u.error is None:
                outcomes[i] = Outcome(o.host, net_name, f"undefined again ({bad} failed)", False)
            else:
                why = ("it is still defined; could not undefine it again: "
                       + u.error.in_row(o.host))
                outcomes[i] = Outcome(o.host, net_name, f"{u.error.kind}: {why}", False, why,
                                      u.error.kind)
    _report(outcomes, json)


# -- lifecycle --------------------------------------------------------------------------------

def _lifecycle(verb: str, done: str, action: Callable[[Host, str], None], doc: str
               ) -> Callable[..., None]:
    def command(ctx: typer.Context, name: NetName, host: HostOpt = None, pod: Pod = None,
                site: Site = None, group: Group = None, all_: AllHosts = False,
                json: Json = False) -> None:
        def act(h: Host, n: str) -> str:
            action(h, n)
            return done
        _act(_hosts(ctx, host, pod, site, group, all_, required=True), name, verb, act, json)
    command.__doc__ = doc
    return command


def _start(h: Host, name: str) -> None:
    from virtfleet.virt import networks
    networks.start(h, name)


def _destroy(h: Host, name: str) -> None:
    from virtfleet.virt import networks
    networks.destroy(h, name)


app.command("start")(_lifecycle("net-start", "started", _start,
                                "`virsh net-start NAME` on every hypervisor in scope."))
app.command("destroy")(_lifecycle("net-destroy", "destroyed", _destroy,
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
    from virtfleet.virt import networks

    def act(h: Host, n: str) -> str:
        return "destroyed and undefined" if networks.undefine(h, n, destroy=destroy) \
            else "undefined"

    _act(_hosts(ctx, host, pod, site, group, all_, required=True), name, "net-undefine", act,
         json)


@app.command("autostart")
def autostart_cmd(ctx: typer.Context, name: NetName,
                  disable: Annotated[bool, typer.Option("--disable",
                                                        help="Turn autostart off.")] = False,
                  host: HostOpt = None, pod: Pod = None, site: Site = None,
                  group: Group = None, all_: AllHosts = False, json: Json = False) -> None:
    """`virsh net-autostart NAME [--disable]` on every hypervisor in scope."""
    from virtfleet.virt import networks

    def action(h: Host, n: str) -> str:
        networks.set_autostart(h, n, not disable)
        return "autostart disabled" if disable else "marked autostart"

    _act(_hosts(ctx, host, pod, site, group, all_, required=True), name, "net-autostart",
         action, json)


# -- apply ------------------------------------------------------------------------------------

@dataclass
class FleetNetworks:
    """What `apply` did (or would do) to the declared libvirt networks, host by host."""

    rows: list[dict[str, object]]
    text: str
    failed: bool


class NetworkApply:
    """The fleet file's libvirt networks onto its hypervisors, in two steps.

    `check_networks` makes a dry pass over every host first: a declared subnet overlapping a
    network a host already has is bad input (exit 2), refused before the store or any host
    is changed. `finish` then applies (or, dry, reports the pass it already made).
    """

    def __init__(self, fleet: Fleet, hosts: int, dry: list[HostResult[list[NetChange]]]
                 ) -> None:
        self.fleet, self.hosts, self.dry = fleet, hosts, dry

    def finish(self, dry_run: bool) -> FleetNetworks:
        from virtfleet.fleet.declared_networks import converge
        from virtfleet.queries import failures

        results = self.dry
        if not dry_run:
            with fleet_progress(self.hosts, "networks") as tick:
                results = converge(self.fleet, dry_run=False, progress=tick)
        report_failures(failures(results), asked=len(results))
        changes = [c for r in results for c in r.value or ()]
        verb = "would" if dry_run else "did"
        lines = []
        for c in changes:
            if c.error:
                lines.append(f"! network {c.network} on {c.host}: {c.kind}: {c.error}")
            elif c.changes:
                lines.append(f"+ network {c.network} on {c.host}: {verb} "
                             + ", ".join(c.changes))
        todo = sum(1 for c in changes if c.changes)
        lines.append(f"Networks: {verb} change {todo} of {len(changes)} on "
                     f"{self.hosts} hypervisor(s)")
        rows = [c.as_json() for c in changes] + [
            {"host": f.host, "network": None, "changes": [], "ok": False,
             "error": f.message, "kind": f.kind} for f in failures(results)]
        return FleetNetworks(rows, "\n".join(lines) + "\n",
                             any(c.error for c in changes) or any(not r.ok for r in results))


def check_networks(fleet: Fleet) -> NetworkApply | None:
    """The dry pass (see NetworkApply); None if the fleet file declares no networks."""
    from virtfleet.fleet.declared_networks import converge, first_bad_input, hosts_with_networks

    targets = hosts_with_networks(fleet)
    if not targets:
        return None
    with fleet_progress(len(targets), "networks") as tick:
        dry = converge(fleet, dry_run=True, progress=tick)
    bad = first_bad_input(dry)
    if bad is not None:
        raise bad
    return NetworkApply(fleet, len(targets), dry)
