"""Simulated fleets: node files the libvirt test driver opens, and their fleet file."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest
from lxml import etree

from tests.unit.tools import require_tool
from virtfleet.errors import InvalidInput
from virtfleet.inventory.fleetfile import load_fleet
from virtfleet.lab import simulate
from virtfleet.lab.simulate import SimSpec, local_uri, tcp_uri, write_fleet_file, write_nodes
from virtfleet.virt.host import Host


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> simulate.SimFleet:
    return write_nodes(SimSpec.reference(), tmp_path_factory.mktemp("reference"))


def test_reference_sizes_are_exact(reference: simulate.SimFleet) -> None:
    sim = reference
    spec = sim.spec
    assert spec.sites == ("oregon", "texas", "virginia")
    assert (spec.pods_per_site, spec.hosts_per_pod, spec.vms_per_host) == (5, 100, 10)
    assert spec.hypervisors == 1500 and len(sim.hosts) == 1500
    assert spec.vms == 15000 and sim.vms == 15000
    assert spec.cpus == 40 and spec.memory_gib == 384
    assert (spec.vm_vcpus, spec.vm_memory_gib) == (4, 32)
    assert len(list((sim.out_dir / "nodes").glob("*.xml"))) == 1500


def test_reference_node_files_hold_every_vm_once(
        reference: simulate.SimFleet) -> None:
    sim = reference
    names: list[str] = []
    states: Counter[str] = Counter()
    for h in sim.hosts:
        node = etree.parse(str(h.node_file)).getroot()
        assert node.findtext("cpu/active") == "40"
        assert int(node.findtext("cpu/sockets") or 0) * int(node.findtext("cpu/cores") or 0) \
            * int(node.findtext("cpu/threads") or 0) * int(node.findtext("cpu/nodes") or 0) == 40
        assert node.findtext("memory") == str(384 * 1024 * 1024)
        doms = node.findall("domain")
        assert len(doms) == 10
        for d in doms:
            assert d.findtext("vcpu") == "4"
            assert d.findtext("memory") == str(32 * 1024 * 1024)
            names.append(d.findtext("name") or "")
            states[d.findtext(f"{{{simulate.TEST_NS}}}runstate") or "running"] += 1
    assert len(names) == 15000 and len(set(names)) == 15000
    assert states["running"] > 0.8 * 15000
    assert states[str(simulate.SHUTOFF)] > 0 and states[str(simulate.PAUSED)] > 0


def test_node_files_open_with_the_test_driver(reference: simulate.SimFleet) -> None:
    sim = reference
    # Each node file path is a hypervisor of its own (never the shared test:///default).
    for h in (sim.hosts[0], sim.hosts[-1]):
        with Host.open(local_uri(h)) as conn:
            doms = conn.list_domains()
            info = conn.node_info()
        assert len(doms) == 10
        assert {d.name for d in doms} == {f"{h.name}-vm{v:02d}" for v in range(1, 11)}
        assert {d.state for d in doms} <= {"running", "paused", "shut off"}
        assert all(d.vcpus == 4 and d.memory_mib == 32 * 1024 for d in doms)
        assert info[2] == 40  # CPUs
        assert info[1] == 384 * 1024  # MiB


def test_uuids_are_stable_across_regeneration(tmp_path: Path) -> None:
    spec = SimSpec.custom(2, 3)
    first = etree.parse(str(write_nodes(spec, tmp_path / "a").hosts[0].node_file))
    second = etree.parse(str(write_nodes(spec, tmp_path / "b").hosts[0].node_file))
    assert [u.text for u in first.iter("uuid")] == [u.text for u in second.iter("uuid")]


def test_fleet_file_validates_and_maps_hosts_to_daemons(
        reference: simulate.SimFleet) -> None:
    sim = reference
    path = write_fleet_file(sim, tcp_uri([f"10.250.9.{211 + i}" for i in range(15)], 1500))
    fleet = load_fleet(path)
    assert [s.name for s in fleet.sites] == ["oregon", "texas", "virginia"]
    assert sum(len(s.pods) for s in fleet.sites) == 15
    rows = list(fleet.hypervisors())
    assert len(rows) == 1500
    # fifteen daemons, one per pod
    per_pod: dict[str, set[str]] = {}
    for _, pod, hv in rows:
        assert hv.uri.startswith("test+tcp://10.250.9.") and hv.uri.endswith(f"/{hv.name}.xml")
        per_pod.setdefault(pod.name, set()).add(hv.uri.split("/")[2])
    assert all(len(addrs) == 1 for addrs in per_pod.values())
    assert len({a for addrs in per_pod.values() for a in addrs}) == 15


def test_small_local_fleet_and_virsh(tmp_path: Path) -> None:
    sim = write_nodes(SimSpec.custom(7, 3), tmp_path / "small")
    fleet = load_fleet(write_fleet_file(sim, local_uri))
    rows = list(fleet.hypervisors())
    assert len(rows) == 7 and rows[0][2].uri == f"test://{sim.hosts[0].node_file}"
    virsh = require_tool("virsh", "libvirt-clients")  # (not silently: CI fails without it)
    out = subprocess.run([virsh, "-c", f"test://{sim.hosts[6].node_file}", "list", "--all",
                          "--name"], capture_output=True, text=True, check=True).stdout
    assert sorted(out.split()) == [f"sim-p1-hv007-vm{v:02d}" for v in (1, 2, 3)]


def test_regenerating_smaller_removes_old_node_files(tmp_path: Path) -> None:
    write_nodes(SimSpec.custom(5, 1), tmp_path / "x")
    write_nodes(SimSpec.custom(2, 1), tmp_path / "x")
    assert len(list((tmp_path / "x" / "nodes").glob("*.xml"))) == 2


def test_bad_sizes_and_directories_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        SimSpec.custom(0, 10)
    with pytest.raises(InvalidInput):
        SimSpec.custom(10, -1)
    with pytest.raises(InvalidInput, match="out"):
        write_nodes(SimSpec.custom(1, 1), tmp_path / "has space")
    with pytest.raises(InvalidInput, match="/var/lib/libvirt"):
        simulate.check_out_dir(Path("/var/lib/libvirt/sim"))
