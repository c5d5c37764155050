"""The volume service in process, on test-driver hypervisors: typed requests in, typed results
out, errors naming the request's own fields; and what `delete` refuses. One long-lived pool,
so each test-driver hypervisor keeps its state for the whole test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from virtfleet.errors import Conflict, InvalidInput, NotFound
from virtfleet.fleet.volumes import (
    CloneVolume,
    CreateVolume,
    DeleteVolume,
    ResizeVolume,
    VolumeRef,
    VolumeService,
)
from virtfleet.inventory.fleetfile import parse_fleet
from virtfleet.inventory.store import Store
from virtfleet.virt.fanout import ConnectionPool

from .nodes import node_uri

NFS = {"type": "netfs", "source": "filer1.or.example.com:/vol/vms",
       "target": "/var/lib/virtfleet/pod", "pool": "pod-nfs"}


@contextmanager
def _service(tmp_path: Path, second: str) -> Iterator[VolumeService]:
    """hv1 and a second hypervisor of its pod, both mounting the pod's NFS share: `second` is
    the storage fixture's twin, or "gone" for one whose node file is missing (it fails)."""
    uri = (f"test://{tmp_path / 'gone.xml'}" if second == "gone"
           else node_uri(tmp_path, "storage.xml", "hv2.xml"))
    data = {"sites": [{"name": "oregon", "pods": [{"name": "or-pod1", "storage": NFS,
                                                   "hypervisors": [
        {"name": "hv1", "uri": node_uri(tmp_path, "storage.xml", "hv1.xml")},
        {"name": "hv2", "uri": uri}]}]}]}
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store, ConnectionPool() as pool:
        store.apply(parse_fleet(data))
        with VolumeService(store, pool) as svc:
            yield svc


@pytest.fixture
def service(tmp_path: Path) -> Iterator[VolumeService]:
    with _service(tmp_path, "twin") as svc:
        yield svc


def test_create_and_clone_and_what_they_report(service: VolumeService) -> None:
    # (resize itself the test driver cannot do: the lab tests it; its refusals are below)
    made = service.create(CreateVolume("hv1", "images", "data.qcow2", 2 * 2**30))
    assert (made.name, made.format, made.capacity_bytes) == ("data.qcow2", "qcow2", 2 * 2**30)
    copy = service.clone(CloneVolume("hv1", "images", "/var/lib/libvirt/images/base.raw",
                                     "copy.raw"))
    assert (copy.path, copy.format) == ("/var/lib/libvirt/images/copy.raw", "raw")
    names = [v.name for v in service.list_volumes("hv1", "images")]
    assert names == ["base.raw", "copy.raw", "data.qcow2", "web01.qcow2"]


def test_info_and_disks_say_whether_the_pod_shares_the_storage(service: VolumeService) -> None:
    shared = service.info(VolumeRef("hv1", "pod-nfs", "db01.qcow2"))
    assert shared.sharing.shared and shared.as_json()["shared_in_pod"] is True
    local = service.info(VolumeRef("hv1", "images", "web01.qcow2"))
    assert local.sharing.basis == "a dir pool is local to its hypervisor"
    db01 = service.disks("db01", "hv1")
    assert (db01.host, db01.all_shared_in_pod) == ("hv1", True)
    assert [(d.disk, d.pool) for d in db01.disks] == [("/var/lib/virtfleet/pod/db01.qcow2",
                                                       "pod-nfs")]
    with pytest.raises(NotFound):
        service.disks("nosuch", "hv1")


def test_delete_refuses_a_vms_disk_on_its_host_and_across_the_pod(
        service: VolumeService) -> None:
    with pytest.raises(Conflict) as exc:
        service.delete(DeleteVolume("hv1", "images", "web01.qcow2"))
    assert exc.value.host == "hv1" and exc.value.detail == (
        "volume 'web01.qcow2' is a disk of VM web01 on hv1; undefine the VM first, or give "
        "`force` to delete it anyway")
    with pytest.raises(Conflict, match="is a disk of VMs db01 on hv1, db01 on hv2;"):
        service.delete(DeleteVolume("hv1", "pod-nfs", "db01.qcow2"))
    with pytest.raises(Conflict, match="backs 1 other volume"):
        service.delete(DeleteVolume("hv1", "images", "base.raw", force=True))
    gone = service.delete(DeleteVolume("hv1", "images", "web01.qcow2", force=True))
    assert gone.path == "/var/lib/libvirt/images/web01.qcow2"
    assert "web01.qcow2" not in [v.name for v in service.list_volumes("hv1", "images")]


def test_delete_on_shared_storage_refuses_while_a_pod_host_cannot_be_asked(
        tmp_path: Path) -> None:
    with _service(tmp_path, "gone") as service:
        service.create(CreateVolume("hv1", "pod-nfs", "scratch.qcow2", 2**20))
        with pytest.raises(Conflict, match="hv2 did not answer whether a VM there has it"):
            service.delete(DeleteVolume("hv1", "pod-nfs", "scratch.qcow2"))
        service.delete(DeleteVolume("hv1", "pod-nfs", "scratch.qcow2", force=True))
        # a pool only this host has is not asked about elsewhere
        service.create(CreateVolume("hv1", "images", "local.qcow2", 2**20))
        assert service.delete(DeleteVolume("hv1", "images", "local.qcow2")).name == \
            "local.qcow2"


@pytest.mark.parametrize(("call", "field", "words"), [
    (lambda s: s.create(CreateVolume("hv1", "images", "a/b", 2**30)), "volume",
     "must be a plain name"),
    (lambda s: s.create(CreateVolume("hv1", "images", "x", 2**40)), "size_bytes",
     "1.00 TiB is more than the 84.00 GiB free in pool 'images'"),
    (lambda s: s.create(CreateVolume("hv1", "images", "x", 0)), "size_bytes",
     "greater than zero"),
    (lambda s: s.create(CreateVolume("hv1", "images", "x", 2**30, "vmdk")), "format",
     "'vmdk' is not one of raw, qcow2"),
    (lambda s: s.info(VolumeRef("hv1", "images", "/etc/passwd")), "volume",
     "is not inside pool 'images'"),
    (lambda s: s.clone(CloneVolume("hv1", "images", "base.raw", "../x")), "new",
     "must be a plain name"),
    (lambda s: s.resize(ResizeVolume("hv1", "images", "base.raw", 2**30)), "size_bytes",
     "shrinking loses data: add `shrink`"),
    (lambda s: s.list_volumes("a/b", "images"), "host", "not a valid name"),
    (lambda s: s.disks("a b"), "vm", "not a valid name"),
])
def test_bad_requests_name_their_field(service: VolumeService, call: object, field: str,
                                       words: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        call(service)  # type: ignore[operator]
    assert exc.value.field == field and words in exc.value.rule, exc.value
