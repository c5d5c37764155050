"""`virtfleet net ...` end to end on test-driver hypervisors, run as a user runs it.

Each test-driver connection starts from its node file, so a command's effects are seen in its
own output (per-host results), not by a later command.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from .cli import run
from .cli import run as run_net
from .nodes import node_uri


@pytest.fixture
def db(tmp_path: Path) -> Path:
    f = tmp_path / "fleet.yaml"
    f.write_text(yaml.safe_dump({"sites": [{"name": "oregon", "pods": [
        {"name": "or-pod1", "hypervisors": [
            {"name": "hv1", "uri": node_uri(tmp_path, "with-networks.xml", "hv1.xml")},
            {"name": "hv2", "uri": node_uri(tmp_path, "empty.xml", "hv2.xml")}]},
        {"name": "or-pod2", "hypervisors": [
            {"name": "hv3", "uri": node_uri(tmp_path, "empty.xml", "hv3.xml")}]}]}]}))
    store = tmp_path / "store.db"
    assert run(store, "apply", "-f", str(f)).code == 0
    return store


def test_list_and_info_fleet_wide(db: Path) -> None:
    r = run_net(db, "net", "list", "--json")
    assert r.code == 0, r.err
    [row] = r.json()
    assert (row["host"], row["name"], row["active"], row["bridge"], row["subnets"]) == (
        "hv1", "default", True, "virbr0", ["192.168.122.0/24"])
    r = run_net(db, "net", "list")
    assert "virbr0" in r.out and "192.168.122.0/24" in r.out
    r = run_net(db, "net", "info", "default")
    assert r.code == 0 and "Bridge:" in r.out and "virbr0" in r.out
    r = run_net(db, "net", "dumpxml", "default", "--host", "hv1")
    assert r.code == 0 and "<name>default</name>" in r.out and "192.168.122.1" in r.out
    r = run_net(db, "net", "dumpxml", "default", "--host", "hv2")
    assert r.code == 3 and r.err == "virtfleet: error: hv2: has no network 'default'\n"
    # the test driver keeps no leases: its refusal is that host's error, the others answer
    r = run_net(db, "net", "dhcp-leases", "default", "--json")
    assert r.code == 1 and r.json() == [] and "hv1: hypervisor-error" in r.err
    r = run_net(db, "net", "info", "nosuch")
    assert r.code == 3 and "no hypervisor in scope has a network 'nosuch'" in r.err


def test_define_on_a_pod_with_start_and_autostart(db: Path) -> None:
    r = run_net(db, "net", "define", "lab", "--nat", "10.77.0.0/24", "--dhcp-range",
                "10.77.0.10,10.77.0.99", "--pod", "or-pod1", "--start", "--autostart",
                "--json")
    assert r.code == 0, r.err
    assert r.json() == [
        {"host": h, "network": "lab", "result": "defined, started, marked autostart",
         "ok": True} for h in ("hv1", "hv2")]


@pytest.mark.parametrize("args", [
    ["--ovs-bridge", "ovsbr0", "--portgroup", "web,vlan=10,default=yes",
     "--portgroup", "trunk,vlan=10:20:30,trunk=yes"],
    ["--bridge", "br0"],
    ["--hostdev-pf", "enp3s0f0"],
    ["--isolated", "10.40.0.0/24", "--dhcp-range", "10.40.0.100,10.40.0.200"],
    ["--routed", "10.30.0.0/24", "--bridge-name", "virbr30"],
])
def test_every_kind_can_be_defined_from_options(db: Path, args: list[str]) -> None:
    r = run_net(db, "net", "define", "n1", *args, "--host", "hv2")
    assert r.code == 0, r.err
    assert r.out == "Network n1 defined on hv2\n"


def test_define_from_an_xml_file(db: Path, tmp_path: Path) -> None:
    f = tmp_path / "net.xml"
    f.write_text("<network><name>fromfile</name><forward mode='nat'/>"
                 "<ip address='10.88.0.1' netmask='255.255.255.0'/></network>")
    r = run_net(db, "net", "define", "--file", str(f), "--all")
    assert r.code == 0, r.err
    assert "fromfile" in r.out and "hv3" in r.out
    f.write_text("<network><name>clash</name>"
                 "<ip address='192.168.122.77' prefix='25'/></network>")
    r = run_net(db, "net", "define", "-f", str(f), "--all")
    assert r.code == 2 and "overlaps network 'default'" in r.err and r.out == ""


@pytest.mark.parametrize("args,message", [
    (["x", "--nat", "192.168.122.0/24", "--all"],
     "--nat: 192.168.122.0/24 overlaps network 'default' (192.168.122.0/24) on hv1"),
    (["x", "--nat", "192.168.0.0/16", "--site", "oregon"],
     "--nat: 192.168.0.0/16 overlaps network 'default'"),
    (["x", "--ovs-bridge", "ovsbr0", "--portgroup", "web,vlan=4095", "--host", "hv2"],
     "--portgroup: VLAN id 4095 is outside 1-4094"),
    (["x", "--ovs-bridge", "ovsbr0", "--portgroup", "web,vlan=0", "--host", "hv2"],
     "--portgroup: VLAN id 0 is outside 1-4094"),
    (["x", "--bridge", "averyveryverylongbridge", "--host", "hv2"],
     "--bridge: 'averyveryverylongbridge' is 23 characters; a Linux interface name has at "
     "most 15"),
    (["x", "--nat", "10.0.0.0/24", "--bridge-name", "virbr-much-too-long", "--host", "hv2"],
     "--bridge-name: 'virbr-much-too-long' is 19 characters"),
    (["x", "--isolated", "10.0.0.1/24", "--host", "hv2"],
     "--isolated: '10.0.0.1/24' has host bits set (did you mean 10.0.0.0/24?)"),
    (["x", "--isolated", "10.0.0.0/33", "--host", "hv2"],
     "--isolated: '10.0.0.0/33' is not an IPv4 network in CIDR form"),
    (["x", "--nat", "10.0.300.0/24", "--host", "hv2"],
     "--nat: '10.0.300.0/24' is not an IPv4 network"),
    (["x", "--nat", "10.0.0.0", "--host", "hv2"], "--nat: '10.0.0.0' is not CIDR"),
    (["x", "--nat", "10.5.0.0/24", "--dhcp-range", "10.6.0.10,10.6.0.20", "--host", "hv2"],
     "--dhcp-range: range 10.6.0.10-10.6.0.20 is outside subnet 10.5.0.0/24"),
    (["x", "--nat", "10.5.0.0/24", "--dhcp-range", "10.5.0.10", "--host", "hv2"],
     "--dhcp-range: '10.5.0.10' does not have the form"),
    (["x", "--nat", "10.5.0.0/24", "--bridge", "br0", "--host", "hv2"],
     "exactly one kind of network"),
    (["x", "--nat", "10.5.0.0/24"], "say where"),
    (["default", "--nat", "10.5.0.0/24", "--host", "hv1"], None),  # conflict: exit 1
])
def test_bad_define_is_refused_and_makes_nothing(db: Path, args: list[str],
                                                 message: str | None) -> None:
    r = run_net(db, "net", "define", *args)
    if message is None:
        assert r.code == 1 and "network 'default' already exists" in r.err
    else:
        assert r.code == 2, r.err
        assert r.err.startswith("virtfleet: error: ") and len(r.err.splitlines()) == 1, r.err
        assert message in r.err, r.err
    assert r.out == "" and "defined" not in r.err


def test_lifecycle_verbs_report_per_host(db: Path) -> None:
    r = run_net(db, "net", "destroy", "default", "--host", "hv1")
    assert r.code == 0 and r.out == "Network default destroyed on hv1\n", r.err
    r = run_net(db, "net", "autostart", "default", "--pod", "or-pod1", "--json")
    assert r.code == 1
    rows = {row["host"]: row for row in r.json()}
    assert rows["hv1"]["ok"] and rows["hv1"]["result"] == "marked autostart"
    assert not rows["hv2"]["ok"] and "has no network 'default'" in rows["hv2"]["result"]
    assert "hv2: not-found" in r.err
    r = run_net(db, "net", "start", "default", "--host", "hv1")
    assert r.code == 1 and "already running" in r.err
    r = run_net(db, "net", "undefine", "default", "--host", "hv2")
    assert r.code == 1 and "has no network 'default'" in r.err
    r = run_net(db, "net", "autostart", "default", "--disable", "--host", "hv1")
    assert r.code == 0 and "autostart disabled" in r.out
    r = run_net(db, "net", "start", "default", "--all", "--host", "hv1")
    assert r.code == 2 and "--all" in r.err


@pytest.mark.parametrize("nic,message", [
    ("bridge=br0,vlan=5000", "--network: vlan '5000' is not an id from 1 to 4094"),
    ("bridge=ovsbr0,virtualport=openvswitch,vlan=10:20",
     "--network: several VLANs make a trunk: add trunk=yes"),
    ("bridge=averyveryverylongbridge", "at most 15 characters"),
    ("hostdev=03:10.1,vlan=10:20,trunk=yes", "an SR-IOV VF takes one VLAN tag, not a trunk"),
])
def test_vm_create_refuses_bad_nics(db: Path, nic: str, message: str) -> None:
    r = run(db, "vm", "create", "vm1", "--host", "hv2", "--memory", "1G", "--vcpus", "1",
            "--pxe", "--network", nic)
    assert r.code == 2 and r.out == "" and len(r.err.splitlines()) == 1, r.err
    assert message in r.err, r.err


def test_failures_are_rows_and_the_summary_says_what_the_output_holds(db: Path) -> None:
    """Regression (issue 10, defect 7): when every host failed, nothing was printed but
    stderr said "results above are partial". Every host now has its row, failed ones too."""
    r = run_net(db, "net", "start", "default", "--pod", "or-pod1")
    assert r.code == 1
    assert r.out.splitlines()[2:] == [
        " hv1    default   failed: conflict: Requested operation is not valid: Network "
        "'default' is already running",
        " hv2    default   failed: not-found: has no network 'default'"], r.out
    assert r.err.splitlines() == [
        "virtfleet: hv1: conflict: Requested operation is not valid: Network 'default' is "
        "already running",
        "virtfleet: hv2: not-found: has no network 'default'",
        "virtfleet: 2 of 2 host(s) failed"], r.err
    # One host: its error line says it all (as virsh does), nothing on stdout.
    r = run_net(db, "net", "start", "default", "--host", "hv2")
    assert (r.code, r.out) == (1, "") and r.err == \
        "virtfleet: hv2: not-found: has no network 'default'\n"
    # A define one host refuses: nothing is defined anywhere, and the table says so per host.
    r = run_net(db, "net", "define", "default", "--isolated", "10.5.0.0/24", "--pod",
                "or-pod1")
    assert r.code == 1
    assert r.out.splitlines()[2:] == [
        " hv1    default   failed: conflict: network 'default' already exists",
        " hv2    default   not defined (hv1 refused)"], r.out
    assert r.err.splitlines() == [
        "virtfleet: hv1: conflict: network 'default' already exists",
        "virtfleet: 1 of 2 host(s) failed"], r.err
    r = run_net(db, "net", "define", "default", "--isolated", "10.5.0.0/24", "--pod",
                "or-pod1", "--json")
    assert r.json() == [
        {"host": "hv1", "network": "default", "ok": False,
         "result": "conflict: network 'default' already exists"},
        {"host": "hv2", "network": "default", "ok": False,
         "result": "not defined (hv1 refused)"}]


def test_undefine_refuses_an_active_network_unless_destroy(db: Path) -> None:
    """Regression (issue 10, defect 5): libvirt turns an active network it undefines into a
    transient one that keeps its subnet; virtfleet said 'undefined'. (The test driver refuses
    by itself; the lab test shows real libvirtd.)"""
    r = run_net(db, "net", "undefine", "default", "--host", "hv1")
    assert (r.code, r.out) == (1, "") and r.err == (
        "virtfleet: hv1: conflict: network 'default' is active; destroy it first (or give "
        "--destroy)\n"), r.err
    r = run_net(db, "net", "undefine", "default", "--host", "hv1", "--destroy")
    assert r.code == 0 and r.out == "Network default destroyed and undefined on hv1\n", r.err
