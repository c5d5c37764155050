"""Pool lifecycle, pod-shared pools and the storage preflight on test-driver hypervisors, and
`virtfleet pool ...` as a subprocess (each run opens the node files afresh, so a CLI test
checks what one run did and printed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from virtfleet.errors import Conflict, InvalidInput, NotFound
from virtfleet.fleet.podstorage import ensure_pod_pool, judge_sharing, pod_pool
from virtfleet.fleet.storage_check import host_check_with_storage, storage_by_host, storage_check_of
from virtfleet.inventory.fleetfile import PodStorage, load_fleet
from virtfleet.inventory.store import Store
from virtfleet.virt import pools
from virtfleet.virt.host import Host
from virtfleet.xml.storage import Volume, pool_definition

from .cli import run
from .nodes import node_uri

NFS = PodStorage(type="netfs", source="filer1.or.example.com:/vol/vms",
                 target="/var/lib/virtfleet/pod", pool="pod-nfs")


@pytest.fixture
def host(tmp_path: Path):  # type: ignore[no-untyped-def]
    with Host.open(node_uri(tmp_path, "storage.xml"), keepalive=False, label="hv1") as h:
        yield h


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    """A store with two hypervisors of one pod whose storage is the NFS share both mount."""
    f = tmp_path / "fleet.yaml"
    f.write_text(yaml.safe_dump({"sites": [{"name": "oregon", "pods": [
        {"name": "or-pod1", "storage": NFS.model_dump(), "hypervisors": [
            {"name": "hv1", "uri": node_uri(tmp_path, "storage.xml", "hv1.xml")},
            {"name": "hv2", "uri": node_uri(tmp_path, "storage.xml", "hv2.xml")}]},
        {"name": "or-pod2", "hypervisors": [
            {"name": "hv3", "uri": node_uri(tmp_path, "empty.xml", "hv3.xml")}]}]}]}))
    db = tmp_path / "s.db"
    assert run(db, "apply", "-f", str(f)).code == 0
    return db


def test_define_build_start_autostart_refresh_destroy_undefine(host: Host,
                                                               tmp_path: Path) -> None:
    doc = pool_definition("dir", "scratch", target=str(tmp_path / "scratch"))
    made = pools.define_pool(host, doc)
    assert (made.state, made.persistent, made.autostart) == ("inactive", True, False)
    with pytest.raises(Conflict, match="already exists"):
        pools.define_pool(host, doc)
    pools.build_pool(host, "scratch")
    assert pools.start_pool(host, "scratch").active
    with pytest.raises(Conflict, match="already active"):
        pools.start_pool(host, "scratch")
    assert pools.set_autostart(host, "scratch", True).autostart
    assert pools.refresh_pool(host, "scratch").active
    with pytest.raises(Conflict, match="destroy it first"):
        pools.undefine_pool(host, "scratch")
    assert pools.destroy_pool(host, "scratch").state == "inactive"
    pools.undefine_pool(host, "scratch")
    with pytest.raises(NotFound, match="has no storage pool 'scratch'"):
        pools.pool_info(host, "scratch")


def test_volumes_listed_and_a_backing_file_is_not_deleted_under_its_overlay(host: Host) -> None:
    names = [v.name for v in pools.list_volumes(host, "images")]
    assert names == ["base.raw", "web01.qcow2"]
    info = pools.volume_info(host, "images", "web01.qcow2")
    assert (info.format, info.backing_path) == ("qcow2", "/var/lib/libvirt/images/base.raw")
    with pytest.raises(Conflict, match="backs 1 other volume"):
        pools.delete_volume_named(host, "images", "base.raw")
    pools.delete_volume_named(host, "images", "web01.qcow2")
    pools.delete_volume_named(host, "images", "base.raw")
    assert pools.list_volumes(host, "images") == []


def test_resize_refuses_shrinking_and_growth_beyond_free_space_before_libvirt(
        host: Host) -> None:
    with pytest.raises(InvalidInput, match="shrinking loses data"):
        pools.resize_volume(host, "images", "base.raw", 2**30)
    with pytest.raises(InvalidInput, match="MiB free in pool 'images'"):
        pools.resize_volume(host, "images", "base.raw", 2**41)
    with pytest.raises(InvalidInput, match="without '/'"):
        pools.volume_info(host, "images", "../etc/passwd")


def test_pod_pool_is_made_once_and_a_different_pool_of_that_name_is_refused(
        tmp_path: Path) -> None:
    with Host.open(node_uri(tmp_path, "empty.xml"), keepalive=False, label="hv9") as h:
        want = pod_pool("or-pod1", PodStorage(type="dir", target=str(tmp_path / "pod")))
        assert ensure_pod_pool(h, want) == "defined, started, autostart"
        assert ensure_pod_pool(h, want) == "already in place"
        other = pod_pool("or-pod1", PodStorage(type="dir", target=str(tmp_path / "else")))
        with pytest.raises(Conflict, match="exists with another source"):
            ensure_pod_pool(h, other)


def test_sharing_needs_the_same_source_active_on_every_other_host(host: Host) -> None:
    nfs = pools.pool_info(host, "pod-nfs")
    images = pools.pool_info(host, "images")
    mine = pools.list_pools(host)
    assert judge_sharing(nfs, NFS, {"hv2": mine, "hv3": mine}).shared
    verdict = judge_sharing(nfs, NFS, {"hv2": mine, "hv3": [images]})
    assert not verdict.shared and verdict.basis == "not on hv3"
    assert judge_sharing(nfs, NFS, {"hv2": None}).basis == "hv2 did not answer"
    assert "local to its hypervisor" in judge_sharing(images, NFS, {"hv2": mine}).basis


def test_storage_check_finds_the_pod_pool_writable(host: Host) -> None:
    ok = storage_check_of(host, NFS, "or-pod1")
    assert (ok.pod_pool, ok.pod_pool_ok, ok.problems) == ("pod-nfs", True, ())
    pools.destroy_pool(host, "pod-nfs")
    down = storage_check_of(host, NFS, "or-pod1")
    assert not down.ok and down.problems == ("pod pool pod-nfs is inactive (NFS not mounted)",)
    missing = storage_check_of(host, PodStorage(type="dir", target="/srv"), "or-pod9")
    assert "pod pool or-pod9-shared is not defined" in missing.problems[0]


def test_volumes_made_by_other_tools_are_found_even_with_names_virtfleet_would_not_make(
        host: Host) -> None:
    vol = Volume()
    vol.name, vol.capacity_bytes, vol.format = "ubuntu 22.04+.img", 2**20, "raw"
    host.conn.storagePoolLookupByName("images").createXML(vol.to_xml(), 0)  # as virsh would
    assert pools.volume_info(host, "images", "ubuntu 22.04+.img").capacity_bytes == 2**20
    with pytest.raises(InvalidInput, match="not a valid name"):
        pools.check_volume_name("VOLUME", "ubuntu 22.04+.img")


def test_host_check_carries_the_storage_problems(host: Host, tmp_path: Path) -> None:
    f = tmp_path / "f.yaml"
    f.write_text(yaml.safe_dump({"sites": [{"name": "oregon", "pods": [
        {"name": "or-pod1", "storage": NFS.model_dump(), "hypervisors": [
            {"name": "hv1", "uri": node_uri(tmp_path, "empty.xml", "hv1.xml")}]}]}]}))
    with Store(f"sqlite:///{tmp_path / 'c.db'}") as store:
        store.apply(load_fleet(f))
        work = host_check_with_storage(storage_by_host(store))
    assert work(host).problems == ()  # hv1's pod pool is there and writable
    pools.destroy_pool(host, "pod-nfs")
    assert work(host).problems[-1] == "pod pool pod-nfs is inactive (NFS not mounted)"


# -- the CLI -----------------------------------------------------------------------------------

def test_pool_list_and_info_fleet_wide(fleet: Path) -> None:
    r = run(fleet, "pool", "list", "--json")
    assert r.code == 0, r.err
    got = {(p["host"], p["name"]) for p in r.json()}
    assert got == {("hv1", "images"), ("hv1", "pod-nfs"), ("hv2", "images"), ("hv2", "pod-nfs")}
    r = run(fleet, "pool", "info", "pod-nfs", "--pod", "or-pod1", "--json")
    assert r.code == 0, r.err
    assert [p["source"] for p in r.json()] == ["filer1.or.example.com:/vol/vms"] * 2
    r = run(fleet, "pool", "info", "pod-nfs", "--host", "hv3")
    assert r.code == 1 and "hv3: not-found: has no storage pool 'pod-nfs'" in r.err


def test_pool_define_on_a_pod_gives_a_result_per_host(fleet: Path, tmp_path: Path) -> None:
    r = run(fleet, "pool", "define", "vg0", "--type", "logical", "--source-dev", "/dev/sdb",
            "--pod", "or-pod1", "--json")
    assert r.code == 0, r.err
    assert [(p["host"], p["type"], p["target"], p["state"]) for p in r.json()] == [
        ("hv1", "logical", "/dev/vg0", "inactive"), ("hv2", "logical", "/dev/vg0", "inactive")]
    xml = tmp_path / "p.xml"
    xml.write_text(pool_definition("dir", "scratch", target="/srv/scratch").to_xml())
    r = run(fleet, "pool", "define", "--xml", str(xml), "--all")
    assert r.code == 0, r.err
    assert r.out.count("scratch   dir    inactive") == 3
    xml.write_text("<pool type='fs'><name>x</name><source><device path='sdb'/></source>"
                   "<target><path>/srv/x</path></target></pool>")
    r = run(fleet, "pool", "define", "--xml", str(xml), "--all")
    assert r.code == 2 and "--xml <source><device>: 'sdb' must be an absolute path" in r.err
    xml.write_text("<pool type='zfs'><name>x</name></pool>")
    r = run(fleet, "pool", "define", "--xml", str(xml), "--all")
    assert r.code == 2 and "--xml: pool type 'zfs' is not one of" in r.err


def test_pool_verbs_report_each_host(fleet: Path) -> None:
    r = run(fleet, "pool", "destroy", "pod-nfs", "--all", "--json")
    assert r.code == 1
    assert {(x["host"], x["ok"]) for x in r.json()} == {("hv1", True), ("hv2", True),
                                                         ("hv3", False)}
    r = run(fleet, "pool", "autostart", "images", "--pod", "or-pod1")
    assert r.code == 0 and r.out.count("autostart on") == 2
    r = run(fleet, "pool", "refresh", "images", "--host", "hv1")
    assert r.code == 0 and "refreshed" in r.out


def test_pool_apply_pod_and_check(fleet: Path) -> None:
    r = run(fleet, "pool", "apply-pod", "--all", "--json")
    assert r.code == 0, r.err
    assert [(x["host"], x["pool"], x["result"]) for x in r.json()] == [
        ("hv1", "pod-nfs", "autostart"), ("hv2", "pod-nfs", "autostart")]
    r = run(fleet, "pool", "check", "--json")
    assert r.code == 0, r.err
    assert [(c["host"], c["pod_pool_ok"], c["selinux"]) for c in r.json()] == [
        ("hv1", True, "none"), ("hv2", True, "none"), ("hv3", None, "none")]


@pytest.mark.parametrize(("args", "message"), [
    (["pool", "define", "p", "--type", "zfs", "--target", "/x", "--all"],
     "--type: 'zfs' is not one of dir, fs, netfs, logical, iscsi, mpath, disk"),
    (["pool", "define", "p", "--type", "dir", "--target", "rel/dir", "--all"],
     "--target: 'rel/dir' must be an absolute path"),
    (["pool", "define", "p", "--type", "dir", "--target", "/srv/../etc", "--all"],
     "--target: '/srv/../etc' must not contain '..'"),
    (["pool", "define", "p", "--type", "dir", "--target", "/srv"],
     "--host/--pod/--site/--group/--all: say which hypervisors to change"),
    (["pool", "start", "a/b", "--all"], "NAME: 'a/b' is not a valid name"),
])
def test_bad_pool_input_is_one_line_exit_2(fleet: Path, args: list[str], message: str) -> None:
    r = run(fleet, *args)
    assert r.code == 2 and r.out == ""
    [line] = r.err.strip().splitlines()
    assert line.startswith(f"virtfleet: error: {message}")
