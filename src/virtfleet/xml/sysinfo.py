"""`virsh sysinfo` (SMBIOS) parsed into typed sections: BIOS, system, processors, DIMMs."""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from virtfleet.xml.parse import parse_xml

Entries = dict[str, str]


@dataclass(frozen=True)
class SysInfo:
    type: str
    bios: Entries = field(default_factory=dict)
    system: Entries = field(default_factory=dict)
    baseboards: list[Entries] = field(default_factory=list)
    chassis: Entries = field(default_factory=dict)
    processors: list[Entries] = field(default_factory=list)
    memory_devices: list[Entries] = field(default_factory=list)
    oem_strings: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "type": self.type,
            "bios": self.bios,
            "system": self.system,
            "baseboards": self.baseboards,
            "chassis": self.chassis,
            "processors": self.processors,
            "memory_devices": self.memory_devices,
            "oem_strings": self.oem_strings,
        }

    @property
    def populated_dimms(self) -> list[Entries]:
        """DIMM slots with a module in them (empty slots report 'No Module Installed')."""
        return [m for m in self.memory_devices
                if m.get("size") and "no module" not in m["size"].lower()]


def _entries(el: etree._Element) -> Entries:
    return {str(e.get("name")): (e.text or "").strip() for e in el.findall("entry")}


def parse_sysinfo(text: str) -> SysInfo:
    root = parse_xml(text, "sysinfo", expect="sysinfo")
    bios = root.find("bios")
    system = root.find("system")
    chassis = root.find("chassis")
    oem = root.find("oemStrings")
    return SysInfo(
        type=root.get("type", ""),
        bios=_entries(bios) if bios is not None else {},
        system=_entries(system) if system is not None else {},
        baseboards=[_entries(b) for b in root.findall("baseBoard")],
        chassis=_entries(chassis) if chassis is not None else {},
        processors=[_entries(p) for p in root.findall("processor")],
        memory_devices=[_entries(m) for m in root.findall("memory_device")],
        oem_strings=[(e.text or "").strip() for e in oem.findall("entry")] if oem is not None
        else [],
    )
