"""The network service: libvirt virtual networks (virsh's net-* verbs) on a hypervisor, a pod,
a site or the whole fleet, with a result per host.

    with NetworkService(store) as service:
        answers = service.list_networks(Scope(pod="or-pod1"))
        outcomes = service.define(DefineNetwork(Scope(all=True), name="lab",
                                                spec={"mode": "nat", "subnet": "10.77.0.0/24"},
                                                start=True))

Reading (`list_networks`, `info`, `dhcp_leases`) covers the whole fleet unless narrowed;
changing (`define`, `start`, `destroy`, `undefine`, `autostart`) must say where. `define`
checks every host in scope first (name free, subnet not overlapping) and makes nothing
anywhere if one of them would refuse; if the define then fails on a host, what it made on the
others is taken back too: all or nothing, so the same request can simply be made again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from virtfleet.errors import Conflict, InvalidInput, NotFound, VirtfleetError
from virtfleet.fleet.scope import Answers, FleetService, Outcome, Progress, Scope
from virtfleet.inventory.networks import NetworkSpec, build_network, check_spec, spec_of
from virtfleet.inventory.records import HostRecord
from virtfleet.pydantic_errors import rule
from virtfleet.validate import check_name
from virtfleet.virt import networks
from virtfleet.virt.host import Host
from virtfleet.virt.networks import Lease, NetworkInfo
from virtfleet.xml.network import Network

SAY_WHERE = ("say where: one hypervisor, a pod, a site, a group, or `scope.all` for the whole "
             "fleet")


# ------------------------------------------------------------------ requests


def _spec_field(name: str) -> str:
    return name if name == "name" else f"spec.{name}"


@dataclass(frozen=True)
class DefineNetwork:
    """One network to define on every host in scope: from `spec` (the fields of a fleet file's
    `libvirt_networks` entry but its name) or from `xml` (a libvirt network document), and
    then, if asked, started and marked autostart."""

    scope: Scope
    name: str | None = None  # with `xml`, taken from the document
    spec: Mapping[str, object] | None = None
    xml: str | None = None
    start: bool = False
    autostart: bool = False

    def document(self) -> tuple[Network, str]:
        """The checked network document, and the field its subnets come from."""
        if self.xml is not None:
            if self.spec is not None:
                raise InvalidInput("xml", "give a network XML file or a spec, not both")
            return self._from_xml(self.xml), "xml"
        if self.name is None:
            raise InvalidInput("name", "missing: name the network (or give `xml`)")
        check_name("name", self.name)
        try:
            spec = NetworkSpec.model_validate({**(self.spec or {}), "name": self.name})
        except ValidationError as exc:
            err = exc.errors()[0]
            top = str(err["loc"][0]) if err["loc"] else "name"
            raise InvalidInput(_spec_field(top), rule(err)) from None
        check_spec(spec, _spec_field)
        return build_network(spec), "spec.subnet"

    def _from_xml(self, text: str) -> Network:
        doc = Network.parse(text, field="xml")
        check_name("xml.name", doc.name or "")
        if self.name is not None and self.name != doc.name:
            raise InvalidInput("name", f"{self.name!r} differs from the file's name "
                               f"{doc.name!r}")
        spec = spec_of(doc)
        if spec is not None:
            check_spec(spec, lambda f: f"xml.{f}")
        return doc


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class NetworkOutcome(Outcome):
    """One host's part in a network change (`name` is the network)."""

    @property
    def result(self) -> str:
        """What was done, or for a failure "kind: why"."""
        if self.error is not None:
            return f"{self.error.kind}: {self.why}"
        return self.note or self.done

    def as_json(self) -> dict[str, object]:
        return {"host": self.host, "network": self.name, "result": self.result,
                "ok": self.ok}


# ------------------------------------------------------------------ the service


class NetworkService(FleetService):
    """Without a `pool`, the service opens its own connections and close() ends them."""

    def _hosts(self, scope: Scope, say_where: str | None = None) -> list[HostRecord]:
        scope.check(say_where)
        hosts = scope.hosts(self.store)
        if not hosts:
            raise NotFound("no hypervisors in scope")
        return hosts

    # -- reading ---------------------------------------------------------------------------

    def list_networks(self, scope: Scope, progress: Progress | None = None
             ) -> Answers[list[NetworkInfo]]:
        """`virsh net-list --all` on every host in scope."""
        return self.ask(self._hosts(scope), "net-list", networks.list_networks, progress)

    def info(self, name: str, scope: Scope, progress: Progress | None = None
             ) -> Answers[NetworkInfo]:
        """`virsh net-info NAME` on every host in scope that has it (None: it has not).
        NotFound if every host answered and none has it."""
        check_name("name", name)

        def work(h: Host) -> NetworkInfo | None:
            return networks.info(h, name) if networks.has_network(h, name) else None

        answers = self.ask(self._hosts(scope), "net-info", work, progress)
        if not answers.values and answers.ok:
            raise NotFound(f"no hypervisor in scope has a network {name!r}")
        return answers

    def xml(self, name: str, host: str) -> str:
        """`virsh net-dumpxml NAME` on one host."""
        check_name("name", name)
        [result] = self.ask(self._hosts(Scope(host=host)), "net-dumpxml",
                            lambda h: networks.network_xml(h, name)).results
        if result.error is not None:
            raise result.error
        return result.value or ""

    def dhcp_leases(self, name: str, scope: Scope, progress: Progress | None = None
                    ) -> Answers[list[Lease]]:
        """`virsh net-dhcp-leases NAME` on every host in scope that has it."""
        check_name("name", name)

        def work(h: Host) -> list[Lease]:
            return networks.dhcp_leases(h, name) if networks.has_network(h, name) else []

        return self.ask(self._hosts(scope), "net-dhcp-leases", work, progress)

    # -- define ----------------------------------------------------------------------------

    def define(self, req: DefineNetwork, progress: Progress | None = None
               ) -> list[NetworkOutcome]:
        """Define the network on every host in scope, or, if any host refuses or fails, on
        none. Bad input (an overlapping subnet on any host, too) raises InvalidInput."""
        req.scope.check(SAY_WHERE)
        doc, field = req.document()
        hosts = self._hosts(req.scope)
        name, text = str(doc.name), doc.to_xml()

        def preflight(h: Host) -> None:
            if networks.has_network(h, name):
                raise Conflict(f"network {name!r} already exists", host=h.label)
            networks.check_overlap(doc, networks.subnets_in_use(h), field, h.label)

        checks: Answers[object] = self.ask(hosts, "check", preflight, progress)
        refused = [r.host.name for r in checks.results if r.error is not None]
        for r in checks.results:
            if isinstance(r.error, InvalidInput):
                raise r.error  # bad input, whichever host found it
        if refused:
            note = f"not defined ({', '.join(refused)} refused)"
            return [NetworkOutcome(r.host.name, name, error=r.error,
                                   note="" if r.error else note) for r in checks.results]

        def work(h: Host) -> list[str]:  # a document per host thread: lxml trees stay apart
            return define_on(h, Network.parse(text), field, start=req.start,
                             autostart=req.autostart)

        made = self.ask(hosts, "net-define", work, progress).results
        outcomes = [NetworkOutcome(r.host.name, name, ", ".join(r.value or ()), r.error)
                    for r in made]
        if all(o.ok for o in outcomes):
            return outcomes
        return self._take_back(hosts, name, {r.host.name: r.value for r in made
                                             if r.value is not None}, outcomes, progress)

    def _take_back(self, hosts: Sequence[HostRecord], name: str, made: dict[str, list[str]],
                   outcomes: list[NetworkOutcome], progress: Progress | None
                   ) -> list[NetworkOutcome]:
        """Another host failed: undo the define where it worked, so all or nothing is left."""
        undo: Answers[object] = self.ask([h for h in hosts if h.name in made], "roll back",
                                         lambda h: undo_define(h, name, made[h.label]),
                                         progress)
        undone = {r.host.name: r for r in undo.results}
        failed = ", ".join(o.host for o in outcomes if not o.ok)
        out = []
        for o in outcomes:
            u = undone.get(o.host)
            if u is None:
                out.append(o)
            elif u.error is None:
                out.append(NetworkOutcome(o.host, name, note=f"undefined again ({failed} "
                                          "failed)"))
            else:
                out.append(NetworkOutcome(o.host, name, error=u.error, note=(
                    "it is still defined; could not undefine it again")))
        return out

    # -- lifecycle -------------------------------------------------------------------------

    def _each(self, name: str, scope: Scope, what: str, action: Callable[[Host], str],
              progress: Progress | None) -> list[NetworkOutcome]:
        """One net-* verb on every host in scope; `action` says what it did there."""
        hosts = self._hosts(scope, SAY_WHERE)
        check_name("name", name)
        return [NetworkOutcome(r.host.name, name, r.value or "", r.error)
                for r in self.ask(hosts, what, action, progress).results]

    def start(self, name: str, scope: Scope, progress: Progress | None = None
              ) -> list[NetworkOutcome]:
        def act(h: Host) -> str:
            networks.start(h, name)
            return "started"
        return self._each(name, scope, "net-start", act, progress)

    def destroy(self, name: str, scope: Scope, progress: Progress | None = None
                ) -> list[NetworkOutcome]:
        def act(h: Host) -> str:
            networks.destroy(h, name)
            return "destroyed"
        return self._each(name, scope, "net-destroy", act, progress)

    def undefine(self, name: str, scope: Scope, *, destroy: bool = False,
                 progress: Progress | None = None) -> list[NetworkOutcome]:
        """An active network is refused unless `destroy` (libvirt would keep it running,
        transient, holding its subnet and bridge)."""
        def act(h: Host) -> str:
            stopped = networks.undefine(h, name, destroy=destroy)
            return "destroyed and undefined" if stopped else "undefined"
        return self._each(name, scope, "net-undefine", act, progress)

    def autostart(self, name: str, scope: Scope, *, on: bool = True,
                  progress: Progress | None = None) -> list[NetworkOutcome]:
        def act(h: Host) -> str:
            networks.set_autostart(h, name, on)
            return "marked autostart" if on else "autostart disabled"
        return self._each(name, scope, "net-autostart", act, progress)


def define_on(host: Host, doc: Network, field: str, *, start: bool,
              autostart: bool) -> list[str]:
    """Define `doc` on `host`, then start it and mark it autostart if asked; return what was
    done. If a step fails, the steps before it are undone (nothing of it is left on the host)
    and the error says so: a re-run then does not stop at "already exists"."""
    name = str(doc.name)
    networks.define(host, doc, field)
    done = ["defined"]
    try:
        if start:
            networks.start(host, name)
            done.append("started")
        if autostart:
            networks.set_autostart(host, name, True)
            done.append("marked autostart")
    except VirtfleetError as exc:
        try:
            undo_define(host, name, done)
            exc.add(f"; {name} was undefined again, nothing was left behind")
        except VirtfleetError as undo:
            exc.add(f"; could not undefine {name} again ({undo.message})")
        raise
    return done


def undo_define(host: Host, name: str, done: Sequence[str]) -> None:
    """Take back what define_on did on `host` (another host failed: all or nothing)."""
    networks.undefine(host, name, destroy="started" in done)
