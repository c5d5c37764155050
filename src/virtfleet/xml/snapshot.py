"""libvirt <domainsnapshot> XML: what `snapshot create` sends and `snapshot info` reads."""

from __future__ import annotations

from lxml import etree

from virtfleet.xml.model import Attr, Text, XMLModel, to_int


class Snapshot(XMLModel):
    TAG = "domainsnapshot"
    name = Text("name", str)
    description = Text("description", str)
    state = Text("state", str)  # the domain's state when it was taken: running, shutoff ...
    creation_time = Text("creationTime", to_int("creationTime"))
    parent = Text("parent/name", str)
    memory = Attr("memory", "snapshot", str)  # no, internal, external

    def disk_modes(self) -> dict[str, str]:
        """Disk target -> snapshot mode (internal, external, no)."""
        return {str(d.get("name")): str(d.get("snapshot", "")) for d in
                self.element.findall("disks/disk")}

    def set_disk_modes(self, modes: dict[str, str]) -> None:
        old = self.element.find("disks")
        if old is not None:
            self.element.remove(old)
        disks = etree.SubElement(self.element, "disks")
        for target, mode in modes.items():
            etree.SubElement(disks, "disk", name=target, snapshot=mode)
