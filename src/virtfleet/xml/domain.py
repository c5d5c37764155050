"""libvirt domain XML: the parts virtfleet reads and writes, everything else kept as is.

Policy (what a VM spec becomes) lives elsewhere; these classes only map XML to typed values.
virtfleet's own facts about a VM (site, pod, application, template, owner) are stored in the
domain's <metadata> under virtfleet's namespace, as VDSM does, so they travel with the domain.
"""

from __future__ import annotations

from typing import ClassVar, overload

from lxml import etree

from virtfleet.errors import InvalidInput
from virtfleet.xml.model import (
    Attr,
    Child,
    Children,
    Flag,
    Text,
    XMLModel,
    fmt_yes_no,
    to_int,
    yes_no,
)

VF_NS = "urn:x-virtfleet:domain:1"

# libvirt's memory units (docs: formatdomain "Memory Allocation"); 'k' and 'KiB' are 1024.
_UNIT_BYTES = {
    "b": 1, "bytes": 1,
    "KB": 10**3, "k": 2**10, "KiB": 2**10,
    "MB": 10**6, "M": 2**20, "MiB": 2**20,
    "GB": 10**9, "G": 2**30, "GiB": 2**30,
    "TB": 10**12, "T": 2**40, "TiB": 2**40,
}


class MemoryKiB:
    """An element holding a memory size with a `unit` attribute, read and written in KiB."""

    def __init__(self, path: str) -> None:
        self.path = path

    @overload
    def __get__(self, obj: None, owner: type) -> MemoryKiB: ...
    @overload
    def __get__(self, obj: XMLModel, owner: type) -> int | None: ...

    def __get__(self, obj: XMLModel | None, owner: type) -> MemoryKiB | int | None:
        if obj is None:
            return self
        el = obj.element.find(self.path)
        if el is None or not (el.text or "").strip():
            return None
        unit = el.get("unit", "KiB")
        if unit not in _UNIT_BYTES:
            raise InvalidInput(self.path, f"unknown memory unit {unit!r}")
        return to_int(self.path)(el.text or "") * _UNIT_BYTES[unit] // 1024

    def __set__(self, obj: XMLModel, kib: int | None) -> None:
        el = obj.element.find(self.path)
        if kib is None:
            if el is not None:
                obj.element.remove(el)
            return
        if el is None:
            el = etree.SubElement(obj.element, self.path)
        el.set("unit", "KiB")
        el.text = str(kib)


class OS(XMLModel):
    TAG = "os"
    type = Text("type", str)
    arch = Attr("type", "arch", str)
    machine = Attr("type", "machine", str)
    kernel = Text("kernel", str)
    initrd = Text("initrd", str)
    cmdline = Text("cmdline", str)

    @property
    def boot(self) -> list[str]:
        """Boot device order: hd, cdrom, network, fd."""
        return [str(b.get("dev")) for b in self.element.findall("boot")]

    @boot.setter
    def boot(self, devices: list[str]) -> None:
        for b in self.element.findall("boot"):
            self.element.remove(b)
        anchor = self.element.find("type")
        for dev in reversed(devices):
            el = etree.Element("boot", dev=dev)
            if anchor is not None:
                anchor.addnext(el)
            else:
                self.element.insert(0, el)


class Features(XMLModel):
    TAG = "features"
    acpi = Flag("acpi")
    apic = Flag("apic")


class Disk(XMLModel):
    TAG = "disk"
    type = Attr("", "type", str)  # file, block, volume, network
    device = Attr("", "device", str)  # disk, cdrom
    driver_name = Attr("driver", "name", str)
    format = Attr("driver", "type", str)  # qcow2, raw
    cache = Attr("driver", "cache", str)
    source_file = Attr("source", "file", str)
    source_dev = Attr("source", "dev", str)
    source_pool = Attr("source", "pool", str)
    source_volume = Attr("source", "volume", str)
    target_dev = Attr("target", "dev", str)
    target_bus = Attr("target", "bus", str)
    readonly = Flag("readonly")
    shareable = Flag("shareable")

    @property
    def source(self) -> str | None:
        """The path or volume the disk reads, whatever its type."""
        return self.source_file or self.source_dev or self.source_volume


class Interface(XMLModel):
    TAG = "interface"
    type = Attr("", "type", str)  # bridge, network, direct, hostdev
    mac = Attr("mac", "address", str)
    source_bridge = Attr("source", "bridge", str)
    source_network = Attr("source", "network", str)
    source_dev = Attr("source", "dev", str)
    source_mode = Attr("source", "mode", str)
    model = Attr("model", "type", str)
    virtualport = Attr("virtualport", "type", str)  # openvswitch, 802.1Qbh ...
    portgroup = Attr("source", "portgroup", str)
    managed = Attr("", "managed", yes_no, fmt_yes_no)  # hostdev: libvirt (un)binds the VF

    @property
    def pci_address(self) -> str | None:
        """type='hostdev': the VF's PCI address as 0000:03:10.1."""
        a = self.element.find("source/address")
        if a is None or a.get("type") != "pci":
            return None
        return "{:04x}:{:02x}:{:02x}.{:x}".format(
            *(int(str(a.get(k, "0")), 16) for k in ("domain", "bus", "slot", "function")))

    def set_pci_address(self, address: str) -> None:
        """Point a hostdev interface at a PCI function given as [DDDD:]BB:SS.F."""
        *dom, bus, slot_fn = address.split(":")
        slot, fn = slot_fn.split(".")
        source = self.element.find("source")
        if source is None:
            source = etree.SubElement(self.element, "source")
        for old in source.findall("address"):
            source.remove(old)
        etree.SubElement(source, "address", type="pci", domain=f"0x{dom[0] if dom else '0000'}",
                         bus=f"0x{bus}", slot=f"0x{slot}", function=f"0x{fn}")

    @property
    def vlans(self) -> list[int]:
        return [int(str(t.get("id"))) for t in self.element.findall("vlan/tag")]

    @property
    def vlan_trunk(self) -> bool:
        v = self.element.find("vlan")
        return v is not None and v.get("trunk") == "yes"

    def set_vlans(self, tags: list[int], trunk: bool = False) -> None:
        old = self.element.find("vlan")
        if old is not None:
            self.element.remove(old)
        if not tags:
            return
        vlan = etree.SubElement(self.element, "vlan")
        if trunk:
            vlan.set("trunk", "yes")
        for tag in tags:
            etree.SubElement(vlan, "tag", id=str(tag))


class Graphics(XMLModel):
    TAG = "graphics"
    type = Attr("", "type", str)  # spice, vnc
    port = Attr("", "port", to_int("graphics port"))
    autoport = Attr("", "autoport", yes_no, fmt_yes_no)
    listen = Attr("", "listen", str)
    # The password is write-only in virtfleet: libvirt hides it from XMLDesc unless asked for
    # secure XML, and virtfleet never asks, prints, logs or stores it.
    passwd = Attr("", "passwd", str)

    def set_listen_address(self, address: str) -> None:
        self.listen = address
        for old in self.element.findall("listen"):
            self.element.remove(old)
        etree.SubElement(self.element, "listen", type="address", address=address)


class CharDevice(XMLModel):
    """<serial> or <console>: type pty, target port."""

    TAG = "serial"
    type = Attr("", "type", str)
    target_port = Attr("target", "port", to_int("serial target port"))
    target_type = Attr("target", "type", str)


class Console(CharDevice):
    TAG = "console"


class Devices(XMLModel):
    TAG = "devices"
    emulator = Text("emulator", str)
    disks = Children("", Disk)
    interfaces = Children("", Interface)
    graphics = Children("", Graphics)
    serials = Children("", CharDevice)
    consoles = Children("", Console)


class FleetFacts(XMLModel):
    """virtfleet's own facts about a VM, in the domain's <metadata>."""

    TAG = f"{{{VF_NS}}}instance"
    NSMAP: ClassVar[dict[str, str] | None] = {"vf": VF_NS}
    site = Text(f"{{{VF_NS}}}site", str)
    pod = Text(f"{{{VF_NS}}}pod", str)
    app = Text(f"{{{VF_NS}}}app", str)
    template = Text(f"{{{VF_NS}}}template", str)  # on a clone: the template it came from
    owner = Text(f"{{{VF_NS}}}owner", str)
    role = Text(f"{{{VF_NS}}}role", str)  # "template" on a sealed template; unset on VMs


class Domain(XMLModel):
    TAG = "domain"
    type = Attr("", "type", str)  # kvm, qemu, test
    id = Attr("", "id", to_int("domain id"))
    name = Text("name", str)
    uuid = Text("uuid", str)
    title = Text("title", str)
    description = Text("description", str)
    memory_kib = MemoryKiB("memory")
    current_memory_kib = MemoryKiB("currentMemory")
    vcpus = Text("vcpu", to_int("vcpu"))
    vcpu_placement = Attr("vcpu", "placement", str)
    on_poweroff = Text("on_poweroff", str)
    on_reboot = Text("on_reboot", str)
    on_crash = Text("on_crash", str)
    os = Child("os", OS)
    features = Child("features", Features)
    devices = Child("devices", Devices)

    @property
    def facts(self) -> FleetFacts | None:
        """virtfleet's metadata, or None if the domain has none (made outside virtfleet)."""
        el = self.element.find(f"metadata/{FleetFacts.TAG}")
        return None if el is None else FleetFacts(el)

    def set_facts(self, facts: FleetFacts) -> None:
        metadata = self.element.find("metadata")
        if metadata is None:
            metadata = etree.Element("metadata")
            # after <uuid> (or <name>), where libvirt itself writes it
            anchor = self.element.find("uuid")
            if anchor is None:
                anchor = self.element.find("name")
            if anchor is not None:
                anchor.addnext(metadata)
            else:
                self.element.insert(0, metadata)
        old = metadata.find(FleetFacts.TAG)
        if old is not None:
            metadata.remove(old)
        metadata.append(facts.element)

    @property
    def smbios_serial(self) -> str | None:
        for entry in self.element.findall("sysinfo/system/entry"):
            if entry.get("name") == "serial":
                return entry.text
        return None

    def set_smbios_serial(self, serial: str) -> None:
        """Hand the guest a string through the SMBIOS system serial number, where cloud-init
        reads its NoCloud seed ("ds=nocloud;h=HOSTNAME") without anything written to a disk."""
        for old in self.element.findall("sysinfo"):
            if old.get("type") == "smbios":
                self.element.remove(old)
        sysinfo = etree.SubElement(self.element, "sysinfo", type="smbios")
        entry = etree.SubElement(etree.SubElement(sysinfo, "system"), "entry", name="serial")
        entry.text = serial
        os_el = self.element.find("os")
        if os_el is None:
            raise InvalidInput("domain", "has no <os> element")
        smbios = os_el.find("smbios")
        if smbios is None:
            smbios = etree.SubElement(os_el, "smbios")
        smbios.set("mode", "sysinfo")
