"""Domain XML models: typed reads and writes, and nothing else in the document disturbed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from lxml import etree

from tests.unit.tools import require_tool
from virtfleet.errors import InvalidInput
from virtfleet.virt.host import Host
from virtfleet.xml.domain import VF_NS, Disk, Domain, FleetFacts, Graphics, Interface

from .nodes import node_uri

FIXTURE = Path(__file__).parent / "fixtures" / "xml" / "vm1-dumpxml.xml"


def canonical(el: etree._Element) -> bytes:
    return etree.tostring(el, method="c14n")


def test_reads_a_real_dumpxml() -> None:
    d = Domain.parse(FIXTURE.read_text())
    assert (d.type, d.id, d.name, d.vcpus) == ("kvm", 1, "vm1.example.com", 4)
    assert d.memory_kib == d.current_memory_kib == 32 * 1024 * 1024  # GiB and KiB agree
    assert (d.os.type, d.os.arch, d.os.machine, d.os.boot) == (
        "hvm", "x86_64", "pc-q35-7.2", ["hd", "cdrom"])
    assert d.features.acpi and d.features.apic
    disk, cdrom = list(d.devices.disks)
    assert (disk.format, disk.source, disk.target_dev, disk.readonly) == (
        "qcow2", "/vm1/vm1.example.com.qcow2", "vda", False)
    assert cdrom.device == "cdrom" and cdrom.readonly
    [nic] = d.devices.interfaces
    assert (nic.type, nic.source_bridge, nic.mac, nic.model, nic.vlans) == (
        "bridge", "br0", "52:54:00:6b:3c:58", "virtio", [42])
    [gfx] = d.devices.graphics
    assert (gfx.type, gfx.autoport, gfx.listen, gfx.passwd) == ("spice", True, "127.0.0.1",
                                                                None)
    assert d.devices.serials[0].target_port == 0
    assert d.facts is None


def test_round_trip_keeps_everything_it_does_not_model() -> None:
    original = etree.fromstring(FIXTURE.read_bytes())
    d = Domain.parse(FIXTURE.read_text())
    assert canonical(d.element) == canonical(original)  # parse + serialise: identical
    d.name = "vm2.example.com"
    d.memory_kib = 16 * 1024 * 1024
    d.devices.interfaces[0].set_vlans([10, 20], trunk=True)
    again = etree.fromstring(d.to_xml().encode())
    for path in ("cputune", "resource", "clock", "cpu", "devices/controller",
                 "devices/channel", "devices/memballoon", "seclabel", "features/vmport",
                 "devices/disk/address"):
        assert canonical(again.find(path)) == canonical(original.find(path)), path
    assert again.findtext("name") == "vm2.example.com"
    assert again.find("memory").get("unit") == "KiB"
    assert [t.get("id") for t in again.findall("devices/interface/vlan/tag")] == ["10", "20"]
    assert any(isinstance(n, etree._Comment) for n in again)


def test_setting_none_removes_and_flags_toggle() -> None:
    d = Domain.parse(FIXTURE.read_text())
    d.title = "web tier"
    assert d.element.findtext("title") == "web tier"
    d.title = None
    assert d.element.find("title") is None
    cdrom = d.devices.disks[1]
    cdrom.readonly = False
    assert cdrom.element.find("readonly") is None
    d.devices.disks[0].cache = None
    assert "cache" not in d.devices.disks[0].element.find("driver").attrib


def test_bad_values_are_named() -> None:
    text = FIXTURE.read_text().replace("<vcpu placement='static'>4", "<vcpu>four")
    with pytest.raises(InvalidInput, match="vcpu: 'four' is not a whole number"):
        _ = Domain.parse(text).vcpus
    with pytest.raises(InvalidInput, match="unknown memory unit"):
        _ = Domain.parse(FIXTURE.read_text().replace("unit='GiB'", "unit='parsecs'")).memory_kib
    with pytest.raises(InvalidInput, match="expected <domain>"):
        Domain.parse("<network/>")
    with pytest.raises(InvalidInput, match="not well-formed"):
        Domain.parse("<domain>")


def built_domain(name: str = "vm1.example.com", virt_type: str = "qemu") -> Domain:
    """The chapter's virt-install line, in models: 32 GiB, 4 vCPUs, qcow2, br0, SPICE."""
    d = Domain()
    d.type = virt_type
    d.name = name
    d.uuid = "6f1b6d52-2b0e-4c4e-9a49-7a3c1b1e0f5a"
    d.memory_kib = 32 * 1024 * 1024
    d.current_memory_kib = 32 * 1024 * 1024
    d.vcpus = 4
    d.os.type = "hvm"
    d.os.arch = "x86_64"
    d.os.boot = ["cdrom", "hd"]
    d.features.acpi = True
    d.devices.emulator = "/usr/bin/qemu-system-x86_64"
    disk = Disk()
    disk.type, disk.device = "file", "disk"
    disk.driver_name, disk.format = "qemu", "qcow2"
    disk.source_file = "/vm1/vm1.example.com.qcow2"
    disk.target_dev, disk.target_bus = "vda", "virtio"
    d.devices.disks.append(disk)
    nic = Interface()
    nic.type, nic.source_bridge, nic.model = "bridge", "br0", "virtio"
    nic.mac = "52:54:00:6b:3c:58"
    d.devices.interfaces.append(nic)
    gfx = Graphics()
    gfx.type, gfx.autoport = "spice", True
    gfx.set_listen_address("127.0.0.1")
    d.devices.graphics.append(gfx)
    facts = FleetFacts()
    facts.site, facts.pod, facts.app, facts.owner = "oregon", "or-pod1", "web", "ops"
    d.set_facts(facts)
    return d


def test_a_built_domain_passes_libvirts_schema(tmp_path: Path) -> None:
    require_tool("virt-xml-validate", "libvirt-clients")
    f = tmp_path / "d.xml"
    f.write_text(built_domain().to_xml())
    r = subprocess.run(["virt-xml-validate", str(f), "domain"], capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_libvirt_accepts_it_and_keeps_virtfleets_metadata(tmp_path: Path) -> None:
    with Host.open(node_uri(tmp_path, "empty.xml")) as h:
        h.define_domain(built_domain(virt_type="test").to_xml())
        back = Domain.parse(h.domain_xml("vm1.example.com"))
    assert back.memory_kib == 32 * 1024 * 1024 and back.vcpus == 4
    assert back.devices.interfaces[0].mac == "52:54:00:6b:3c:58"
    facts = back.facts
    assert facts is not None
    assert (facts.site, facts.pod, facts.app, facts.owner, facts.template) == (
        "oregon", "or-pod1", "web", "ops", None)
    assert back.element.find(f"metadata/{{{VF_NS}}}instance") is not None


def test_facts_replace_rather_than_pile_up() -> None:
    d = built_domain()
    f = FleetFacts()
    f.site = "texas"
    d.set_facts(f)
    assert len(d.element.findall(f"metadata/{{{VF_NS}}}instance")) == 1
    assert d.facts is not None and d.facts.site == "texas" and d.facts.pod is None


def test_a_disks_backing_chain_is_read_from_libvirts_backingstore() -> None:
    """A running domain's disk as libvirt reports it: overlay -> template -> base, then the
    empty <backingStore/> that ends a chain; a disk without one (a shut-off domain's) has
    none."""
    xml = """<domain type='qemu'><name>c1</name><devices>
      <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
        <source file='/pod/c1.qcow2'/>
        <backingStore type='file' index='1'><format type='qcow2'/>
          <source file='/pod/tpl.qcow2'/>
          <backingStore type='block' index='2'><format type='raw'/>
            <source dev='/dev/vg/base'/><backingStore/></backingStore>
        </backingStore>
        <target dev='vda' bus='virtio'/></disk>
      <disk type='file' device='disk'><driver name='qemu' type='raw'/>
        <source file='/pod/data.img'/><target dev='vdb' bus='virtio'/></disk>
    </devices></domain>"""
    vda, vdb = Domain.parse(xml).devices.disks
    assert vda.backing_store == [("/pod/tpl.qcow2", "qcow2"), ("/dev/vg/base", "raw")]
    assert vdb.backing_store == []
