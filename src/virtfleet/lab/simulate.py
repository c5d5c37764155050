"""Simulated fleets: one libvirt test-driver node file per hypervisor, and a fleet file for them.

A node file (the format of libvirt's examples/xml/test/testnode.xml) describes one fake host:
its CPU topology and memory, and its domains, each with a run state given in the test driver's
own XML namespace (`<test:runstate>`; the numbers are virDomainState). Opening
`test:///abs/node.xml` in process, or `test+tcp://ADDR/abs/node.xml` through a lab daemon,
gives a separate hypervisor per connection, loaded from that file.

The reference estate is 3 sites x 5 pods x 100 hypervisors x 10 VMs: 1,500 node files,
15,000 VMs. Each file is built with lxml from one template domain and written once.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from virtfleet.errors import InvalidInput
from virtfleet.inventory.fleetfile import dump_fleet, parse_fleet
from virtfleet.lab.names import shadowed_by
from virtfleet.lab.xmlbuild import el

TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"
KIB_PER_GIB = 1024 * 1024
# Stable UUIDs: the same simulated VM keeps its identity across connections and regenerations.
UUID_NS = uuid.UUID("6f1b6d52-2b0e-4c4e-9a49-7a3c1b1e0f5a")

# virDomainState numbers for <test:runstate>, and the mix a simulated host runs:
# out of every 20 VMs, 17 running, 2 shut off, 1 paused.
RUNNING, PAUSED, SHUTOFF = 1, 3, 5
_STATE_CYCLE = (RUNNING,) * 17 + (SHUTOFF, SHUTOFF, PAUSED)

REFERENCE_SITES = ("oregon", "texas", "virginia")
_URI_PATH_RE = re.compile(r"^/[A-Za-z0-9_./+-]+$")  # what inventory.uri accepts in test URIs


@dataclass(frozen=True)
class SimSpec:
    """The shape of a simulated estate; the defaults are the reference hardware."""

    sites: tuple[str, ...]
    pods_per_site: int
    hosts_per_pod: int
    vms_per_host: int
    sockets: int = 2
    cores: int = 10
    threads: int = 2
    mhz: int = 2400
    memory_gib: int = 384
    vm_vcpus: int = 4
    vm_memory_gib: int = 32

    @classmethod
    def reference(cls) -> SimSpec:
        return cls(sites=REFERENCE_SITES, pods_per_site=5, hosts_per_pod=100, vms_per_host=10)

    @classmethod
    def custom(cls, hypervisors: int, vms_per_host: int) -> SimSpec:
        if hypervisors < 1:
            raise InvalidInput("hypervisors", "must be at least 1")
        if vms_per_host < 0:
            raise InvalidInput("vms-per-host", "must be 0 or more")
        if hypervisors * max(vms_per_host, 1) > 1_000_000:
            raise InvalidInput("hypervisors", "times vms-per-host must be at most 1,000,000")
        return cls(sites=("sim",), pods_per_site=1, hosts_per_pod=hypervisors,
                   vms_per_host=vms_per_host)

    @property
    def cpus(self) -> int:
        return self.sockets * self.cores * self.threads

    @property
    def hypervisors(self) -> int:
        return len(self.sites) * self.pods_per_site * self.hosts_per_pod

    @property
    def vms(self) -> int:
        return self.hypervisors * self.vms_per_host


@dataclass(frozen=True)
class SimHost:
    site: str
    pod: str
    name: str
    node_file: Path
    ordinal: int  # 0-based position in the fleet


@dataclass
class SimFleet:
    spec: SimSpec
    out_dir: Path
    hosts: list[SimHost] = field(default_factory=list)

    @property
    def vms(self) -> int:
        return len(self.hosts) * self.spec.vms_per_host


def pod_name(site: str, pod: int) -> str:
    return f"{site}-p{pod}"


def host_name(site: str, pod: int, host: int) -> str:
    return f"{pod_name(site, pod)}-hv{host:03d}"


def vm_name(host: str, vm: int) -> str:
    return f"{host}-vm{vm:02d}"


def _node_cpu(spec: SimSpec) -> etree._Element:
    # Topology as one NUMA node of `sockets` sockets: nodeinfo then reads "2 sockets",
    # and libvirt's CPU count is nodes x sockets x cores x threads.
    return el("cpu",
              el("mhz", spec.mhz),
              el("model", "x86_64"),
              el("active", spec.cpus),
              el("nodes", 1),
              el("sockets", spec.sockets),
              el("cores", spec.cores),
              el("threads", spec.threads))


def _template_domain(spec: SimSpec) -> etree._Element:
    # Only what fleet queries read. The test driver re-parses every domain of the node file on
    # each new connection (a real libvirtd does not), so each element here is paid 1,500 times
    # per cold fleet query, by virtfleet and the baseline alike: a disk device made a
    # connection 40% dearer.
    kib = str(spec.vm_memory_gib * KIB_PER_GIB)
    return el("domain",
              el("name", "x"),
              el("uuid", "x"),
              el("memory", kib, unit="KiB"),
              el("currentMemory", kib, unit="KiB"),
              el("vcpu", spec.vm_vcpus),
              el("os", el("type", "hvm", arch="x86_64")),
              type="test")


def node_document(spec: SimSpec, vm_names: list[str], first_index: int,
                  template: etree._Element | None = None) -> etree._Element:
    """One <node>: host CPU and memory, then its domains; states cycle from `first_index`."""
    tmpl = template if template is not None else _template_domain(spec)
    node = etree.Element("node", nsmap={"test": TEST_NS})
    node.append(_node_cpu(spec))
    node.append(el("memory", spec.memory_gib * KIB_PER_GIB))
    for offset, name in enumerate(vm_names):
        dom = copy.deepcopy(tmpl)
        dom[0].text = name
        dom[1].text = str(uuid.uuid5(UUID_NS, name))
        state = _STATE_CYCLE[(first_index + offset) % len(_STATE_CYCLE)]
        if state != RUNNING:  # the test driver's default is running
            runstate = etree.SubElement(dom, f"{{{TEST_NS}}}runstate")
            runstate.text = str(state)
        node.append(dom)
    return node


def check_out_dir(out_dir: Path) -> Path:
    """An absolute directory whose path can be a test URI path and that lab daemons can see."""
    out = out_dir.expanduser().resolve()
    if not _URI_PATH_RE.match(str(out)):
        raise InvalidInput("out", f"{str(out)!r} may only contain letters, digits and _ . / + -"
                           " (it becomes part of test+tcp:// URIs)")
    hidden = shadowed_by(out)
    if hidden:
        raise InvalidInput("out", f"{str(out)!r} is inside {hidden}, which lab daemons cannot see")
    return out


def write_nodes(spec: SimSpec, out_dir: Path) -> SimFleet:
    """Write one node file per hypervisor under out_dir/nodes; VM names are fleet-unique."""
    out_dir = check_out_dir(out_dir)
    nodes_dir = out_dir / "nodes"
    nodes_dir.mkdir(parents=True, exist_ok=True)
    for old in nodes_dir.glob("*.xml"):
        old.unlink()  # a smaller regeneration must not leave hosts of the last one behind
    sim = SimFleet(spec=spec, out_dir=out_dir)
    template = _template_domain(spec)
    vm_index = 0
    for site in spec.sites:
        for p in range(1, spec.pods_per_site + 1):
            for h in range(1, spec.hosts_per_pod + 1):
                name = host_name(site, p, h)
                vms = [vm_name(name, v) for v in range(1, spec.vms_per_host + 1)]
                doc = node_document(spec, vms, vm_index, template)
                vm_index += len(vms)
                path = nodes_dir / f"{name}.xml"
                path.write_bytes(etree.tostring(doc, xml_declaration=True, encoding="UTF-8",
                                                pretty_print=True))
                sim.hosts.append(SimHost(site=site, pod=pod_name(site, p), name=name,
                                         node_file=path, ordinal=len(sim.hosts)))
    return sim


def local_uri(host: SimHost) -> str:
    """In-process test driver (no daemon): one private hypervisor per connection."""
    return f"test://{host.node_file}"


def tcp_uri(addresses: list[str], total: int) -> Callable[[SimHost], str]:
    """Through lab daemons over real RPC: consecutive blocks of hosts share a daemon
    (the reference fleet over 15 daemons gets one per pod)."""

    def uri(host: SimHost) -> str:
        address = addresses[host.ordinal * len(addresses) // max(total, 1)]
        return f"test+tcp://{address}{host.node_file}"

    return uri


def write_fleet_file(sim: SimFleet, uri_for: Callable[[SimHost], str]) -> Path:
    """The simulated estate as a fleet file (sites -> pods -> hypervisors), validated."""
    sites: dict[str, dict[str, list[dict[str, str]]]] = {}
    for h in sim.hosts:
        sites.setdefault(h.site, {}).setdefault(h.pod, []).append(
            {"name": h.name, "uri": uri_for(h)})
    data = {"sites": [
        {"name": site, "pods": [
            {"name": pod,
             # test+tcp through the lab's daemons: clear text, no authentication.
             "insecure_transport": True,
             "storage": {"type": "netfs", "source": f"{pod}-nfs:/export/vms",
                         "target": "/var/lib/virtfleet/pod"},
             "hypervisors": hosts}
            for pod, hosts in pods.items()]}
        for site, pods in sites.items()]}
    fleet = parse_fleet(data, source="simulated fleet file")
    path = sim.out_dir / "fleet.yaml"
    path.write_text(dump_fleet(fleet))
    return path
