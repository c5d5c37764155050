"""libvirt networks in the fleet file: validated with the file, applied to every hypervisor of
their pod or site by `apply` (dry pass first), and the network preflight of `host check`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from virtfleet.errors import InvalidInput
from virtfleet.fleet.declared_networks import network_problems
from virtfleet.inventory.fleetfile import parse_fleet
from virtfleet.inventory.networks import NetworkSpec
from virtfleet.virt.host import Host

from .cli import run
from .nodes import node_uri

NAT = {"name": "vmnet", "mode": "nat", "subnet": "10.77.0.0/24",
       "dhcp": [{"start": "10.77.0.10", "end": "10.77.0.99"}]}
ISO = {"name": "backend", "mode": "isolated", "subnet": "10.78.0.0/24"}
OVS = {"name": "ovs", "mode": "bridge", "bridge": "ovsbr0", "ovs": True,
       "portgroups": [{"name": "web", "vlans": [10]},
                      {"name": "all", "vlans": [10, 20], "trunk": True}]}


def fleet(tmp_path: Path) -> dict[str, Any]:
    return {"sites": [{"name": "oregon", "libvirt_networks": [NAT], "pods": [
        {"name": "or-pod1", "libvirt_networks": [ISO, OVS], "hypervisors": [
            {"name": "hv1", "uri": node_uri(tmp_path, "with-networks.xml", "hv1.xml")},
            {"name": "hv2", "uri": node_uri(tmp_path, "empty.xml", "hv2.xml")}]},
        {"name": "or-pod2", "hypervisors": [
            {"name": "hv3", "uri": node_uri(tmp_path, "empty.xml", "hv3.xml")}]}]}]}


def write(tmp_path: Path, data: object) -> Path:
    p = tmp_path / "fleet.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_fleet_file_carries_site_and_pod_networks(tmp_path: Path) -> None:
    f = parse_fleet(fleet(tmp_path))
    site = f.sites[0]
    assert [n.name for n in site.libvirt_networks] == ["vmnet"]
    assert [n.name for n in site.pods[0].libvirt_networks] == ["backend", "ovs"]
    assert site.pods[0].libvirt_networks[1].portgroups[1].vlans == (10, 20)


def _set(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    d = copy.deepcopy(data)
    cur: Any = d
    for key in path[:-1]:
        cur = cur[key]
    cur[path[-1]] = value
    return d


SITE = ("sites", 0, "libvirt_networks", 0)
POD = ("sites", 0, "pods", 0, "libvirt_networks", 1)


@pytest.mark.parametrize("path,value,field,words", [
    ((*SITE, "subnet"), "10.77.0.1/24", "sites[0].libvirt_networks[0].subnet",
     "host bits set"),
    ((*SITE, "subnet"), "10.77.0/24", "sites[0].libvirt_networks[0].subnet", "CIDR"),
    ((*SITE, "dhcp"), [{"start": "10.77.1.10", "end": "10.77.1.20"}],
     "sites[0].libvirt_networks[0].dhcp", "outside subnet 10.77.0.0/24"),
    ((*POD, "bridge"), "ovsbr-much-too-long", "sites[0].pods[0].libvirt_networks[1].bridge",
     "at most 15"),
    ((*POD, "portgroups"), [{"name": "web", "vlans": [4095]}],
     "sites[0].pods[0].libvirt_networks[1].portgroups[0].vlans[0]", "outside 1-4094"),
    ((*POD, "name"), "vmnet", "sites[0].pods[0].libvirt_networks[1].name",
     "duplicate libvirt network 'vmnet' (first at sites[0].libvirt_networks[0].name)"),
    ((*POD, "mode"), "route", "sites[0].pods[0].libvirt_networks[1].subnet",
     "needs a subnet"),
    (("sites", 0, "pods", 0, "libvirt_networks", 0, "subnet"), "10.77.0.128/25",
     "sites[0].pods[0].libvirt_networks[0].subnet", "overlaps network 'vmnet'"),
    ((*SITE, "colour"), "red", "sites[0].libvirt_networks[0].colour", "unknown key"),
])
def test_bad_fleet_networks_name_the_field(tmp_path: Path, path: tuple[Any, ...], value: Any,
                                           field: str, words: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_fleet(_set(fleet(tmp_path), path, value))
    assert exc.value.field == field and words in exc.value.rule, exc.value


def test_apply_dry_run_then_apply_reports_per_host(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    f = write(tmp_path, fleet(tmp_path))
    r = run(db, "apply", "-f", str(f), "--dry-run")
    assert r.code == 0, r.err
    assert "+ network vmnet on hv3: would define, start, autostart" in r.out
    assert "+ network ovs on hv2: would define, start, autostart" in r.out
    assert "network ovs on hv3" not in r.out  # pod networks stay in their pod
    assert "Networks: would change 7 of 7 on 3 hypervisor(s)" in r.out
    assert run(db, "host", "list", "--json").json() == []
    r = run(db, "apply", "-f", str(f), "--json")
    assert r.code == 0, r.err
    rows = {(n["host"], n["network"]): n for n in r.json()["networks"]}
    assert len(rows) == 7 and all(n["ok"] for n in rows.values())
    assert rows[("hv1", "backend")]["changes"] == ["define", "start", "autostart"]


def test_apply_refuses_a_subnet_a_host_already_uses_and_changes_nothing(
        tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    data = _set(fleet(tmp_path), (*SITE, "subnet"), "192.168.0.0/16")
    data = _set(data, (*SITE, "dhcp"), [])
    r = run(db, "apply", "-f", str(write(tmp_path, data)))
    assert r.code == 2 and r.out == ""
    assert r.err == ("virtfleet: error: hv1: network vmnet: libvirt_networks vmnet: "
                     "192.168.0.0/16 overlaps network 'default' (192.168.122.0/24) on hv1\n")
    assert run(db, "host", "list", "--json").json() == []


def test_apply_reports_a_differing_network_without_touching_it(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    data = fleet(tmp_path)
    data["sites"][0]["libvirt_networks"].append(
        {"name": "default", "mode": "nat", "subnet": "192.168.122.0/24", "bridge": "virbr0",
         "dhcp": [{"start": "192.168.122.2", "end": "192.168.122.254"}]})
    r = run(db, "apply", "-f", str(write(tmp_path, data)))
    assert r.code == 0, r.out + r.err  # hv1's default is this network: only autostart
    assert "+ network default on hv1: did autostart" in r.out
    data["sites"][0]["libvirt_networks"][-1]["dhcp"] = []
    r = run(db, "apply", "-f", str(write(tmp_path, data)))
    assert r.code == 1
    assert "! network default on hv1: conflict: network 'default' exists and differs" in r.out


def test_network_preflight(tmp_path: Path) -> None:
    with Host.open(node_uri(tmp_path, "with-networks.xml"), keepalive=False) as h:
        assert network_problems(h) == []  # default active, br0 present
        declared = [NetworkSpec.model_validate(NAT)]
        assert network_problems(h, declared) == [
            "declared network 'vmnet' is not defined (run apply)"]
        h.conn.networkLookupByName("default").destroy()
        h.conn.interfaceLookupByName("br0").destroy(0)
        assert network_problems(h) == [
            "network 'default' is not active; needed by VM on-default",
            "bridge 'br0' is missing; needed by VM on-br0"]
    with Host.open(node_uri(tmp_path, "with-pool.xml"), keepalive=False) as h:
        assert network_problems(h) == [
            "network 'default' is not defined; needed by VM existing"]


def test_host_check_includes_the_network_preflight(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    data = {"sites": [{"name": "oregon", "pods": [{"name": "p", "hypervisors": [
        {"name": "hv1", "uri": node_uri(tmp_path, "with-pool.xml", "hv1.xml")}]}]}]}
    assert run(db, "apply", "-f", str(write(tmp_path, data))).code == 0
    [c] = run(db, "host", "check", "--json").json()
    assert "network 'default' is not defined; needed by VM existing" in c["problems"]
