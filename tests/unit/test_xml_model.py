"""The XML model itself: predicate paths, libvirt's element order, reads that change nothing,
equality; golden domain XML for create, template and clone output; and, last, a check that
every model property is exercised by some unit test (tests/unit/conftest.py).

Golden files live in tests/unit/golden/domains/. After a deliberate change, rewrite them with
`VIRTFLEET_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_xml_model.py` and read the diff.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from lxml import etree

from tests.unit.tools import require_tool
from virtfleet.design.policy import Placement, build_domain
from virtfleet.design.spec import vm_spec
from virtfleet.inventory.records import HostRecord
from virtfleet.provision.clone import clone_domain
from virtfleet.provision.templates import Template, _template_domain
from virtfleet.virt.host import Host
from virtfleet.virt.storage import VolumeInfo
from virtfleet.xml.domain import Channel, Clock, Domain, Features, Graphics, Interface
from virtfleet.xml.network import IP, Network, PortGroup
from virtfleet.xml.snapshot import Snapshot
from virtfleet.xml.storage import Pool, Volume

from . import conftest
from .nodes import node_uri

FIXTURE = Path(__file__).parent / "fixtures" / "xml" / "vm1-dumpxml.xml"
GOLDEN = Path(__file__).parent / "golden" / "domains"
UUID = "7c9a4f1e-0d2b-4e55-9d8a-1f3b2c4d5e6f"
ANY_UUID = re.compile(r"<uuid>[0-9a-f-]{36}</uuid>")


def c14n(el: etree._Element) -> bytes:
    return etree.tostring(el, method="c14n")


def validate(tmp_path: Path, xml: str, kind: str = "domain") -> None:
    require_tool("virt-xml-validate", "libvirt-clients")
    f = tmp_path / f"{kind}.xml"
    f.write_text(xml)
    r = subprocess.run(["virt-xml-validate", str(f), kind], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stdout + r.stderr + xml


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("VIRTFLEET_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from its golden file"


# --- reading changes nothing -------------------------------------------------------------

def _read_everything(m: object) -> None:
    """Read every property of model `m` and of the models it hands out."""
    for cls in type(m).__mro__:
        for name, value in vars(cls).items():
            if name == "element":  # the write accessor: it makes the element, by design
                continue
            if isinstance(value, property) or hasattr(value, "__get__") and hasattr(
                    value, "path"):
                got = getattr(m, name)
                if hasattr(got, "node"):
                    _read_everything(got)
                elif hasattr(got, "__iter__") and hasattr(got, "append"):
                    for item in got:
                        _read_everything(item)


@pytest.mark.parametrize("text", ["<domain/>", FIXTURE.read_text()])
def test_reading_never_changes_the_document(text: str) -> None:
    d = Domain.parse(text)
    before = c14n(d.element)
    _read_everything(d)
    assert c14n(d.element) == before
    empty = Domain()
    assert (empty.os.machine, empty.clock.offset, empty.features.acpi, list(
        empty.devices.disks), empty.facts, empty.os_id) == (None, None, False, [], None, None)
    assert empty.to_xml() == "<domain/>\n"  # nothing was made by asking


def test_a_nested_model_is_made_on_its_first_write_only() -> None:
    d = Domain()
    os_ = d.os  # detached: nothing in the document yet
    assert d.element.find("os") is None and os_.node is None
    os_.machine = "q35"
    assert d.element.find("os/type").get("machine") == "q35"  # type: ignore[union-attr]
    os_.machine = None  # and the element it made for it goes again
    assert d.element.find("os/type") is None
    assert Domain().os.to_xml() == ""


# --- predicate paths ---------------------------------------------------------------------

def test_predicate_paths_read_write_and_prune_by_attribute() -> None:
    clock = Clock()
    clock.hpet_present = False
    clock.rtc_tickpolicy = "catchup"
    clock.pit_tickpolicy = "delay"
    assert [(t.get("name"), dict(t.attrib)) for t in clock.element] == [
        ("hpet", {"name": "hpet", "present": "no"}),
        ("rtc", {"name": "rtc", "tickpolicy": "catchup"}),
        ("pit", {"name": "pit", "tickpolicy": "delay"})]
    assert clock.hpet_present is False and clock.hypervclock_present is None
    clock.rtc_tickpolicy = None  # the timer goes with its last own attribute
    assert [t.get("name") for t in clock.element] == ["hpet", "pit"]
    parsed = Clock.parse('<clock><timer name="pit" tickpolicy="catchup" track="guest"/></clock>')
    parsed.pit_tickpolicy = None  # another attribute is left: the timer stays
    assert parsed.to_xml() == '<clock>\n  <timer name="pit" track="guest"/>\n</clock>\n'
    g = Graphics()
    g.set_listen_address("127.0.0.1")
    g.set_listen_address("::1")
    assert [dict(x.attrib) for x in g.element.findall("listen")] == [
        {"type": "address", "address": "::1"}]
    assert (g.listen, g.listen_address) == ("::1", "::1")
    g.autoport, g.port = False, 5901  # a fixed display port, as an operator may pin one
    assert (g.element.get("autoport"), g.element.get("port"), g.port) == ("no", "5901", 5901)
    g.type, g.port, g.tls_port = "spice", -1, 5902  # SPICE over TLS only (spice-html5 cannot)
    assert (g.element.get("tlsPort"), g.tls_port) == ("5902", 5902)


def test_bad_model_paths_fail_when_the_class_is_written() -> None:
    from virtfleet.xml.model import Attr

    with pytest.raises(ValueError, match="bad model path step"):
        Attr("timer[name=rtc]", "x", str)


# --- libvirt's element order ---------------------------------------------------------------

def test_elements_land_where_libvirt_writes_them_whatever_the_order_they_are_set_in() -> None:
    d = Domain()
    d.devices.emulator = "/usr/bin/qemu-system-x86_64"
    d.on_reboot = "restart"
    d.features.acpi = True
    d.os.type = "hvm"
    d.vcpus = 2
    d.memory_kib = 1024
    d.os_id = "http://debian.org/debian/11"
    d.uuid = UUID
    d.name = "vm1"
    d.os.boot = ["network", "hd"]
    d.os.kernel = "/boot/vmlinuz"
    d.features.apic = True
    d.on_crash = "restart"
    d.description = "the web tier's first VM"
    d.on_poweroff = "destroy"
    assert [e.tag for e in d.element] == [
        "name", "uuid", "description", "metadata", "memory", "vcpu", "os", "features",
        "on_poweroff", "on_reboot", "on_crash", "devices"]
    assert (d.on_poweroff, d.on_reboot, d.on_crash) == ("destroy", "restart", "restart")
    assert [e.tag for e in d.element.find("os")] == ["type", "kernel", "boot", "boot"]  # type: ignore[union-attr]
    assert [e.tag for e in d.element.find("features")] == ["acpi", "apic"]  # type: ignore[union-attr]
    nic = Interface()
    nic.model = "virtio"
    nic.set_vlans([7])
    nic.virtualport = "openvswitch"
    nic.source_bridge = "br0"
    nic.mac = "52:54:00:00:00:01"
    assert [e.tag for e in nic.element] == ["mac", "source", "vlan", "virtualport", "model"]
    macvtap = Interface()
    macvtap.type = "direct"
    macvtap.source_dev = "eno1"  # migration reads it to check the target has that NIC
    assert macvtap.to_xml().count('<source dev="eno1"/>') == 1
    assert macvtap.source_dev == "eno1"


def test_an_added_element_keeps_a_parsed_documents_indentation() -> None:
    d = Domain.parse(FIXTURE.read_text())
    d.title = "web tier"
    d.devices.channels.append(Channel())
    text = d.to_xml()
    assert "-->\n  <title>web tier</title>\n  <memory" in text  # after uuid and its comment
    assert re.search(r"</channel>\n    <channel/>\n    <", text), text


@pytest.mark.parametrize("os_variant", ["rhel9.0", "win2k19", "generic"])
def test_our_order_is_the_order_libvirt_writes(os_variant: str, tmp_path: Path) -> None:
    """Define a designed domain on the test driver; in every element, the children both
    documents have come in the same order in ours as in libvirt's own dumpxml."""
    spec = vm_spec(name="vm1", memory="1G", vcpus=1, disks=["size=8G"],
                   networks=["network=default,vlan=42"], cdrom="/var/lib/libvirt/images/a.iso",
                   graphics="spice", os_variant=os_variant)
    ours = build_domain(spec, Placement("test", ("/var/lib/libvirt/images/vm1.qcow2",),
                                        ("52:54:00:00:00:02",), {"site": "s", "pod": "p"}))
    with Host.open(node_uri(tmp_path, "empty.xml")) as h:
        h.define_domain(ours.to_xml())
        theirs = etree.fromstring(h.domain_xml("vm1").encode())

    def compare(mine: etree._Element, other: etree._Element, path: str) -> None:
        both = {str(e.tag) for e in mine if isinstance(e.tag, str)} & {
            str(e.tag) for e in other if isinstance(e.tag, str)}

        def seq(el: etree._Element) -> list[str]:
            out: list[str] = []
            for e in el:
                if isinstance(e.tag, str) and e.tag in both and (not out or out[-1] != e.tag):
                    out.append(e.tag)
            return out
        assert seq(mine) == seq(other), path
        for tag in both:
            if len(mine.findall(tag)) == len(other.findall(tag)) == 1:
                compare(mine.find(tag), other.find(tag), f"{path}/{tag}")  # type: ignore[arg-type]
    compare(ours.element, theirs, "/domain")


# --- equality ------------------------------------------------------------------------------

def test_equality_is_by_content_and_models_are_not_hashable() -> None:
    a, b = Domain.parse(FIXTURE.read_text()), Domain.parse(FIXTURE.read_text())
    assert a == b and a is not b
    b.name = "other"
    assert a != b
    assert Features.parse("<features><acpi/></features>") == Features.parse(
        "<features>\n  <acpi/>\n</features>".replace("\n  ", "").replace("\n", ""))
    assert Domain() != Network.parse("<network/>")  # another kind of model: never equal
    assert Domain().os == Domain().os  # two detached, empty views
    with pytest.raises(TypeError):
        hash(a)  # a content hash would change under a set's feet; identity would disagree


# --- other documents --------------------------------------------------------------------

def test_storage_network_and_snapshot_models_write_what_they_read(tmp_path: Path) -> None:
    v = Volume()
    v.type, v.name, v.key = "file", "a.qcow2", "/p/a.qcow2"
    v.capacity_bytes, v.capacity_unit, v.allocation_bytes = 2**30, "bytes", 0
    v.path, v.format, v.mode = "/p/a.qcow2", "qcow2", "0600"
    v.backing_path, v.backing_format = "/p/base.qcow2", "raw"
    again = Volume.parse(v.to_xml())
    assert (again.name, again.key, again.capacity_bytes, again.capacity_unit,
            again.allocation_bytes, again.path, again.format, again.mode, again.backing_path,
            again.backing_format, again.type) == (
        "a.qcow2", "/p/a.qcow2", 2**30, "bytes", 0, "/p/a.qcow2", "qcow2", "0600",
        "/p/base.qcow2", "raw", "file")
    validate(tmp_path, v.to_xml(), "storagevol")
    p = Pool()
    p.type, p.name, p.uuid = "netfs", "nfs", UUID
    p.capacity_bytes = p.allocation_bytes = p.available_bytes = 0
    p.source_host, p.source_port, p.source_dir = "filer1", 2049, "/export"
    p.source_format, p.target_path = "nfs", "/srv/nfs"
    p.source_name, p.initiator_iqn = None, None
    back_p = Pool.parse(p.to_xml())
    assert (back_p.source_port, back_p.uuid, back_p.capacity_bytes, back_p.allocation_bytes,
            back_p.available_bytes, back_p.source_device, p.source_name, p.initiator_iqn) == (
        2049, UUID, 0, 0, 0, None, None, None)
    validate(tmp_path, p.to_xml(), "storagepool")
    disk_pool = Pool.parse("<pool type='disk'><name>d</name><source><device path='/dev/sdb'/>"
                           "</source><target><path>/dev</path></target></pool>")
    assert [d.path for d in disk_pool.source_devices] == ["/dev/sdb"]
    assert disk_pool.source_device == "/dev/sdb"
    n = Network()
    n.name, n.uuid, n.mac, n.delay = "n1", UUID, "52:54:00:00:00:09", 0
    n.forward_dev, n.forward_mode = "eth0", "nat"
    ip = IP()
    ip.family, ip.address, ip.prefix = "ipv6", "fd00:9::1", 64
    n.ips.append(ip)
    pg = PortGroup()
    pg.name, pg.virtualport = "web", "openvswitch"
    n.portgroups.append(pg)
    back = Network.parse(n.to_xml())
    assert (back.forward_dev, back.uuid, back.delay, back.mac, back.forward_managed) == (
        "eth0", UUID, 0, "52:54:00:00:00:09", None)
    assert (back.ips[0].family, back.ips[0].prefix, back.portgroups[0].virtualport) == (
        "ipv6", 64, "openvswitch")
    validate(tmp_path, n.to_xml(), "network")
    s = Snapshot()
    s.name, s.description, s.state, s.creation_time = "s1", "before", "shutoff", 1700000000
    s.parent, s.memory = "s0", "no"
    again_s = Snapshot.parse(s.to_xml())
    assert (again_s.name, again_s.parent, again_s.creation_time, again_s.state,
            again_s.description, again_s.memory) == (
        "s1", "s0", 1700000000, "shutoff", "before", "no")


# --- golden domain XML: create, template, clone ---------------------------------------

def _created(os_variant: str, graphics: str, *, virt_type: str = "kvm", **kw: object) -> Domain:
    args: dict[str, object] = {"name": "web01", "memory": "2G", "vcpus": 2,
                               "disks": ["size=20G", "size=100G,format=raw"],
                               "networks": ["bridge=br0,vlan=42", "network=default"],
                               "graphics": graphics, "os_variant": os_variant,
                               "cdrom": "/var/lib/libvirt/images/install.iso"}
    args.update(kw)
    spec = vm_spec(**args)  # type: ignore[arg-type]
    paths = tuple(f"/var/lib/libvirt/images/web01-{i}.{d.format}"
                  for i, d in enumerate(spec.disks))
    macs = tuple(f"52:54:00:12:34:{i:02x}" for i in range(len(spec.nics)))
    return build_domain(spec, Placement(virt_type, paths, macs,
                                        {"site": "oregon", "pod": "or-pod1", "app": "web"},
                                        uuid=UUID))


CREATED = {
    "create-rhel9.0-spice.xml": lambda: _created("rhel9.0", "spice"),
    "create-win2k19-vnc.xml": lambda: _created("win2k19", "vnc"),
    "create-generic-tcg.xml": lambda: _created("generic", "none", virt_type="qemu"),
    "create-default-kernel.xml": lambda: _created(
        None, "none", virt_type="qemu", cdrom=None, kernel="/srv/vmlinuz",  # type: ignore[arg-type]
        initrd="/srv/initrd.img", cmdline="console=ttyS0", disks=["size=8G,bus=scsi"]),
}


@pytest.mark.parametrize("name", sorted(CREATED))
def test_created_domains_match_their_golden_files(name: str, tmp_path: Path) -> None:
    d = CREATED[name]()
    validate(tmp_path, d.to_xml())
    golden(name, d.to_xml())


def _template() -> Domain:
    source = Domain.parse(_created("rhel9.0", "vnc").to_xml())
    tpl = _template_domain(source, "web-tpl", ["/var/lib/libvirt/images/web-tpl.qcow2",
                                               "/var/lib/libvirt/images/web-tpl-disk1.raw"])
    assert tpl.uuid != UUID
    return tpl


def test_template_and_clone_domains_match_their_golden_files(tmp_path: Path) -> None:
    tpl = _template()
    validate(tmp_path, tpl.to_xml())
    golden("template-rhel9.0.xml", ANY_UUID.sub(f"<uuid>{UUID}</uuid>", tpl.to_xml()))
    record = HostRecord(name="hv2", uri="test:///x", site="oregon", pod="or-pod1")
    vols = tuple(VolumeInfo(p.rsplit("/", 1)[1], "default", p, fmt, 2**30, None, "0444")
                 for p, fmt in (("/var/lib/libvirt/images/web-tpl.qcow2", "qcow2"),
                                ("/var/lib/libvirt/images/web-tpl-disk1.raw", "raw")))
    clone = clone_domain(Template(record, tpl, vols), "web-7", record,
                         ["/var/lib/libvirt/images/web-7.qcow2",
                          "/var/lib/libvirt/images/web-7-disk1.qcow2"],
                         ["52:54:00:77:00:01", "52:54:00:77:00:02"], linked=True)
    assert clone.uuid not in (UUID, tpl.uuid)
    validate(tmp_path, clone.to_xml())
    golden("clone-linked-rhel9.0.xml", ANY_UUID.sub(f"<uuid>{UUID}</uuid>", clone.to_xml()))
    # what the OS variant decided travels with the template into every clone
    assert clone.os_id == tpl.os_id == "http://redhat.com/rhel/9.0"
    assert clone.os.machine == "q35" and clone.devices.channels[0].target_name


def test_generated_domains_are_accepted_by_libvirt(tmp_path: Path) -> None:
    with Host.open(node_uri(tmp_path, "empty.xml")) as h:
        for i, make in enumerate(CREATED.values()):
            d = make()
            d.type, d.name, d.uuid = "test", f"vm{i}", None
            h.define_domain(d.to_xml())
            back = Domain.parse(h.domain_xml(f"vm{i}"))
            assert back.os_id == d.os_id and back.os.machine == d.os.machine


# --- last: every property exercised ---------------------------------------------------------

def test_every_model_property_is_exercised(request: pytest.FixtureRequest) -> None:
    """Runs last (tests/unit/conftest.py orders it), and only after the whole unit suite."""
    if not conftest.STATE["full_run"]:
        pytest.skip("only a run of the whole unit suite (pytest tests/unit) can tell")
    if conftest.xdist_worker(request.config):
        pytest.skip("run over xdist workers: the controller checks what they all saw at the end")
    missing = sorted(conftest.ALL - conftest.SEEN)
    assert not missing, "model properties no test reads or writes (test them or remove them):" \
        + "".join(f"\n  {cls}.{name} ({kind})" for cls, name, kind in missing)
