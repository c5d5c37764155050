"""Hypervisor network files: the chapter's bonding listing, golden trees, parsers that give the
layout back, the layout's rules, and `virtfleet netcfg render` as a user runs it.

Golden trees live in tests/unit/golden/netcfg/<host>/ (the same tree --out writes); after a
deliberate change, rewrite them with VIRTFLEET_UPDATE_GOLDEN=1 and read the diff.
nmstatectl is not packaged for Debian 12, so the nmstate files are checked for nmstate 2's
shape here rather than by nmstatectl itself.
"""

from __future__ import annotations

import configparser
import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from virtfleet.boot.render import GeneratedFile
from virtfleet.errors import InvalidInput, NotFound
from virtfleet.inventory.fleetfile import Fleet, dump_fleet, load_fleet, parse_fleet
from virtfleet.inventory.niclayout import BUILTIN_LAYOUT, NicLayout, host_layout
from virtfleet.netcfg import ifcfg, keyfile, nmstate
from virtfleet.netcfg.render import FORMATS, host_files, render_host

GOLDEN = Path(__file__).parent / "golden" / "netcfg"
FLEET = GOLDEN / "fleet.yaml"
HOSTS = ("hv1.or.example.com", "hv2.or.example.com", "hv3.or.example.com",
         "hv4.or.example.com")


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return load_fleet(FLEET)


def files_of(fleet: Fleet, host: str, fmt: str) -> dict[str, str]:
    _, files = render_host(fleet, host, [fmt])
    return {Path(f.path).name: f.text for f in files}


def golden_tree(host: str, files: list[GeneratedFile]) -> None:
    """The rendered files equal tests/unit/golden/netcfg/<host>/..., file for file."""
    root = GOLDEN / host
    if os.environ.get("VIRTFLEET_UPDATE_GOLDEN") == "1":
        shutil.rmtree(root, ignore_errors=True)
        for f in files:
            (GOLDEN / f.path).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / f.path).write_text(f.text)
    want = {str(p.relative_to(GOLDEN)): p.read_text() for p in root.rglob("*") if p.is_file()}
    got = {f.path: f.text for f in files}
    assert sorted(got) == sorted(want), f"{host}: files differ from the golden tree"
    for path, text in got.items():
        assert text == want[path], f"{path} differs from its golden file"


def expected(layout: NicLayout) -> NicLayout:
    return layout.model_copy(update={"ipmi": None, "management": None}).canonical()


# ---- the chapter's listing 3-12 ----

def test_listing_3_12_bond0_mode_1_miimon_80(fleet: Fleet) -> None:
    files = files_of(fleet, "hv1.or.example.com", "ifcfg")
    assert sorted(files) == ["ifcfg-bond0", "ifcfg-eth0", "ifcfg-eth1"]
    bond = ifcfg.parse_file("ifcfg-bond0", files["ifcfg-bond0"])
    assert bond["DEVICE"] == "bond0" and bond["BONDING_OPTS"] == "mode=1 miimon=80"
    assert (bond["BOOTPROTO"], bond["ONBOOT"]) == ("none", "yes")
    assert (bond["IPADDR"], bond["PREFIX"]) == ("10.1.1.2", "24")  # NETMASK=255.255.255.0
    assert 'BONDING_OPTS="mode=1 miimon=80"\n' in files["ifcfg-bond0"]
    for nic, mac in (("eth0", "00:E0:81:C5:76:0A"), ("eth1", "00:E0:81:C5:73:36")):
        v = ifcfg.parse_file(nic, files[f"ifcfg-{nic}"])
        assert (v["DEVICE"], v["MASTER"], v["SLAVE"], v["HWADDR"]) == (nic, "bond0", "yes", mac)
        assert (v["ONBOOT"], v["BOOTPROTO"], v["USERCTL"]) == ("yes", "none", "no")
        assert "IPADDR" not in v  # a slave holds no address


CHAPTER_LISTING = {
    "ifcfg-bond0": "DEVICE=bond0\nBOOTPROTO=none\nONBOOT=yes\nIPADDR=10.1.1.2\n"
                   'NETMASK=255.255.255.0\nBONDING_OPTS="mode=1 miimon=80 primary=slave"\n',
    "ifcfg-eth0": "DEVICE=eth0\nONBOOT=yes\nBOOTPROTO=none\nUSERCTL=no\nMASTER=bond0\n"
                  "SLAVE=yes\nHWADDR=00:E0:81:C5:76:0A\n",
    "ifcfg-eth1": "DEVICE=eth1\nONBOOT=yes\nBOOTPROTO=none\nUSERCTL=no\nMASTER=bond0\n"
                  "SLAVE=yes\nHWADDR=00:E0:81:C5:73:36\n",
}


def test_the_chapter_listing_parses_to_hv1_once_primary_slave_is_dropped(fleet: Fleet) -> None:
    """Listing 3-12 as printed says primary=slave; primary must name a slave, so it is refused.
    Without it, the listing is exactly hv1's layout."""
    with pytest.raises(InvalidInput) as exc:
        ifcfg.parse_ifcfg(CHAPTER_LISTING)
    assert "primary 'slave' is not one of the bond's interfaces" in str(exc.value)
    fixed = dict(CHAPTER_LISTING, **{"ifcfg-bond0": CHAPTER_LISTING["ifcfg-bond0"].replace(
        " primary=slave", "")})
    assert ifcfg.parse_ifcfg(fixed) == expected(host_layout(fleet, "hv1.or.example.com"))


def test_builtin_layout_is_the_chapters_seven_nics() -> None:
    bonds = {b.name: b for b in BUILTIN_LAYOUT.bonds}
    assert [b.interfaces for b in bonds.values()] == [("eth0", "eth1"), ("eth2", "eth3"),
                                                      ("eth4", "eth5")]
    assert all((b.mode, b.miimon) == ("active-backup", 80) for b in bonds.values())
    assert BUILTIN_LAYOUT.ipmi is not None and len(BUILTIN_LAYOUT.ethernets) == 6  # + IPMI = 7
    assert BUILTIN_LAYOUT.management == "bond0"


# ---- golden trees and round trips ----

@pytest.mark.parametrize("host", HOSTS)
def test_golden_tree(fleet: Fleet, host: str) -> None:
    _, files = render_host(fleet, host)
    golden_tree(host, files)


@pytest.mark.parametrize("host", HOSTS)
def test_round_trip_ifcfg_and_keyfile(fleet: Fleet, host: str) -> None:
    """render -> parse gives the same model back (IPMI aside: no file carries it)."""
    layout = host_layout(fleet, host)
    assert ifcfg.parse_ifcfg(ifcfg.render_ifcfg(layout)) == expected(layout)
    assert keyfile.parse_keyfiles(keyfile.render_keyfiles(host, layout)) == expected(layout)


def test_inventory_address_lands_on_the_management_bond(fleet: Fleet) -> None:
    layout = host_layout(fleet, "hv2.or.example.com")  # built-in layout, provision.ip
    [addr] = layout.addresses
    assert (addr.interface, str(addr.address), str(addr.gateway)) == ("bond0", "10.1.1.21/24",
                                                                      "10.1.1.1")
    hv4 = host_layout(fleet, "hv4.or.example.com")
    assert [(a.interface, str(a.gateway)) for a in hv4.addresses] == [("bond0", "10.1.1.1"),
                                                                      ("ovs-vm", "None")]


def test_keyfiles_parse_with_configparser_and_hold_the_required_keys(fleet: Fleet) -> None:
    for host in HOSTS:
        for name, text in files_of(fleet, host, "keyfile").items():
            cp = configparser.ConfigParser(interpolation=None)
            cp.read_string(text)
            conn = cp["connection"]
            for key in ("id", "uuid", "type", "interface-name"):
                assert conn.get(key), f"{host} {name}: [connection] {key}"
            if "master" in conn and conn["type"] != "ovs-interface":  # that one holds the IP
                assert conn["slave-type"] in ("bond", "bridge", "ovs-port", "ovs-bridge")
                assert not cp.has_section("ipv4"), f"{name}: a port holds no address"
            elif conn["type"] not in ("ovs-bridge", "ovs-port"):
                assert cp["ipv4"]["method"] in ("manual", "disabled")
    bond = configparser.ConfigParser(interpolation=None)
    bond.read_string(files_of(fleet, "hv2.or.example.com", "keyfile")["bond0.nmconnection"])
    assert dict(bond["bond"]) == {"mode": "active-backup", "miimon": "80"}
    assert bond["ipv4"]["address1"] == "10.1.1.21/24" and bond["ipv4"]["gateway"] == "10.1.1.1"


def test_keyfile_uuids_are_stable_and_distinct(fleet: Fleet) -> None:
    layout = host_layout(fleet, "hv3.or.example.com")
    first = keyfile.render_keyfiles("hv3.or.example.com", layout)
    assert first == keyfile.render_keyfiles("hv3.or.example.com", layout)
    other = keyfile.render_keyfiles("hv2.or.example.com", layout)
    assert first["bond0.nmconnection"] != other["bond0.nmconnection"]  # UUIDs differ per host


NMSTATE_TYPES = {"ethernet", "bond", "vlan", "linux-bridge", "ovs-bridge", "ovs-interface"}


@pytest.mark.parametrize("host", HOSTS)
def test_nmstate_has_nmstate_2_shape(fleet: Fleet, host: str) -> None:
    """What nmstatectl would check first: types, references, ports, routes (nmstatectl itself
    is not packaged for Debian 12)."""
    [text] = files_of(fleet, host, "nmstate").values()
    state: dict[str, Any] = yaml.safe_load(text)
    ifaces = state["interfaces"]
    names = {i["name"] for i in ifaces}
    for i in ifaces:
        assert i["type"] in NMSTATE_TYPES and i["state"] == "up"
        if i["type"] == "bond":
            agg = i["link-aggregation"]
            assert set(agg["port"]) <= names and agg["mode"] in ("active-backup", "802.3ad",
                                                                 "balance-tlb")
            assert isinstance(agg["options"]["miimon"], int)
        if i["type"] == "vlan":
            assert i["vlan"]["base-iface"] in names and 1 <= i["vlan"]["id"] <= 4094
        if i["type"] in ("linux-bridge", "ovs-bridge"):
            assert {p["name"] for p in i["bridge"]["port"]} <= names
        if i.get("ipv4", {}).get("enabled"):
            assert all(set(a) == {"ip", "prefix-length"} for a in i["ipv4"]["address"])
    for route in state.get("routes", {}).get("config", []):
        assert route["next-hop-interface"] in names and route["destination"] == "0.0.0.0/0"
    assert yaml.safe_dump(state, sort_keys=False) == text  # plain data, nothing custom


def test_nmstate_vlans_and_bridges(fleet: Fleet) -> None:
    state = nmstate.nmstate_state(host_layout(fleet, "hv3.or.example.com"))
    by_name = {i["name"]: i for i in state["interfaces"]}
    assert by_name["bond2.100"]["vlan"] == {"base-iface": "bond2", "id": 100}
    assert by_name["br100"]["bridge"] == {"options": {"stp": {"enabled": True}},
                                          "port": [{"name": "bond2.100"}]}
    assert by_name["bond0"]["link-aggregation"]["options"] == {"miimon": 80, "primary": "eth0"}
    assert by_name["eth2"]["mtu"] == 9000


def test_the_ifcfg_parser_reads_names_and_netmasks() -> None:
    files = {"ifcfg-bond0": 'DEVICE=bond0\nBONDING_OPTS="mode=active-backup miimon=100 '
                            'primary=eth1"\nIPADDR=10.0.0.5\nNETMASK=255.255.0.0\n',
             "ifcfg-eth0": "DEVICE=eth0\nMASTER=bond0\nSLAVE=yes\n",
             "ifcfg-eth1": "# a comment\nDEVICE=eth1\nMASTER=bond0\nSLAVE=yes\n"}
    layout = ifcfg.parse_ifcfg(files)
    [bond] = layout.bonds
    assert (bond.mode, bond.miimon, bond.primary) == ("active-backup", 100, "eth1")
    assert str(layout.addresses[0].address) == "10.0.0.5/16"


# ---- rules: one line naming the field, nothing made ----

def _hv3_layout(data: dict[str, Any]) -> dict[str, Any]:
    layout: dict[str, Any] = data["sites"][0]["pods"][1]["nic_layout"]
    return layout


POD2 = "sites[0].pods[1].nic_layout"
BAD_LAYOUTS = [
    ("vlan id 4095", lambda lay: lay["vlans"][0].update(id=4095),
     f"{POD2}.vlans[0].id", "outside 1-4094"),
    ("vlan id 0", lambda lay: lay["vlans"][0].update(id=0),
     f"{POD2}.vlans[0].id", "outside 1-4094"),
    ("bridge name of 16", lambda lay: lay["bridges"][0].update(name="br-vm-trunk-1000"),
     f"{POD2}.bridges[0].name", "IFNAMSIZ"),
    ("slave in two bonds", lambda lay: lay["bonds"][1].update(interfaces=["eth2", "eth1"]),
     f"{POD2}.bonds[1].interfaces[1]", "already in bond 'bond0'"),
    ("unknown parent", lambda lay: lay["vlans"][1].update(parent="bond9"),
     f"{POD2}.vlans[1].parent", "unknown interface 'bond9'"),
    ("unknown bridge port", lambda lay: lay["bridges"][1].update(ports=["bond2.300"]),
     f"{POD2}.bridges[1].ports[0]", "unknown interface 'bond2.300'"),
    ("duplicate name", lambda lay: lay["bridges"][1].update(name="bond2.100"),
     f"{POD2}.bridges[1].name", "duplicate interface name 'bond2.100'"),
    ("bad address", lambda lay: lay.update(addresses=[{"interface": "br200",
                                                       "address": "10.2.0.300/24"}]),
     f"{POD2}.addresses[0].address", "IPv4"),
    ("bad prefix", lambda lay: lay.update(addresses=[{"interface": "br200",
                                                      "address": "10.2.0.3/33"}]),
     f"{POD2}.addresses[0].address", "IPv4"),
    ("network address", lambda lay: lay.update(addresses=[{"interface": "br200",
                                                           "address": "10.2.0.0/24"}]),
     f"{POD2}.addresses[0].address", "network or broadcast"),
    ("address on a slave", lambda lay: lay.update(addresses=[{"interface": "eth4",
                                                              "address": "10.2.0.3/24"}]),
     f"{POD2}.addresses[0].interface", "is in bond 'bond2'"),
    ("gateway elsewhere", lambda lay: lay.update(addresses=[{
        "interface": "br200", "address": "10.2.0.3/24", "gateway": "10.3.0.1"}]),
     f"{POD2}.addresses[0].gateway", "not another host of 10.2.0.0/24"),
    ("bond mode 7", lambda lay: lay["bonds"][2].update(mode=7),
     f"{POD2}.bonds[2].mode", "does not exist"),
    ("primary not a slave", lambda lay: lay["bonds"][0].update(primary="eth3"),
     f"{POD2}.bonds[0]", "primary 'eth3' is not one of"),
    ("unknown key", lambda lay: lay["bonds"][0].update(slaves=["eth0"]),
     f"{POD2}.bonds[0].slaves", "unknown key"),
]


@pytest.mark.parametrize("what,change,field,rule", BAD_LAYOUTS, ids=[b[0] for b in BAD_LAYOUTS])
def test_bad_layouts_are_refused_naming_the_field(what: str, change: Any, field: str,
                                                  rule: str) -> None:
    data = yaml.safe_load(FLEET.read_text())
    change(_hv3_layout(data))
    with pytest.raises(InvalidInput) as exc:
        parse_fleet(data)
    assert exc.value.field == field, str(exc.value)
    assert rule in exc.value.rule and "\n" not in str(exc.value)


def test_shared_layouts_hold_no_host_addresses() -> None:
    data = yaml.safe_load(FLEET.read_text())
    _hv3_layout(data)["addresses"] = [{"interface": "bond1", "address": "192.168.10.3/24"}]
    with pytest.raises(InvalidInput) as exc:
        parse_fleet(data)
    assert exc.value.field == f"{POD2}.addresses" and "shared layout" in exc.value.rule


def test_static_addresses_are_unique_across_the_fleet() -> None:
    data = yaml.safe_load(FLEET.read_text())
    hv4 = data["sites"][0]["pods"][1]["hypervisors"][1]["nic_layout"]
    hv4["addresses"][0]["address"] = "10.1.1.23/24"  # hv3's provision.ip
    with pytest.raises(InvalidInput) as exc:
        parse_fleet(data)
    assert exc.value.field == ("sites[0].pods[1].hypervisors[1].nic_layout.addresses[0]"
                               ".address")
    assert "provision.ip of 'hv3.or.example.com'" in exc.value.rule


def test_layouts_survive_dump_and_load(fleet: Fleet) -> None:
    again = parse_fleet(yaml.safe_load(dump_fleet(fleet)))
    assert again == fleet
    assert host_layout(again, "hv3.or.example.com") == host_layout(fleet, "hv3.or.example.com")


def test_layout_must_agree_with_the_install_bond(fleet: Fleet) -> None:
    data = yaml.safe_load(FLEET.read_text())
    data["sites"][0]["pods"][0]["hypervisors"][1]["provision"]["bond"]["interfaces"] = [
        "eth2", "eth3"]
    with pytest.raises(InvalidInput) as exc:
        render_host(parse_fleet(data), "hv2.or.example.com")
    assert exc.value.field == "sites[0].pods[0].hypervisors[1].provision.bond"
    assert "(the built-in layout); they must agree" in exc.value.rule


def test_unknown_host_and_format() -> None:
    fleet = parse_fleet(yaml.safe_load(FLEET.read_text()))
    with pytest.raises(NotFound):
        render_host(fleet, "hv9.or.example.com")
    with pytest.raises(InvalidInput) as exc:
        host_files("hv1", BUILTIN_LAYOUT, ["netplan"])
    assert exc.value.field == "formats"


def test_parsers_refuse_files_that_break_the_rules() -> None:
    bad_vlan = {"ifcfg-eth0": "DEVICE=eth0\n",
                "ifcfg-eth0.5000": "DEVICE=eth0.5000\nVLAN=yes\nPHYSDEV=eth0\nVLAN_ID=5000\n"}
    with pytest.raises(InvalidInput, match="outside 1-4094"):
        ifcfg.parse_ifcfg(bad_vlan)
    with pytest.raises(InvalidInput, match="is not KEY=value"):
        ifcfg.parse_ifcfg({"ifcfg-x": "DEVICE=x\nrm -rf /\n"})
    with pytest.raises(InvalidInput, match=r"\[connection\] uuid"):
        keyfile.parse_keyfiles({"a.nmconnection": "[connection]\nid=a\ntype=ethernet\n"
                                                  "interface-name=a\n"})


# ---- the CLI, as a user runs it ----

def virtfleet(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`virtfleet ARGS` in a subprocess, as a user runs it."""
    env = {**os.environ, "VIRTFLEET_DB": str(tmp / "store.db")}
    env.pop("COLUMNS", None)
    return subprocess.run([sys.executable, "-m", "virtfleet.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_cli_prints_the_files(tmp_path: Path) -> None:
    p = virtfleet(tmp_path, "netcfg", "render", "hv1.or.example.com", "--fleet", str(FLEET),
                  "--format", "ifcfg")
    assert p.returncode == 0, p.stderr
    assert "==> hv1.or.example.com/ifcfg/ifcfg-bond0 <==\n" in p.stdout
    assert 'BONDING_OPTS="mode=1 miimon=80"' in p.stdout and "keyfile" not in p.stdout


def test_cli_writes_the_tree_all_at_once(tmp_path: Path) -> None:
    out = tmp_path / "net"
    p = virtfleet(tmp_path, "netcfg", "render", "hv3.or.example.com", "-f", str(FLEET),
                  "--out", str(out), "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert {f["kind"] for f in doc["files"]} == set(FORMATS)
    assert any("ipmi" in n for n in doc["notes"])
    bond = out / "hv3.or.example.com" / "ifcfg" / "ifcfg-bond0"
    assert "IPADDR=10.1.1.23" in bond.read_text()
    key = out / "hv3.or.example.com" / "keyfile" / "bond0.nmconnection"
    assert key.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".net")) == []


@pytest.mark.parametrize("what,change,field,rule", BAD_LAYOUTS[:7],
                         ids=[b[0] for b in BAD_LAYOUTS[:7]])
def test_cli_refuses_bad_input_and_writes_nothing(tmp_path: Path, what: str, change: Any,
                                                  field: str, rule: str) -> None:
    data = yaml.safe_load(FLEET.read_text())
    change(_hv3_layout(data))
    bad = tmp_path / "fleet.yaml"
    bad.write_text(yaml.safe_dump(data))
    out = tmp_path / "net"
    p = virtfleet(tmp_path, "netcfg", "render", "hv3.or.example.com", "-f", str(bad),
                  "--out", str(out))
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and p.stderr.startswith(f"virtfleet: error: {field}: ")
    assert rule in p.stderr and "Traceback" not in p.stderr
    assert not out.exists() and sorted(x.name for x in tmp_path.iterdir()) == ["fleet.yaml"]


def test_cli_from_the_store_renders_the_builtin_layout(tmp_path: Path) -> None:
    data = copy.deepcopy(yaml.safe_load(FLEET.read_text()))
    simple = {"sites": [{"name": s["name"], "pods": [
        {"name": p["name"], "hypervisors": [{"name": h["name"], "uri": h["uri"]}
                                            for h in p["hypervisors"]]}
        for p in s["pods"]]} for s in data["sites"]]}
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(yaml.safe_dump(simple))
    assert virtfleet(tmp_path, "apply", "-f", str(inventory)).returncode == 0
    p = virtfleet(tmp_path, "netcfg", "render", "hv2.or.example.com", "--format", "nmstate")
    assert p.returncode == 0, p.stderr
    assert "name: br-vm" in p.stdout and "no static address" in p.stderr
    missing = virtfleet(tmp_path, "netcfg", "render", "hv9.or.example.com")
    assert missing.returncode == 3 and "no hypervisor 'hv9.or.example.com'" in missing.stderr
