"""Network specs -> libvirt network XML that libvirt's own schema accepts, and back."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.unit.tools import require_tool
from virtfleet.errors import InvalidInput
from virtfleet.inventory.networks import NetworkSpec, build_network, check_spec, same, spec_of
from virtfleet.xml.network import Network


def validate(tmp_path: Path, doc: Network) -> None:
    require_tool("virt-xml-validate", "libvirt-clients")
    f = tmp_path / "network.xml"
    f.write_text(doc.to_xml())
    r = subprocess.run(["virt-xml-validate", str(f), "network"], capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr + doc.to_xml()


SPECS = {
    "nat (the chapter's default)": {
        "name": "default", "mode": "nat", "subnet": "192.168.122.0/24",
        "dhcp": [{"start": "192.168.122.2", "end": "192.168.122.254"}]},
    "nat with bridge, forward dev, fixed lease, two ranges": {
        "name": "nat2", "mode": "nat", "subnet": "10.20.0.0/16", "address": "10.20.0.254",
        "bridge": "virbr20", "stp": False, "forward_dev": "bond0",
        "dhcp": [{"start": "10.20.1.1", "end": "10.20.1.99"},
                 {"start": "10.20.2.1", "end": "10.20.2.99"}],
        "hosts": [{"mac": "52:54:00:12:34:56", "ip": "10.20.3.4", "name": "db01"}]},
    "routed": {"name": "routed", "mode": "route", "subnet": "10.30.0.0/24"},
    "open": {"name": "open", "mode": "open", "subnet": "10.31.0.0/24"},
    "isolated": {"name": "isolated", "mode": "isolated", "subnet": "10.40.0.0/24",
                 "dhcp": [{"start": "10.40.0.100", "end": "10.40.0.200"}]},
    "host bridge": {"name": "br0", "mode": "bridge", "bridge": "br0"},
    "open vswitch with VLAN portgroups": {
        "name": "ovs", "mode": "bridge", "bridge": "ovsbr0", "ovs": True,
        "portgroups": [{"name": "web", "vlans": [10], "default": True},
                       {"name": "trunk", "vlans": [10, 20, 30], "trunk": True}]},
    "sr-iov vf pool": {"name": "sriov", "mode": "hostdev", "pf": "enp3s0f0",
                       "portgroups": [{"name": "storage", "vlans": [42]}]},
}


@pytest.mark.parametrize("data", SPECS.values(), ids=SPECS.keys())
def test_every_shape_is_valid_libvirt_xml_and_reads_back(tmp_path: Path,
                                                         data: dict[str, object]) -> None:
    spec = NetworkSpec.model_validate(data)
    check_spec(spec, lambda f: f)
    doc = build_network(spec, uuid="0d7a6c1c-5d3f-4a3e-9d4e-7f0a1e2b3c4d")
    validate(tmp_path, doc)
    back = spec_of(Network.parse(doc.to_xml()))
    assert back is not None and same(back, spec), doc.to_xml()


def test_the_chapters_default_network_xml() -> None:
    doc = build_network(NetworkSpec.model_validate(SPECS["nat (the chapter's default)"]))
    assert (doc.name, doc.forward_mode, doc.stp) == ("default", "nat", True)
    [ip] = doc.ips
    assert (ip.address, ip.netmask) == ("192.168.122.1", "255.255.255.0")
    assert [(r.start, r.end) for r in ip.dhcp_ranges] == [("192.168.122.2", "192.168.122.254")]


def test_unknown_xml_survives_a_round_trip() -> None:
    text = """<network connections='2'>
  <name>keep</name>
  <forward mode='nat'><nat><port start='1024' end='65535'/></nat></forward>
  <bridge name='virbr9' stp='on' delay='0'/>
  <mtu size='9000'/>
  <dns><host ip='10.9.0.5'><hostname>db</hostname></host></dns>
  <ip address='10.9.0.1' prefix='24'/>
</network>"""
    doc = Network.parse(text)
    doc.stp = False
    out = doc.to_xml()
    assert "<mtu size=\"9000\"/>" in out and "<hostname>db</hostname>" in out
    assert 'stp="off"' in out and 'port start="1024"' in out
    assert spec_of(doc) is not None and str(spec_of(doc).network) == "10.9.0.0/24"  # type: ignore[union-attr]


def test_hostdev_addresses() -> None:
    doc = Network.parse("""<network><name>vfs</name><forward mode='hostdev' managed='yes'>
      <address type='pci' domain='0x0000' bus='0x03' slot='0x10' function='0x1'/>
    </forward></network>""")
    assert doc.hostdev_addresses() == ["0000:03:10.1"]


@pytest.mark.parametrize("data,field,words", [
    ({"mode": "nat"}, "subnet", "needs a subnet"),
    ({"mode": "nat", "subnet": "10.0.0.0/24",
      "dhcp": [{"start": "10.0.1.2", "end": "10.0.1.9"}]}, "dhcp", "outside subnet"),
    ({"mode": "nat", "subnet": "10.0.0.0/24",
      "dhcp": [{"start": "10.0.0.9", "end": "10.0.0.2"}]}, "dhcp", "ends before"),
    ({"mode": "nat", "subnet": "10.0.0.0/24",
      "dhcp": [{"start": "10.0.0.1", "end": "10.0.0.9"}]}, "dhcp", "own address"),
    ({"mode": "isolated", "subnet": "10.0.0.0/24", "forward_dev": "eth0"}, "forward_dev",
     "only nat and route"),
    ({"mode": "bridge"}, "bridge", "names the host bridge"),
    ({"mode": "bridge", "bridge": "br0", "portgroups": [{"name": "a", "vlans": [3]}]},
     "portgroups", "need Open vSwitch"),
    ({"mode": "bridge", "bridge": "br0", "subnet": "10.0.0.0/24"}, "subnet", "no address"),
    ({"mode": "bridge", "bridge": "o", "ovs": True, "portgroups": [
        {"name": "a", "vlans": [3, 4]}]}, "portgroups", "set trunk"),
    ({"mode": "hostdev"}, "pf", "physical function"),
    ({"mode": "hostdev", "pf": "eth3", "portgroups": [
        {"name": "a", "vlans": [3, 4], "trunk": True}]}, "portgroups", "not a trunk"),
])
def test_cross_field_rules(data: dict[str, object], field: str, words: str) -> None:
    spec = NetworkSpec.model_validate({"name": "n", **data})
    with pytest.raises(InvalidInput) as exc:
        check_spec(spec, lambda f: f"X.{f}")
    assert exc.value.field == f"X.{field}" and words in exc.value.rule, exc.value
