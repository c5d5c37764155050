"""`virtfleet vol ...` on test-driver hypervisors, as a subprocess: each run opens the node
files afresh, so a test checks what one run did and printed; refusals are one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from .cli import run
from .nodes import node_uri

ON = ["--host", "hv1", "--pool", "images"]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    f = tmp_path / "fleet.yaml"
    f.write_text(yaml.safe_dump({"sites": [{"name": "oregon", "pods": [
        {"name": "or-pod1", "storage": {"type": "netfs", "pool": "pod-nfs",
                                        "source": "filer1.or.example.com:/vol/vms",
                                        "target": "/var/lib/virtfleet/pod"},
         "hypervisors": [
            {"name": "hv1", "uri": node_uri(tmp_path, "storage.xml", "hv1.xml")},
            {"name": "hv2", "uri": node_uri(tmp_path, "storage.xml", "hv2.xml")}]},
        {"name": "or-pod2", "hypervisors": [
            {"name": "hv3", "uri": node_uri(tmp_path, "empty.xml", "hv3.xml")}]}]}]}))
    path = tmp_path / "s.db"
    assert run(path, "apply", "-f", str(f)).code == 0
    return path


def test_list_and_info(db: Path) -> None:
    r = run(db, "vol", "list", *ON, "--json")
    assert r.code == 0, r.err
    assert [(v["name"], v["format"], v["backing_path"]) for v in r.json()] == [
        ("base.raw", "raw", None),
        ("web01.qcow2", "qcow2", "/var/lib/libvirt/images/base.raw")]
    r = run(db, "vol", "info", "/var/lib/libvirt/images/web01.qcow2", *ON, "--json")
    assert r.code == 0, r.err
    got = r.json()
    assert (got["name"], got["capacity_bytes"], got["shared_in_pod"]) == (
        "web01.qcow2", 8 * 2**30, False)


def test_a_volume_on_the_pods_share_is_shared_and_one_on_local_disk_is_not(db: Path) -> None:
    r = run(db, "vol", "info", "db01.qcow2", "--host", "hv1", "--pool", "pod-nfs", "--json")
    assert r.code == 0, r.err
    assert r.json()["shared_in_pod"] is True
    assert r.json()["sharing"] == ("same netfs source filer1.or.example.com:/vol/vms at "
                                   "/var/lib/virtfleet/pod")
    r = run(db, "vol", "disks", "db01", "--host", "hv1", "--json")
    assert r.code == 0, r.err
    assert r.json()["all_shared_in_pod"] is True
    r = run(db, "vol", "disks", "web01", "--host", "hv2", "--json")
    assert r.code == 0, r.err
    assert r.json()["all_shared_in_pod"] is False
    assert r.json()["disks"][0]["sharing"] == "a dir pool is local to its hypervisor"


def test_create_clone_delete(db: Path) -> None:
    r = run(db, "vol", "create", "data1.qcow2", *ON, "--size", "2G", "--json")
    assert r.code == 0, r.err
    assert (r.json()["format"], r.json()["capacity_bytes"]) == ("qcow2", 2 * 2**30)
    r = run(db, "vol", "clone", "base.raw", "copy.raw", *ON, "--json")
    assert r.code == 0, r.err
    assert (r.json()["path"], r.json()["format"]) == ("/var/lib/libvirt/images/copy.raw", "raw")
    r = run(db, "vol", "delete", "web01.qcow2", *ON, "--force")  # web01's disk: see below
    assert r.code == 0 and r.out == "Vol web01.qcow2 deleted\n"


def test_a_backing_file_is_not_deleted_under_its_overlay(db: Path) -> None:
    r = run(db, "vol", "delete", "base.raw", *ON)
    assert r.code == 4
    assert "backs 1 other volume(s) (web01.qcow2); delete those first" in r.err
    r = run(db, "vol", "delete", "base.raw", *ON, "--force")  # never, even when told
    assert r.code == 4 and "backs 1 other volume(s)" in r.err


def test_a_volume_a_vm_has_as_its_disk_is_not_deleted_unless_forced(db: Path) -> None:
    """Regression: `vol delete` removed web01's disk while web01 stayed defined, and said
    "deleted". On a pool the pod shares, a VM on any host of the pod counts."""
    r = run(db, "vol", "delete", "web01.qcow2", *ON)
    assert (r.code, r.out) == (4, "") and r.err == (
        "virtfleet: error: hv1: volume 'web01.qcow2' is a disk of VM web01 on hv1; undefine "
        "the VM first, or give --force to delete it anyway\n"), r.err
    r = run(db, "vol", "delete", "/var/lib/virtfleet/pod/db01.qcow2", "--host", "hv1", "--pool",
            "pod-nfs")
    assert r.code == 4 and "is a disk of VMs db01 on hv1, db01 on hv2;" in r.err, r.err
    r = run(db, "vol", "delete", "web01.qcow2", *ON, "--force")
    assert r.code == 0 and r.out == "Vol web01.qcow2 deleted\n", r.err


@pytest.mark.parametrize(("args", "message"), [
    (["vol", "create", "a/b", *ON, "--size", "1G"], "VOLUME: 'a/b' must be a plain name"),
    (["vol", "create", "big", *ON, "--size", "1T"],
     "--size: 1.00 TiB is more than the 84.00 GiB free in pool 'images'"),
    (["vol", "create", "x", *ON, "--size", "ten"], "--size: 'ten' is not a size"),
    (["vol", "create", "x", *ON, "--size", "1Q"], "--size: unknown unit 'Q'"),
    (["vol", "create", "x", *ON, "--size", "1G", "--format", "vmdk"],
     "--format: 'vmdk' is not one of raw, qcow2"),
    (["vol", "info", "/etc/passwd", *ON], "VOLUME: '/etc/passwd' is not inside pool 'images'"),
    (["vol", "info", "/var/lib/libvirt/images/../../../etc/shadow", *ON],
     "VOLUME: '/var/lib/libvirt/images/../../../etc/shadow' is not inside pool"),
    (["vol", "clone", "base.raw", "../x", *ON], "NEW: '../x' must be a plain name"),
    (["vol", "resize", "base.raw", "1G", *ON], "SIZE: 1073741824 bytes is smaller"),
    (["vol", "resize", "base.raw", "+1T", *ON], "SIZE: growing by 1048576 MiB is more than"),
])
def test_bad_volume_input_is_one_line_exit_2(db: Path, args: list[str], message: str) -> None:
    r = run(db, *args)
    assert r.code == 2 and r.out == "", r.err
    [line] = r.err.strip().splitlines()
    assert line.startswith(f"virtfleet: error: {message}")


def test_download_refuses_to_overwrite_a_local_file(db: Path, tmp_path: Path) -> None:
    there = tmp_path / "there"
    there.write_text("keep me")
    r = run(db, "vol", "download", "base.raw", str(there), *ON)
    assert r.code == 2 and "FILE:" in r.err and there.read_text() == "keep me"
    r = run(db, "vol", "download", "base.raw", str(tmp_path / "no" / "such" / "dir"), *ON)
    assert r.code == 2 and "FILE: directory" in r.err and "does not exist" in r.err
