"""Storage on real lab hypervisors: a dir pool, an fs pool on a loop-mounted XFS, volumes made,
cloned (reflink on XFS), resized, uploaded, downloaded and deleted; a pod's shared pool on every
hypervisor of the pod; qcow2 -> raw -> qcow2 checked with `qemu-img compare`.

The lab daemons live in private mount namespaces, so the XFS is not mounted here: the loop
device (in the shared /dev) is handed to libvirt as an fs pool, and the daemon mounts it in its
own namespace on `pool start` (and unmounts it on `pool destroy`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import REQUIRE_ENV, LabFixture
from tests.unit.cli import Result, run
from tests.unit.tools import require_tool

pytestmark = pytest.mark.integration


def ok(r: Result) -> Result:
    assert r.code == 0, f"exit {r.code}\n{r.out}\n{r.err}"
    return r


@pytest.fixture
def db(tmp_path: Path, lab: LabFixture) -> Path:
    path = tmp_path / "store.db"
    ok(run(path, "apply", "-f", str(lab.fleet_file)))
    return path


def _forget(db: Path, host: str, pool: str) -> None:
    """Stop and undefine a pool a test made, whatever state it was left in."""
    run(db, "pool", "destroy", pool, "--host", host)
    run(db, "pool", "undefine", pool, "--host", host)


@pytest.fixture
def loop_xfs(tmp_path: Path) -> Iterator[str]:
    """A loop device holding a fresh XFS (300 MiB is mkfs.xfs's minimum)."""
    losetup = require_tool("losetup", "mount", REQUIRE_ENV)
    mkfs = require_tool("mkfs.xfs", "xfsprogs", REQUIRE_ENV)
    backing = tmp_path / "xfs.img"
    with backing.open("wb") as f:
        f.truncate(320 * 2**20)
    dev = subprocess.run([losetup, "--find", "--show", str(backing)], capture_output=True,
                         text=True, check=True).stdout.strip()
    try:
        subprocess.run([mkfs, "-q", dev], check=True)
        yield dev
    finally:
        subprocess.run([losetup, "-d", dev], check=False)


def test_dir_pool_lifecycle_and_volumes(lab: LabFixture, db: Path, tmp_path: Path) -> None:
    hv = lab.hosts[0].name
    pool = f"vfst-dir-{os.getpid()}"
    target = tmp_path / "dirpool"
    on = ["--host", hv, "--pool", pool]
    try:
        ok(run(db, "pool", "define", pool, "--type", "dir", "--target", str(target),
               "--host", hv))
        ok(run(db, "pool", "build", pool, "--host", hv))
        assert target.is_dir()  # made by the lab daemon, seen here: same filesystem
        ok(run(db, "pool", "start", pool, "--host", hv))
        ok(run(db, "pool", "autostart", pool, "--host", hv))
        info = ok(run(db, "pool", "info", pool, "--host", hv, "--json")).json()
        assert (info[0]["state"], info[0]["autostart"]) == ("running", True)

        ok(run(db, "vol", "create", "a.qcow2", *on, "--size", "64M"))
        ok(run(db, "vol", "create", "b.raw", *on, "--size", "16M", "--format", "raw"))
        ok(run(db, "vol", "clone", "b.raw", "b-copy.raw", *on))
        grown = ok(run(db, "vol", "resize", "b.raw", "+16M", *on, "--json")).json()
        assert grown["capacity_bytes"] == 32 * 2**20
        assert (target / "b.raw").stat().st_size == 32 * 2**20
        names = [v["name"] for v in ok(run(db, "vol", "list", *on, "--json")).json()]
        assert names == ["a.qcow2", "b-copy.raw", "b.raw"]

        # A local qcow2 with data goes up, comes back down, and is still the same image.
        src = tmp_path / "up.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(src), "32M"], check=True)
        subprocess.run(["qemu-io", "-c", "write -P 0x42 0 1M", str(src)], check=True,
                       capture_output=True)
        up = ok(run(db, "vol", "upload", str(src), "up.qcow2", *on, "--json")).json()
        assert up["format"] == "qcow2"
        back = tmp_path / "down.qcow2"
        ok(run(db, "vol", "download", "up.qcow2", str(back), *on))
        assert subprocess.run(["qemu-img", "compare", str(src), str(back)],
                              check=False).returncode == 0

        for name in ("a.qcow2", "b.raw", "b-copy.raw", "up.qcow2"):
            ok(run(db, "vol", "delete", name, *on))
        assert ok(run(db, "vol", "list", *on, "--json")).json() == []
        r = run(db, "pool", "undefine", pool, "--host", hv)
        assert r.code == 1 and "active; destroy it first" in r.out
        ok(run(db, "pool", "destroy", pool, "--host", hv))
        ok(run(db, "pool", "undefine", pool, "--host", hv))
    finally:
        _forget(db, hv, pool)


def test_fs_pool_on_a_loop_mounted_xfs(lab: LabFixture, db: Path, tmp_path: Path,
                                       loop_xfs: str) -> None:
    hv = lab.hosts[1].name
    pool = f"vfst-xfs-{os.getpid()}"
    target = tmp_path / "xfs-mount"
    target.mkdir()
    on = ["--host", hv, "--pool", pool]
    try:
        ok(run(db, "pool", "define", pool, "--type", "fs", "--source-dev", loop_xfs,
               "--format", "xfs", "--target", str(target), "--host", hv))
        r = run(db, "pool", "build", pool, "--host", hv)  # an XFS is there: left alone
        assert r.code == 1 and "conflict: " in r.err and "already formatted" in r.err
        ok(run(db, "pool", "start", pool, "--host", hv))  # mounted inside the daemon
        info = ok(run(db, "pool", "info", pool, "--host", hv, "--json")).json()[0]
        assert info["type"] == "fs" and info["source"] == loop_xfs
        assert 250 * 2**20 < info["capacity_bytes"] < 320 * 2**20  # the XFS, not /tmp's fs

        ok(run(db, "vol", "create", "base.raw", *on, "--size", "32M", "--format", "raw"))
        ok(run(db, "vol", "clone", "base.raw", "clone.raw", *on))
        ok(run(db, "vol", "resize", "clone.raw", "48M", *on))
        r = run(db, "vol", "create", "huge.raw", *on, "--size", "1G", "--format", "raw")
        assert r.code == 2 and "free in pool" in r.err
        vols = {v["name"]: v for v in ok(run(db, "vol", "list", *on, "--json")).json()}
        assert sorted(vols) == ["base.raw", "clone.raw"]
        assert vols["clone.raw"]["capacity_bytes"] == 48 * 2**20
        ok(run(db, "vol", "delete", "clone.raw", *on))
        ok(run(db, "vol", "delete", "base.raw", *on))
        ok(run(db, "pool", "destroy", pool, "--host", hv))
        ok(run(db, "pool", "undefine", pool, "--host", hv))
    finally:
        _forget(db, hv, pool)


def test_pod_storage_on_every_hypervisor_of_the_pod(lab: LabFixture, db: Path) -> None:
    pod = lab.hosts[0].pod
    members = [h.name for h in lab.hosts if h.pod == pod]
    pool = f"{pod}-shared"
    try:
        r = ok(run(db, "pool", "apply-pod", "--pod", pod, "--json")).json()
        assert {x["host"] for x in r} == set(members) and {x["pool"] for x in r} == {pool}
        again = ok(run(db, "pool", "apply-pod", "--pod", pod, "--json")).json()
        assert {x["result"] for x in again} == {"already in place"}
        checks = ok(run(db, "pool", "check", "--pod", pod, "--json")).json()
        assert [(c["pod_pool_ok"], c["problems"]) for c in checks] == [(True, [])] * len(
            members)

        on = ["--host", members[0], "--pool", pool]
        ok(run(db, "vol", "create", f"shared-{os.getpid()}.qcow2", *on, "--size", "16M"))
        try:
            got = ok(run(db, "vol", "info", f"shared-{os.getpid()}.qcow2", *on,
                         "--json")).json()
            assert got["shared_in_pod"] is True
            assert got["sharing"].startswith("the pod's declared shared directory")
        finally:
            ok(run(db, "vol", "delete", f"shared-{os.getpid()}.qcow2", *on))
    finally:
        for h in members:
            with contextlib.suppress(AssertionError):
                _forget(db, h, pool)


def test_a_vms_disk_on_the_pods_share_is_kept_whichever_host_is_asked(
        lab: LabFixture, db: Path) -> None:
    """Regression: `vol delete` deleted a defined VM's disk and said "deleted". On the pod's
    shared pool the VM's own hypervisor and every other one of the pod refuse it; the file on
    the share is the ground truth. With --force it goes (and the VM is left without it)."""
    pod = lab.hosts[0].pod
    members = [h.name for h in lab.hosts if h.pod == pod]
    assert len(members) >= 2, "the lab's first pod has two hypervisors"
    pool, vm = f"{pod}-shared", f"vfst-used-{os.getpid()}"
    try:
        ok(run(db, "pool", "apply-pod", "--pod", pod))
        made = ok(run(db, "vm", "create", vm, "--host", members[1], "--memory", "64M",
                      "--vcpus", "1", "--disk", f"pool={pool},size=8M", "--pxe",
                      "--no-start", "--virt-type", "qemu", "--json")).json()
        [disk] = made["disks"]
        for h in members:
            r = run(db, "vol", "delete", Path(disk).name, "--host", h, "--pool", pool)
            assert (r.code, r.out) == (4, ""), r.err
            assert f"is a disk of VM {vm} on {members[1]}; undefine the VM first, or give " \
                "--force" in r.err, r.err
            assert Path(disk).is_file(), f"{disk} was deleted through {h}"
        r = ok(run(db, "vol", "delete", Path(disk).name, "--host", members[0], "--pool", pool,
                   "--force"))
        assert r.out == f"Vol {Path(disk).name} deleted\n" and not Path(disk).exists()
    finally:
        run(db, "vm", "undefine", vm, "--host", members[1])
        for h in members:
            with contextlib.suppress(AssertionError):
                _forget(db, h, pool)


def test_qcow2_to_raw_and_back(tmp_path: Path, db: Path) -> None:
    src = tmp_path / "src.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(src), "64M"], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x11 4M 1M", str(src)], check=True,
                   capture_output=True)
    ok(run(db, "image", "convert", str(src), str(tmp_path / "mid.raw"), "--to", "raw"))
    ok(run(db, "image", "convert", str(tmp_path / "mid.raw"), str(tmp_path / "end.qcow2"),
           "--to", "qcow2"))
    assert ok(run(db, "image", "info", str(tmp_path / "end.qcow2"), "--json")).json()[
        "format"] == "qcow2"
    assert subprocess.run(["qemu-img", "compare", str(src), str(tmp_path / "end.qcow2")],
                          check=False).returncode == 0
