"""The pool service in process, on test-driver hypervisors: typed requests in, typed per-host
results out (failed hosts included), errors naming the request's own fields. One long-lived
pool, so each test-driver hypervisor keeps its state for the whole test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from virtfleet.errors import Conflict, InvalidInput
from virtfleet.fleet.pools import DefinePool, PoolService
from virtfleet.fleet.scope import Scope
from virtfleet.inventory.fleetfile import parse_fleet
from virtfleet.inventory.store import Store
from virtfleet.virt.fanout import ConnectionPool

from .nodes import node_uri

NFS = {"type": "netfs", "source": "filer1.or.example.com:/vol/vms",
       "target": "/var/lib/virtfleet/pod", "pool": "pod-nfs"}
POD = Scope(pod="or-pod1")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[PoolService]:
    data = {"sites": [{"name": "oregon", "pods": [
        {"name": "or-pod1", "storage": NFS, "hypervisors": [
            {"name": "hv1", "uri": node_uri(tmp_path, "storage.xml", "hv1.xml")},
            {"name": "hv2", "uri": node_uri(tmp_path, "empty.xml", "hv2.xml")}]},
        {"name": "or-pod2", "hypervisors": [  # its node file is gone: it fails, others answer
            {"name": "hv3", "uri": f"test://{tmp_path / 'gone.xml'}"}]}]}]}
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store, ConnectionPool() as pool:
        store.apply(parse_fleet(data))
        with PoolService(store, pool) as svc:
            yield svc


def test_reading_answers_per_host_with_the_failed_one_named(service: PoolService) -> None:
    answers = service.list_pools(Scope())
    assert [(h.name, [p.name for p in ps]) for h, ps in answers.values] == [
        ("hv1", ["images", "pod-nfs"]), ("hv2", [])]
    assert [(f.host, f.kind) for f in answers.failures] == [("hv3", "hypervisor-error")]
    info = service.info("pod-nfs", POD)
    [(host, nfs)] = info.values
    assert (host.name, nfs.type, nfs.source) == ("hv1", "netfs",
                                                 "filer1.or.example.com:/vol/vms")
    assert [f.message for f in info.failures] == ["has no storage pool 'pod-nfs'"]


def test_define_then_the_verbs_give_a_typed_outcome_per_host(service: PoolService,
                                                             tmp_path: Path) -> None:
    made = service.define(DefinePool(POD, "scratch", "dir", target=str(tmp_path / "s")))
    assert [(h.name, d.state) for h, d in made.values] == [("hv1", "inactive"),
                                                          ("hv2", "inactive")]
    again = service.define(DefinePool(Scope(host="hv1"), "scratch", "dir", target="/srv"))
    [r] = again.results
    assert isinstance(r.error, Conflict) and r.error.host == "hv1"
    assert [o.as_json() for o in service.build("scratch", POD)] == [
        {"host": "hv1", "pool": "scratch", "result": "built", "ok": True},
        {"host": "hv2", "pool": "scratch", "result": "built", "ok": True}]
    assert all(o.ok for o in service.start("scratch", POD))
    refused = service.undefine("scratch", POD)
    assert [o.result for o in refused] == [
        "failed: storage pool 'scratch' is active; destroy it first"] * 2
    assert [o.done for o in service.autostart("scratch", POD, on=False)] == [
        "autostart off"] * 2
    assert all(o.ok for o in service.destroy("scratch", POD))
    assert [o.done for o in service.undefine("scratch", POD)] == ["undefined"] * 2


def test_apply_pod_and_the_storage_check(service: PoolService) -> None:
    outcomes = service.apply_pod(Scope(all=True))
    assert [(o.host, o.pod, o.name, o.done, o.ok) for o in outcomes] == [
        ("hv1", "or-pod1", "pod-nfs", "autostart", True),
        ("hv2", "or-pod1", "pod-nfs", "defined, started, autostart", True)]
    checks = service.check(POD)
    assert [(h.name, c.pod_pool, c.pod_pool_ok, c.problems) for h, c in checks.values] == [
        ("hv1", "pod-nfs", True, ()), ("hv2", "pod-nfs", True, ())]
    with pytest.raises(InvalidInput) as exc:
        service.apply_pod(Scope(pod="or-pod2"))
    assert exc.value.field == "scope.pod" and "no pod in scope declares storage" in str(
        exc.value)


@pytest.mark.parametrize(("req", "field", "words"), [
    (DefinePool(Scope(), "p", "dir", target="/x"), "scope", "say which hypervisors"),
    (DefinePool(POD, "p", "zfs", target="/x"), "type", "is not one of dir, fs"),
    (DefinePool(POD, "p", "dir", target="rel"), "target", "must be an absolute path"),
    (DefinePool(POD, "p", "fs", target="/x", source_devs=("/dev/sdb",), format="ntfs"),
     "format", "is not one of"),
    (DefinePool(POD, None, "dir", target="/x"), "name/type", "give `name` and `type`"),
    (DefinePool(POD, "p", xml="<pool type='dir'><name>p</name></pool>"), "xml",
     "give either an XML file or `name` with `type`"),
    (DefinePool(POD, xml=b"<pool type='fs'><name>x</name><source><device path='sdb'/>"
                b"</source></pool>"), "xml.<source><device>", "must be an absolute path"),
    (DefinePool(POD, xml="<pool type='zfs'><name>x</name></pool>"), "xml",
     "pool type 'zfs' is not one of"),
    (DefinePool(POD, xml="<volume/>"), "xml", "expected <pool>"),
])
def test_bad_requests_name_their_field(service: PoolService, req: DefinePool, field: str,
                                       words: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        service.define(req)
    assert exc.value.field == field and words in exc.value.rule, exc.value
