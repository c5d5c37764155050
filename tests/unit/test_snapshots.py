"""Snapshots on the test driver: the chapter's listing 3-13, and what must be refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from lxml import etree
from lxml.builder import E

from virtfleet.cli import snapshot as snapshot_cli
from virtfleet.cli.fields import option_for
from virtfleet.errors import Conflict, InvalidInput, NotFound
from virtfleet.virt.guest import Guest
from virtfleet.virt.host import Host
from virtfleet.virt.snapshots import Snapshots

from .cli import run
from .nodes import node_uri


@pytest.fixture
def snaps(tmp_path: Path) -> Snapshots:
    host = Host.open(node_uri(tmp_path, "two-vms.xml"))
    return Snapshots(Guest.lookup(host, "vm1.example.com"))


def test_listing_3_13(snaps: Snapshots) -> None:
    first = snaps.create()  # virsh names it after the time, e.g. 1407102907
    assert first.isdigit()
    info = snaps.info(None)  # snapshot-info --current
    assert (info.name, info.domain, info.current, info.state, info.location, info.parent,
            info.children) == (first, "vm1.example.com", True, "running", "internal", None, 0)
    assert f"<name>{first}</name>" in snaps.dumpxml(first)
    assert snaps.revert(None) == first  # snapshot-revert --current
    assert snaps.delete(None) == first  # snapshot-delete --current
    assert snaps.list() == []
    with pytest.raises(NotFound, match="no current snapshot"):
        snaps.info(None)


def test_tree_children_and_delete(snaps: Snapshots) -> None:
    snaps.create("base", "before the code deployment")
    snaps.create("deploy-1")
    snaps.revert("base")
    snaps.create("deploy-2")
    tree = [(i.name, i.parent) for i in snaps.list()]
    assert tree[0] == ("base", None)
    assert sorted(tree[1:]) == [("deploy-1", "base"), ("deploy-2", "base")]
    assert snaps.info("base").descendants == 2
    assert snaps.info("base").description == "before the code deployment"
    snaps.delete("base")  # children kept, re-parented
    assert sorted(i.name for i in snaps.list()) == ["deploy-1", "deploy-2"]
    snaps.create("leaf")  # child of deploy-2 (current)
    snaps.delete("deploy-2", children=True)
    assert [i.name for i in snaps.list()] == ["deploy-1"]
    with pytest.raises(NotFound, match="no snapshot 'nope'"):
        snaps.revert("nope")


def test_bad_names_and_raw_disks_are_refused(tmp_path: Path) -> None:
    host = Host.open(node_uri(tmp_path, "empty.xml"))
    dom = E.domain(E.name("rawvm"), E.memory("65536"), E.vcpu("1"), E.os(E.type("hvm")),
                   E.devices(E.disk(E.driver(name="qemu", type="raw"),
                                    E.source(file="/pool/rawvm.img"), E.target(dev="vda"),
                                    type="file", device="disk")), type="test")
    host.define_domain(etree.tostring(dom, encoding="unicode"))
    snaps = Snapshots(Guest.lookup(host, "rawvm"))
    with pytest.raises(Conflict, match="disk vda is raw; internal snapshots need qcow2"):
        snaps.create("x")
    assert snaps.list() == []
    with pytest.raises(InvalidInput) as exc:
        snaps.create("bad name")
    assert exc.value.field == "name" and option_for("name", snapshot_cli.FLAGS) == "--name"


def test_cli_words(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    p = tmp_path / "fleet.yaml"
    p.write_text(yaml.safe_dump({"sites": [{"name": "oregon", "pods": [
        {"name": "or-pod1", "hypervisors": [
            {"name": "hv1", "uri": node_uri(tmp_path, "two-vms.xml", "hv1.xml")}]}]}]}))
    assert run(db, "apply", "-f", str(p)).code == 0
    r = run(db, "snapshot", "create", "vm1.example.com", "--name", "before-deploy")
    assert r.code == 0 and r.out == "Domain snapshot before-deploy created\n"
    # each CLI call is a fresh test-driver hypervisor, so no snapshot survives to the next:
    r = run(db, "snapshot", "revert", "vm1.example.com", "--current")
    assert r.code == 3 and r.err.endswith("vm1.example.com: no current snapshot\n")
    r = run(db, "snapshot", "revert", "vm1.example.com")
    assert r.code == 2 and "--current" in r.err
    r = run(db, "snapshot", "list", "vm1.example.com", "--json")
    assert r.code == 0 and r.json() == []
