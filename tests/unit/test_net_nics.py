"""`vm create --network`: bridge, network and portgroup, VLAN access and trunk, Open vSwitch,
SR-IOV VFs; every domain libvirt's schema accepts, every bad word refused naming the option."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtfleet.cli.fields import option_for
from virtfleet.cli.vm import CREATE_FLAGS
from virtfleet.design.policy import build_domain
from virtfleet.design.spec import parse_network, vm_spec
from virtfleet.errors import InvalidInput
from virtfleet.xml.domain import Domain

from .test_design import place, validate

NICS = [
    "bridge=br0",
    "bridge:br0,vlan=42",
    "bridge=ovsbr0,virtualport=openvswitch",
    "bridge=ovsbr0,virtualport=openvswitch,vlan=10:20:30,trunk=yes",
    "network=default",
    "network=ovs-net,portgroup=web",
    "network=sriov-pool",
    "hostdev=0000:03:10.1",
    "hostdev=03:10.2,vlan=42,mac=52:54:00:aa:bb:cc",
    "network=default,model=e1000e,mac=52:54:00:12:34:56",
]


@pytest.mark.parametrize("text", NICS)
def test_every_nic_form_gives_valid_domain_xml(tmp_path: Path, text: str) -> None:
    spec = vm_spec(name="vm1", memory="1G", vcpus=1, disks=[], networks=[text], pxe=True)
    d = build_domain(spec, place(spec))
    validate(tmp_path, d)
    # and reads back through the model
    [nic] = Domain.parse(d.to_xml()).devices.interfaces
    assert nic.type == spec.nics[0].kind


def test_all_nics_on_one_vm(tmp_path: Path) -> None:
    spec = vm_spec(name="vm1", memory="1G", vcpus=1, disks=[], networks=NICS, pxe=True)
    d = build_domain(spec, place(spec))
    validate(tmp_path, d)
    nics = list(d.devices.interfaces)
    assert len(nics) == len(NICS)
    ovs_trunk = nics[3]
    assert (ovs_trunk.virtualport, ovs_trunk.vlans, ovs_trunk.vlan_trunk) == (
        "openvswitch", [10, 20, 30], True)
    assert (nics[5].source_network, nics[5].portgroup) == ("ovs-net", "web")
    vf = nics[8]
    assert (vf.type, vf.managed, vf.pci_address, vf.vlans, vf.model) == (
        "hostdev", True, "0000:03:10.2", [42], None)


def test_access_vlan_is_kept_as_before() -> None:
    nic = parse_network("bridge=br0,vlan=42")
    assert (nic.vlans, nic.trunk, nic.vlan) == ((42,), False, 42)
    assert parse_network("bridge=ovsbr0,vlan=10:20,trunk=yes").vlan is None


@pytest.mark.parametrize("text,words", [
    ("bridge=br0,vlan=0", "not an id from 1 to 4094"),
    ("bridge=br0,vlan=4095", "not an id from 1 to 4094"),
    ("bridge=br0,vlan=10:5000,trunk=yes", "'5000' is not an id from 1 to 4094"),
    ("bridge=br0,vlan=10:20", "add trunk=yes"),
    ("bridge=br0,vlan=10:10,trunk=yes", "repeats"),
    ("bridge=br0,trunk=yes", "needs vlan="),
    ("bridge=br0,trunk=maybe,vlan=3", "not yes or no"),
    ("bridge=averyveryverylongbridge", "at most 15"),
    ("bridge=br0,portgroup=web", "portgroup goes with network="),
    ("network=ovs,portgroup=a-very-long-portgroup", "not a valid name"),
    ("network=ovs,virtualport=openvswitch", "goes with bridge="),
    ("bridge=br0,virtualport=802.1Qbh", "not openvswitch"),
    ("hostdev=3:10.1", "not a PCI address"),
    ("hostdev=0000:03:20.9", "not a PCI address"),
    ("hostdev=03:10.1,vlan=10:20,trunk=yes", "not a trunk"),
    ("hostdev=03:10.1,model=virtio", "no emulated model"),
    ("bridge=br0,hostdev=03:10.1", "exactly one of"),
    ("bridge=br0,model=ne2k", "not virtio"),
])
def test_bad_nics_name_the_option(text: str, words: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_network(text, "networks[2]")
    assert exc.value.field == "networks[2]" and words in exc.value.rule, exc.value
    assert option_for(exc.value.field, CREATE_FLAGS) == "--network"
