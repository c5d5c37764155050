"""`vm migrate` and `host maintenance` on test-driver hypervisors: what is refused before
anything moves, and that a refusal leaves everything as it was.

The test driver cannot migrate, so these tests stop where libvirt would start moving memory;
tests/integration/test_migrate.py moves real guests in the lab.

Pod or-pod1: hv1 (the source: web01 on the pod's shared directory with a NIC on network
"prod", local01 on a local pool), hv2 (can take web01), hv3 (no network "prod"), hv4 (full).
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from virtfleet.errors import Conflict, InvalidInput, NotFound, VirtfleetError
from virtfleet.fleet.migration import DrainRequest, MigrateRequest, MigrationService
from virtfleet.fleet.snapshots import SnapshotRequest, SnapshotService
from virtfleet.inventory.fleetfile import load_fleet
from virtfleet.inventory.records import HostRecord, Made
from virtfleet.inventory.store import Store
from virtfleet.lab.shared import lab_pod
from virtfleet.placement.models import PlacementRequest, VMShape
from virtfleet.placement.scheduler import Scheduler
from virtfleet.provision.migrate import migrate_uri
from virtfleet.provision.schedule import live_fleet
from virtfleet.virt import migration
from virtfleet.virt.fanout import ConnectionPool

from .cli import run
from .fleets import fleet_store, hv
from .nodes import node_uri

POD_DIR = "/srv/or-pod1"


@pytest.fixture
def env(tmp_path: Path):  # type: ignore[no-untyped-def]
    hosts = [("hv1", "migrate-source.xml"), ("hv2", "migrate-target.xml"),
             ("hv3", "migrate-nonet.xml"), ("hv4", "migrate-full.xml")]
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump({"sites": [{"name": "oregon", "pods": [
        {"name": "or-pod1", "storage": {"type": "dir", "target": POD_DIR},
         "hypervisors": [{"name": n, "uri": node_uri(tmp_path, f, f"{n}.xml")}
                         for n, f in hosts]}]}]}))
    db = tmp_path / "s.db"
    store = Store(f"sqlite:///{db}")
    store.apply(load_fleet(fleet))
    pool = ConnectionPool()
    service = MigrationService(store, pool)
    yield service, db
    pool.close()
    store.close()


def _domains(service: MigrationService) -> dict[str, list[tuple[str, str]]]:
    """Every host's (name, state), as libvirt says it."""
    return {r.name: sorted((d.name, d.state) for d in service.pool.get(r).list_domains())
            for r in service.store.hypervisors()}


BEFORE = {"hv1": [("local01", "running"), ("web01", "running")], "hv2": [],
          "hv3": [], "hv4": [("big01", "running")]}


def _nothing_moved(service: MigrationService) -> None:
    assert _domains(service) == BEFORE
    assert service.store.placement_claims() == []
    assert service.store.operations() == []


def _refused(service: MigrationService, req: MigrateRequest, kind: type[VirtfleetError],
             match: str) -> VirtfleetError:
    with pytest.raises(kind, match=match) as info:
        service.migrate(req)
    assert "\n" not in info.value.message
    _nothing_moved(service)
    return info.value


def test_a_target_without_the_vms_network_is_refused(env) -> None:  # type: ignore[no-untyped-def]
    service, _ = env
    err = _refused(service, MigrateRequest("web01", to="hv3"), InvalidInput,
                   "hv3 has no libvirt network 'prod', which web01's NIC uses")
    assert err.exit_code == 2 and err.field == "to"  # type: ignore[attr-defined]


def test_a_full_target_is_refused(env) -> None:  # type: ignore[no-untyped-def]
    service, _ = env
    err = _refused(service, MigrateRequest("web01", to="hv4"), Conflict,
                   r"web01 \(2 vCPUs, 4096 MiB\) does not fit: hv4: .* MiB free after "
                   "reserve and ratio, needs 4096")
    assert err.exit_code == 4


def test_a_target_in_maintenance_is_refused(env) -> None:  # type: ignore[no-untyped-def]
    service, _ = env
    service.store.start_maintenance("hv2", datetime.now(UTC), "me", 1)
    err = _refused(service, MigrateRequest("web01", to="hv2"), Conflict,
                   "hv2 is in maintenance: nothing is placed on it until "
                   "'virtfleet host activate hv2'")
    assert err.exit_code == 4
    # Left to the scheduler, the pod has nowhere for web01, and each host says why.
    _refused(service, MigrateRequest("web01"), Conflict,
             r"web01: no hypervisor in pod or-pod1 can take it \(hv2 is in maintenance: .*; "
             r"hv3 has no libvirt network 'prod', which web01's NIC uses .*; hv4: 1024 MiB "
             r"free after reserve and ratio, needs 4096\)")


def test_the_scheduler_picks_the_host_that_can_take_it(env) -> None:  # type: ignore[no-untyped-def]
    """Only hv2 passes every check; the test driver then cannot migrate, and everything the
    attempt made (claim, journal entry) is undone."""
    service, _ = env
    with pytest.raises(VirtfleetError, match="hv1/web01: .*nothing was left behind") as info:
        service.migrate(MigrateRequest("web01"))
    assert "not supported" in info.value.message
    _nothing_moved(service)


def test_local_disks_need_copy_storage(env) -> None:  # type: ignore[no-untyped-def]
    service, _ = env
    err = _refused(service, MigrateRequest("local01", to="hv2"), InvalidInput,
                   r"local01's disk vda \(/var/lib/libvirt/images/local01.qcow2\) is in pool "
                   r"'default' \(a dir pool is local to its hypervisor\): hv2 cannot see it")
    assert err.field == "copy_storage"  # type: ignore[attr-defined]
    # With copy-storage the checks pass (and the test driver cannot copy): nothing stays.
    with pytest.raises(VirtfleetError, match="nothing was left behind"):
        service.migrate(MigrateRequest("local01", to="hv2", copy_storage=True))
    _nothing_moved(service)
    target = service.pool.get(service.store.hypervisors(host="hv2")[0])
    assert "local01.qcow2" not in target.conn.storagePoolLookupByName(
        "or-pod1-shared").listVolumes()  # the copy's volume was removed again


def test_a_shut_off_vm_is_copied_offline_when_asked(env) -> None:  # type: ignore[no-untyped-def]
    """Regression: offline, a disk the target cannot see was refused with "migrate with
    copy-storage", and copy-storage then for the VM being shut off: each refusal sent the
    operator to the other. Offline, copy-storage now streams the disks from volume to volume
    first. The checks pass; the test driver cannot stream a volume (the lab's test does:
    tests/integration/test_migrate.py), and nothing is left behind."""
    service, _ = env
    service.pool.get(service.store.hypervisors(host="hv1")[0]).conn.lookupByName(
        "local01").destroy()
    unseen = _refused_from(service, MigrateRequest("local01", to="hv2"))
    assert isinstance(unseen, InvalidInput) and unseen.field == "copy_storage"
    assert "migrate with copy-storage to copy it" in unseen.rule, unseen.rule
    with pytest.raises(VirtfleetError, match="virStorageVolDownload; nothing was left behind"):
        service.migrate(MigrateRequest("local01", to="hv2", copy_storage=True))
    assert service.store.placement_claims() == [] and service.store.operations() == []
    target = service.pool.get(service.store.hypervisors(host="hv2")[0])
    assert "local01.qcow2" not in target.conn.storagePoolLookupByName(
        "or-pod1-shared").listVolumes()


def test_a_linked_clone_is_not_copied_offline_without_its_image(tmp_path: Path) -> None:
    """An offline copy moves the clone's own file only: refused, saying what works."""
    store = fleet_store(tmp_path, {"p1": [hv(tmp_path, "hv1", "with-template.xml"),
                                          hv(tmp_path, "hv2", "with-pool-nat.xml")]})
    with ConnectionPool() as pool:
        err = _refused_from(MigrationService(store, pool),
                            MigrateRequest("old", to="hv2", copy_storage=True))
    store.close()
    assert isinstance(err, InvalidInput) and err.field == "copy_storage"
    assert err.rule.endswith("a linked clone of /var/lib/libvirt/images/base.qcow2, which an "
                             "offline copy would leave behind; start it and migrate it live "
                             "with copy-storage (the copy then holds its whole image), or "
                             "share its template's image first"), err.rule


def _refused_from(service: MigrationService, req: MigrateRequest) -> VirtfleetError:
    with pytest.raises(VirtfleetError) as info:
        service.migrate(req)
    assert "\n" not in info.value.message
    return info.value


def test_an_unknown_host_or_vm_is_not_found(env) -> None:  # type: ignore[no-untyped-def]
    service, _ = env
    err = _refused(service, MigrateRequest("web01", to="hv9"), NotFound,
                   "'hv9' is not in the inventory")
    assert err.exit_code == 3
    _refused(service, MigrateRequest("nosuchvm"), NotFound, "VM 'nosuchvm' is not defined")


def test_an_unknown_target_is_named_before_the_vm_is_refused(env) -> None:  # type: ignore[no-untyped-def]
    """Regression: a VM with a snapshot, sent to a host the inventory lacks, was refused for
    its snapshot; the store's answer (no such host) is cheaper and certain, so it comes first,
    through the CLI too (exit 3)."""
    service, db = env
    SnapshotService(service.store, service.pool).create(SnapshotRequest("web01", "s1"))
    _refused(service, MigrateRequest("web01", to="hv9"), NotFound,
             "'hv9' is not in the inventory")
    _refused(service, MigrateRequest("web01", pod="nopod"), NotFound,
             "pod 'nopod' is not in the inventory")
    with pytest.raises(Conflict, match="has 1 snapshot"):  # a known target: the snapshot
        service.migrate(MigrateRequest("web01", to="hv2"))
    service.pool.close()  # the CLI's own process sees the node file: no snapshot there
    r = run(db, "vm", "migrate", "local01", "--to", "hv9", "--offline")
    assert (r.code, r.err) == (3, "virtfleet: error: host 'hv9' is not in the inventory\n"), \
        r.err  # local01 runs: --offline alone would be refused (exit 2)


def test_bad_requests_name_the_field(env) -> None:  # type: ignore[no-untyped-def]
    service, _ = env
    for req, field in ((MigrateRequest("web01", to="hv2", pod="or-pod1"), "to"),
                       (MigrateRequest("web01", mode="fast"), "mode"),
                       (MigrateRequest("web01", max_downtime_ms=0), "max_downtime_ms"),
                       (MigrateRequest("web01", bandwidth_mib=-1), "bandwidth_mib"),
                       (MigrateRequest("web01;rm", to="hv2"), "vm"),
                       (MigrateRequest("web01", to="../hv2"), "to"),
                       (MigrateRequest("web01", mode="offline"), "mode"),
                       (MigrateRequest("web01", to="hv1"), "to")):
        with pytest.raises(InvalidInput) as info:
            service.migrate(req)
        assert info.value.field == field, req
    _nothing_moved(service)


def test_maintenance_empties_what_it_can_and_names_what_stays(env) -> None:  # type: ignore[no-untyped-def]
    """hv1 goes into maintenance; web01 could move (the test driver cannot migrate, so it
    stays with libvirt's reason), local01 stays for its local disk. Placement now skips hv1;
    activate brings it back."""
    service, _ = env
    drained = service.drain(DrainRequest("hv1", reason="firmware"))
    assert drained.maintenance and not drained.ok and not drained.cancelled
    by_vm = {r.vm: r for r in drained.results}
    assert set(by_vm) == {"web01", "local01"}
    assert by_vm["web01"].target == "hv2" and "not supported" in str(by_vm["web01"].error)
    assert by_vm["local01"].target is None and "cannot see it" in str(by_vm["local01"].error)
    assert _domains(service) == BEFORE
    assert service.store.placement_claims() == [] and service.store.operations() == []
    [rec] = service.store.maintenance_records()
    assert (rec.host, rec.reason) == ("hv1", "firmware")
    assert service.store.hypervisors(host="hv1")[0].maintenance
    # Placement (vm create's path: the live fleet, then the scheduler) skips hv1 now.
    fleet = live_fleet(service.store, pod="or-pod1", pool=service.pool)
    ex = Scheduler(fleet.hosts).explain(PlacementRequest(
        name="new01", shape=VMShape(vcpus=1, memory_mib=1024)))
    assert dict(ex.removed)["AvailabilityFilter"] == [("hv1", "in maintenance")]
    assert service.activate("hv1").was_in_maintenance
    assert not service.activate("hv1").was_in_maintenance
    assert not service.store.hypervisors(host="hv1")[0].maintenance


def test_maintenance_of_an_unknown_host(env) -> None:  # type: ignore[no-untyped-def]
    service, _ = env
    with pytest.raises(NotFound, match="'hv9' is not in the inventory"):
        service.drain(DrainRequest("hv9"))
    with pytest.raises(NotFound, match="pod 'nopod' is not in the inventory"):
        service.drain(DrainRequest("hv1", pod="nopod"))
    assert service.store.maintenance_records() == []  # nothing marked for a bad request


# ------------------------------------------------------------------ through the CLI


def test_cli_refusals_are_one_line_with_their_exit_code(env) -> None:  # type: ignore[no-untyped-def]
    service, db = env
    cases = [
        (["web01", "--to", "hv3"], 2, "--to: hv3 has no libvirt network 'prod'"),
        (["web01", "--to", "hv4"], 4, "does not fit: hv4:"),
        (["local01", "--to", "hv2"], 2, "--copy-storage: local01's disk vda"),
        (["web01", "--to", "hv9"], 3, "'hv9' is not in the inventory"),
        (["web01", "--live", "--offline"], 2, "--live/--offline: give one of them"),
        (["web01", "--max-downtime", "0"], 2, "--max-downtime: must be from 1"),
        (["web01", "--to", "hv2", "--pod", "or-pod1"], 2, "--to: name a target host or a pod"),
        (["--all"], 2, "--all: goes with --host H and no NAME"),
    ]
    for args, code, words in cases:
        r = run(db, "vm", "migrate", *args)
        assert (r.code, r.out) == (code, ""), (args, r.err)
        assert r.err.count("\n") == 1 and words in r.err, (args, r.err)
    service.store.start_maintenance("hv2", datetime.now(UTC), "me", 1)
    r = run(db, "vm", "migrate", "web01", "--to", "hv2")
    assert r.code == 4 and "hv2 is in maintenance" in r.err and r.err.count("\n") == 1
    assert service.store.placement_claims() == [] and service.store.operations() == []


def test_cli_maintenance_and_activate(env) -> None:  # type: ignore[no-untyped-def]
    _service, db = env
    r = run(db, "host", "maintenance", "hv4", "--json")
    assert r.code == 1, r.err  # big01 could go to hv1 or hv2, but the test driver cannot migrate
    out = r.json()
    assert out["maintenance"] and out["stayed"] == 1 and out["vms"][0]["vm"] == "big01"
    assert out["vms"][0]["target"] in ("hv1", "hv2")
    assert "not supported" in out["vms"][0]["error"], out
    listed = {h["name"]: h["maintenance"] for h in run(db, "host", "list", "--json").json()}
    assert listed == {"hv1": False, "hv2": False, "hv3": False, "hv4": True}
    # The fleet file says nothing of it, and applying it again does not end it.
    fleet = db.parent / "fleet.yaml"
    assert run(db, "apply", "-f", str(fleet)).code == 0
    assert run(db, "host", "list", "--json").json()[3]["maintenance"]
    r = run(db, "host", "activate", "hv4")
    assert (r.code, r.out) == (0, "Hypervisor hv4 activated\n")
    assert not any(h["maintenance"] for h in run(db, "host", "list", "--json").json())
    # A host the fleet file puts in maintenance stays there, and activate says why.
    doc = yaml.safe_load(fleet.read_text())
    doc["sites"][0]["pods"][0]["hypervisors"][2]["maintenance"] = True
    fleet.write_text(yaml.safe_dump(doc))
    assert run(db, "apply", "-f", str(fleet)).code == 0
    r = run(db, "host", "activate", "hv3")
    assert r.code == 0 and r.out == "Hypervisor hv3 was not in maintenance\n"
    assert "still in maintenance: the fleet file says so" in r.err
    r = run(db, "host", "maintenance", "nope")
    assert r.code == 3 and "'nope' is not in the inventory" in r.err


def test_the_cli_does_not_import_libvirt_layer() -> None:
    src = Path(__file__).resolve().parents[2] / "src" / "virtfleet" / "cli" / "migrate.py"
    assert "virtfleet.virt" not in src.read_text()
    probe = ("import sys, virtfleet.cli.migrate; "
             "print(sorted(m for m in sys.modules if m.startswith('virtfleet.virt')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------ what libvirt is asked


def test_live_migration_never_persists_on_both_hosts() -> None:
    flags, params = migration.flags_and_params(migration.Plan(
        dest_uri="qemu+tcp://10.0.0.2/system", live=True, migrate_uri="tcp://10.0.0.2",
        dest_xml="<domain/>", copy_disks=("vda",), bandwidth_mib=100))
    import libvirt

    assert flags & libvirt.VIR_MIGRATE_PEER2PEER and flags & libvirt.VIR_MIGRATE_LIVE
    assert flags & libvirt.VIR_MIGRATE_UNDEFINE_SOURCE  # only on success, by libvirt
    assert not flags & libvirt.VIR_MIGRATE_PERSIST_DEST  # virtfleet defines it afterwards
    assert not flags & libvirt.VIR_MIGRATE_UNSAFE
    assert flags & libvirt.VIR_MIGRATE_NON_SHARED_DISK
    assert params == {libvirt.VIR_MIGRATE_PARAM_URI: "tcp://10.0.0.2",
                      libvirt.VIR_MIGRATE_PARAM_DEST_XML: "<domain/>",
                      libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS: ["vda"],
                      libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 100}
    flags, params = migration.flags_and_params(migration.Plan(
        dest_uri="qemu+tcp://10.0.0.2/system", live=False, persist_xml="<domain/>",
        unsafe=True))
    assert flags & libvirt.VIR_MIGRATE_OFFLINE and flags & libvirt.VIR_MIGRATE_PERSIST_DEST
    assert flags & libvirt.VIR_MIGRATE_UNSAFE and not flags & libvirt.VIR_MIGRATE_LIVE
    assert params == {libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: "<domain/>"}


def test_the_migration_stream_goes_to_the_targets_uri_address() -> None:
    def rec(uri: str) -> HostRecord:
        return HostRecord(name="hv2", uri=uri, site="s", pod="p")
    assert migrate_uri(rec("qemu+tcp://10.250.7.12/system")) == "tcp://10.250.7.12"
    assert migrate_uri(rec("qemu+ssh://virtfleet@hv2.or.example.com/system")) == (
        "tcp://hv2.or.example.com")
    assert migrate_uri(rec("qemu+tls://[fd00::12]:16514/system")) == "tcp://[fd00::12]"
    assert migrate_uri(rec("test:///tmp/hv2.xml")) is None


def test_the_journal_step_names_what_to_settle() -> None:
    from virtfleet.provision.migrate import Step

    step = Step("web01", "3f1c2b7a-6a55-4c5e-9d7e-0b6f6a1d2c01", "hv2",
                (("p2-shared", "web01.qcow2"), ("p2-shared", "web01-disk1.qcow2")), True)
    made = Made("migration", "hv1", step.ref())
    assert made.describe() == (
        "migration web01/3f1c2b7a-6a55-4c5e-9d7e-0b6f6a1d2c01>hv2>p2-shared/web01.qcow2,"
        "p2-shared/web01-disk1.qcow2>autostart on hv1")
    assert Step.parse(made.ref) == step
    plain = Step("web01", "3f1c2b7a-6a55-4c5e-9d7e-0b6f6a1d2c01", "hv2")
    assert plain.ref() == "web01/3f1c2b7a-6a55-4c5e-9d7e-0b6f6a1d2c01>hv2>"
    assert Step.parse(plain.ref()) == plain


# ------------------------------------------------------------------ VIR_MIGRATE_UNSAFE


def _fake_lab(root: Path, pod_dir: Path, uris: list[str], pid: int | None) -> None:
    import json

    state = root / "fakelab"
    state.mkdir(parents=True)
    hosts = [{"name": f"fakelab-hv{i}", "index": i, "pod": "fakelab-pod1",
              "netns": f"vf-fakelab-h{i}", "veth": f"vf1h{i}", "address": f"10.250.1.{10 + i}",
              "uri": u, "dir": str(state / "hosts" / f"h{i}"), "libvirtd_pid": pid,
              "virtlogd_pid": None} for i, u in enumerate(uris, 1)]
    (state / "lab.json").write_text(json.dumps({
        "name": "fakelab", "subnet": "10.250.1.0/24", "bridge": "vf1br",
        "state_dir": str(state), "created_at": "2026-12-01T00:00:00+00:00",
        "fleet_file": None, "pods": {"fakelab-pod1": str(pod_dir)}, "hosts": hosts,
        "sims": []}))


def test_unsafe_is_proven_only_by_a_lab_running_here(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """VIR_MIGRATE_UNSAFE needs a lab state file naming the directory as its pod's, and every
    hypervisor a live libvirtd of that lab: a fleet file's word is not enough."""
    root = tmp_path / "labs"
    pod_dir = tmp_path / "pod1"
    pod_dir.mkdir()
    uris = ["qemu+tcp://10.250.1.11/system", "qemu+tcp://10.250.1.12/system"]
    monkeypatch.setenv("VIRTFLEET_LAB_DIR", str(root))
    assert lab_pod(str(pod_dir), uris) is None  # no lab at all
    conf = root / "fakelab" / "hosts" / "h1" / "etc" / "libvirtd.conf"
    daemon = subprocess.Popen(["libvirtd", "-c", "import time; time.sleep(60)", "-f", str(conf)],
                              executable=sys.executable)
    # A live process that names the lab's config but is no libvirtd (the pid reused).
    impostor = subprocess.Popen(["true", "-c", "import time; time.sleep(60)", "-f", str(conf)],
                                executable=sys.executable)
    try:
        _fake_lab(root, pod_dir, uris, daemon.pid)
        assert lab_pod(str(pod_dir), uris) == "fakelab"
        assert lab_pod(str(pod_dir) + "/", uris[:1]) == "fakelab"
        assert lab_pod("/srv/or-pod1", uris) is None  # not the lab's directory
        assert lab_pod(str(pod_dir), [*uris, "qemu+ssh://hv9.example.com/system"]) is None
        assert lab_pod(str(pod_dir), []) is None
        (root / "fakelab" / "lab.json").unlink()
        (root / "fakelab").rmdir()
        _fake_lab(root, pod_dir, uris, impostor.pid)  # a live pid, but not that lab's libvirtd
        assert lab_pod(str(pod_dir), uris) is None
    finally:
        daemon.kill()
        impostor.kill()
        daemon.wait()
        impostor.wait()
    (root / "fakelab" / "lab.json").unlink()
    (root / "fakelab").rmdir()
    _fake_lab(root, pod_dir, uris, daemon.pid)  # the lab's daemon is gone
    assert lab_pod(str(pod_dir), uris) is None


def test_outside_a_lab_the_service_leaves_libvirts_check_alone(env) -> None:  # type: ignore[no-untyped-def]
    """web01's disk is on the pod's declared shared directory, which libvirt cannot see is
    shared; with no lab on this machine proving it, unsafe is not asked for."""
    from virtfleet.fleet import movable
    from virtfleet.fleet.migration import _Candidate
    from virtfleet.virt.guest import Guest

    service, _ = env
    [src] = service.store.hypervisors(host="hv1")
    [dst] = service.store.hypervisors(host="hv2")
    needs = movable.needs_of(Guest.lookup(service.pool.get(src), "web01"), src, 10)
    fit = movable.check(service.pool.get(dst), dst, needs, copy_storage=False,
                        pods=service._pods(), seconds=10)
    assert fit.problem is None and fit.shared_dirs == (POD_DIR,)
    assert MigrationService._lab(_Candidate(needs, True), fit, dst) is None


# ------------------------------------------------------------------ N out, M in


def test_bounded_moves_never_exceed_their_limits_and_keep_order() -> None:
    import threading
    import time as _time
    from collections import Counter

    from virtfleet.fleet.drain import Job, run_bounded

    lock = threading.Lock()
    out_now: Counter[str] = Counter()
    in_now: Counter[str] = Counter()
    worst = {"out": 0, "in": 0}

    def move(src: str, dst: str, key: str) -> str:
        with lock:
            out_now[src] += 1
            in_now[dst] += 1
            worst["out"] = max(worst["out"], out_now[src])
            worst["in"] = max(worst["in"], in_now[dst])
        _time.sleep(0.02)  # long enough for the others to start, if the limits let them
        with lock:
            out_now[src] -= 1
            in_now[dst] -= 1
        if key == "vm4":
            raise Conflict("vm4: refused")
        return key

    jobs = [Job(f"vm{i}", "hv1", f"hv{2 + i % 3}",
                (lambda i=i: move("hv1", f"hv{2 + i % 3}", f"vm{i}"))) for i in range(9)]
    done = run_bounded(jobs, max_out=2, max_in=1, cancel=threading.Event())
    assert [o.key for o in done] == [j.key for j in jobs]
    assert [o.value for o in done if o.error is None] == [f"vm{i}" for i in range(9) if i != 4]
    assert str(done[4].error) == "vm4: refused" and done[4].started
    assert 1 <= worst["out"] <= 2 and worst["in"] == 1


def test_a_cancel_starts_nothing_more_and_says_what_stayed() -> None:
    import threading

    from virtfleet.errors import Cancelled
    from virtfleet.fleet.drain import Job, run_bounded

    cancel = threading.Event()

    def first() -> str:
        cancel.set()  # Ctrl-C arrives while the first move runs
        return "vm0"

    jobs = [Job("vm0", "hv1", "hv2", first),
            *(Job(f"vm{i}", "hv1", "hv2", lambda: "moved") for i in (1, 2))]
    done = run_bounded(jobs, max_out=1, max_in=1, cancel=cancel)
    assert done[0].value == "vm0"
    for o in done[1:]:
        assert not o.started and isinstance(o.error, Cancelled)
        assert "not moved (cancelled before its turn); it stays on hv1" in str(o.error)
