"""libvirt <domainsnapshot> XML: what `snapshot create` sends and `snapshot info` reads."""

from __future__ import annotations

from virtfleet.xml.model import Attr, Text, XMLModel, to_int


class Snapshot(XMLModel):
    TAG = "domainsnapshot"
    ORDERS = {"domainsnapshot": ("name", "description", "state", "parent", "creationTime",
                                 "memory", "disks", "domain", "cookie")}
    name = Text("name", str)
    description = Text("description", str)
    state = Text("state", str)  # the domain's state when it was taken: running, shutoff ...
    creation_time = Text("creationTime", to_int("creationTime"))
    parent = Text("parent/name", str)
    memory = Attr("memory", "snapshot", str)  # no, internal, external

    def disk_modes(self) -> dict[str, str]:
        """Disk target -> snapshot mode (internal, external, no)."""
        return {str(d.get("name")): str(d.get("snapshot", "")) for d in
                self.findall("disks/disk")}

    def set_disk_modes(self, modes: dict[str, str]) -> None:
        self.drop("disks")
        self.ensure("disks")
        for target, mode in modes.items():
            self.add("disks", "disk", name=target, snapshot=mode)
