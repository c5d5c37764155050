"""libvirt network XML (`virsh net-dumpxml`), declaratively, on xml/model.py.

One class parses what libvirt reports and builds what virtfleet defines; elements virtfleet does
not model (dns, bandwidth, mtu, dnsmasq options ...) survive a round trip untouched.

The shapes virtfleet builds (see docs/networks.md):

    nat / route / open / isolated   <bridge name= stp=/> <forward mode=/> <ip address= netmask=>
                                    <dhcp><range/><host/></dhcp></ip>
    host bridge                     <forward mode='bridge'/> <bridge name='br0'/>
    Open vSwitch                    ... plus <virtualport type='openvswitch'/> and <portgroup>s
                                    with <vlan><tag id=/></vlan>
    SR-IOV VF pool                  <forward mode='hostdev' managed='yes'><pf dev='eth3'/>
"""

from __future__ import annotations

from virtfleet.xml.model import (
    Attr,
    Children,
    Text,
    XMLModel,
    fmt_yes_no,
    to_int,
    yes_no,
)
from virtfleet.xml.vlan import VlanTagged

# The order libvirt writes a network's elements in, per parent tag (see xml/model.py).
ORDERS: dict[str, tuple[str, ...]] = {
    "network": ("name", "uuid", "title", "description", "metadata", "forward", "bridge", "mtu",
                "mac", "domain", "dns", "bandwidth", "vlan", "port", "ip", "route",
                "virtualport", "portgroup"),
    "forward": ("nat", "interface", "pf", "address"),
    "ip": ("tftp", "dhcp"),
    "dhcp": ("range", "host", "bootp"),
    "portgroup": ("vlan", "virtualport", "bandwidth"),
}


class _NetworkPart(XMLModel):
    ORDERS = ORDERS


class DhcpRange(XMLModel):
    TAG = "range"
    start = Attr("", "start", str)
    end = Attr("", "end", str)


class DhcpHost(XMLModel):
    """A fixed lease: this MAC gets this address (and name)."""

    TAG = "host"
    mac = Attr("", "mac", str)
    name = Attr("", "name", str)
    ip = Attr("", "ip", str)


class IP(_NetworkPart):
    TAG = "ip"
    family = Attr("", "family", str)
    address = Attr("", "address", str)
    netmask = Attr("", "netmask", str)
    prefix = Attr("", "prefix", to_int("ip prefix"))
    dhcp_ranges = Children("dhcp", DhcpRange)
    dhcp_hosts = Children("dhcp", DhcpHost)


class PortGroup(_NetworkPart, VlanTagged):
    """A named set of port settings a NIC picks with <source portgroup=>: here, VLAN tags."""

    TAG = "portgroup"
    name = Attr("", "name", str)
    default = Attr("", "default", yes_no, fmt_yes_no)
    virtualport = Attr("virtualport", "type", str)


class Network(_NetworkPart):
    TAG = "network"
    name = Text("name", str)
    uuid = Text("uuid", str)
    bridge = Attr("bridge", "name", str)
    stp = Attr("bridge", "stp", lambda t: t in ("on", "yes"),  # libvirt writes on/off
               lambda v: "on" if v else "off")
    delay = Attr("bridge", "delay", to_int("bridge delay"))
    mac = Attr("mac", "address", str)
    forward_mode = Attr("forward", "mode", str)  # None: isolated
    forward_dev = Attr("forward", "dev", str)
    forward_managed = Attr("forward", "managed", yes_no, fmt_yes_no)
    forward_pf = Attr("forward/pf", "dev", str)
    virtualport = Attr("virtualport", "type", str)
    ips = Children("", IP)
    portgroups = Children("", PortGroup)

    def portgroup(self, name: str) -> PortGroup | None:
        return next((pg for pg in self.portgroups if pg.name == name), None)

    def hostdev_addresses(self) -> list[str]:
        """PCI addresses of a hostdev pool's VFs, as 0000:03:10.0."""
        out = []
        for a in self.findall("forward/address"):
            out.append("{:04x}:{:02x}:{:02x}.{:x}".format(
                *(int(str(a.get(k)), 16) for k in ("domain", "bus", "slot", "function"))))
        return out

