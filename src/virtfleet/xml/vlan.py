"""<vlan> and its <tag>s: libvirt uses the one schema under a domain's <interface> and under a
network's <portgroup>, so a VM's NIC and the portgroup it joins carry their VLANs alike."""

from __future__ import annotations

from virtfleet.xml.model import XMLModel


class VlanTagged(XMLModel):
    """A model that may hold <vlan>: access (one tag) or, with trunk='yes', a trunk."""

    @property
    def vlans(self) -> list[int]:
        return [int(str(t.get("id"))) for t in self.findall("vlan/tag")]

    @property
    def vlan_trunk(self) -> bool:
        return self.find("vlan[@trunk='yes']") is not None

    def set_vlans(self, tags: list[int], trunk: bool = False) -> None:
        """Replace <vlan>; no tags removes it."""
        self.drop("vlan")
        if not tags:
            return
        vlan = self.ensure("vlan")
        if trunk:
            vlan.set("trunk", "yes")
        for tag in tags:
            self.add("vlan", "tag", id=str(tag))
