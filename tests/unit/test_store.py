"""The inventory store on SQLite and PostgreSQL (store_url fixture: tests/conftest.py)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import yaml
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from virtfleet.errors import Conflict, InvalidInput, NotFound, StoreError
from virtfleet.inventory.base import HEAD_REVISION
from virtfleet.inventory.fleetfile import (
    Fleet,
    HostGroup,
    Hypervisor,
    Site,
    dump_fleet,
    load_fleet,
    parse_fleet,
)
from virtfleet.inventory.records import (
    ControllerRecord,
    DomainRecord,
    HostStatus,
    Made,
    OperationRecord,
)
from virtfleet.inventory.store import Store
from virtfleet.inventory.tables import Base

T0 = datetime(2026, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)

BASE: dict[str, Any] = {
    "groups": [{"name": "web", "description": "web servers"}],
    "sites": [
        {
            "name": "oregon",
            "description": "Oregon DC",
            "pods": [
                {
                    "name": "or-pod1",
                    "storage": {"type": "netfs", "source": "filer1:/vol/vms",
                                "target": "/var/lib/virtfleet/pod"},
                    "hypervisors": [
                        {"name": "hv1", "uri": "qemu+ssh://hv1.example.com/system",
                         "groups": ["web"]},
                        {"name": "hv2", "uri": "qemu+ssh://hv2.example.com/system",
                         "groups": ["web", "db"], "maintenance": True},
                    ],
                },
                {
                    "name": "or-pod2",
                    "insecure_transport": True,
                    "hypervisors": [{"name": "hv3", "uri": "qemu+tcp://10.0.0.3/system"}],
                },
            ],
        },
        {
            "name": "texas",
            "pods": [
                {
                    "name": "tx-pod1",
                    "storage": {"type": "dir", "target": "/srv/vms", "pool": "txpool"},
                    "hypervisors": [{"name": "hv4", "uri": "test:///tmp/node4.xml"}],
                }
            ],
        },
    ],
}


def dom(name: str, uuid: str, state: str = "running", **kw: Any) -> DomainRecord:
    fields: dict[str, Any] = {"id": 1 if state == "running" else None, "vcpus": 4,
                              "memory_mib": 32768}
    fields.update(kw)
    return DomainRecord(name=name, uuid=uuid, state=state, **fields)


def uuid_of(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def base(store: Store) -> Store:
    store.apply(parse_fleet(copy.deepcopy(BASE)))
    return store


def host_names(store: Store, **filters: str) -> list[str]:
    return [h.name for h in store.hypervisors(**filters)]


# ------------------------------------------------------------------------------ migrations


def test_fresh_database_is_migrated_to_head_and_reopen_is_idempotent(store_url: str) -> None:
    with Store(store_url) as s:
        s.apply(parse_fleet(copy.deepcopy(BASE)))
    with Store(store_url) as s:  # second open: no migration, data intact
        assert host_names(s) == ["hv1", "hv2", "hv3", "hv4"]
    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() \
                == [HEAD_REVISION]
            tables = set(inspect(conn).get_table_names())
            assert {"sites", "pods", "host_groups", "hypervisors", "hypervisor_groups",
                    "domains", "host_status", "controller", "alembic_version"} <= tables
            # The migration builds exactly the schema the ORM classes describe.
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, Base.metadata) == []
    finally:
        engine.dispose()


def test_processes_opening_a_fresh_database_at_once_all_succeed(store_url: str) -> None:
    code = (
        "import sys\n"
        "from virtfleet.inventory.store import Store\n"
        "s = Store(sys.argv[1]); print(len(s.hypervisors())); s.close()\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, store_url], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert out.strip() == "0"


def test_database_from_a_newer_virtfleet_is_refused(store_url: str) -> None:
    Store(store_url).close()
    engine = create_engine(store_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
    finally:
        engine.dispose()
    with pytest.raises(StoreError) as info:
        Store(store_url)
    assert "f00d" in str(info.value)
    assert "\n" not in str(info.value)


def test_unusable_urls_give_one_line_store_errors(tmp_path: Any) -> None:
    cases = {
        f"sqlite:///{tmp_path}/no/such/dir/store.db": "unable to open database file",
        # Nothing listens on port 1 of loopback: connection refused, at once.
        "postgresql+psycopg://postgres@127.0.0.1:1/virtfleet": "127.0.0.1",
        "this is not a url": "not a database URL",
        "mysql://root@127.0.0.1/virtfleet": "only sqlite and postgresql",
    }
    for url, words in cases.items():
        with pytest.raises(StoreError) as info:
            Store(url)
        msg = str(info.value)
        assert words in msg, msg
        assert "\n" not in msg and "Traceback" not in msg
        assert info.value.__cause__ is None
        assert info.value.__context__ is None or info.value.__suppress_context__


def test_a_bad_store_url_under_serve_is_one_line_without_alembics_narration(
        tmp_path: Any) -> None:
    """Regression: `serve` logs at INFO, and a store it could not open printed alembic's
    plugin and context lines (seven) before the one-line error."""
    env = {**os.environ, "VIRTFLEET_DB": "postgresql+psycopg://postgres@127.0.0.1:1/virtfleet",
           "VIRTFLEET_RUN_DIR": str(tmp_path / "run")}
    p = subprocess.run([sys.executable, "-m", "virtfleet.cli.main", "serve"], env=env,
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode != 0
    assert p.stderr.splitlines() == [p.stderr.strip()], p.stderr
    assert p.stderr.startswith("virtfleet: error: store: cannot open"), p.stderr


@pytest.mark.postgres
def test_missing_postgres_database_is_a_store_error() -> None:
    base = os.environ.get("VIRTFLEET_TEST_PG_URL", "")
    if not base:
        if os.environ.get("VIRTFLEET_REQUIRE_PG") == "1":
            pytest.fail("VIRTFLEET_REQUIRE_PG=1 but VIRTFLEET_TEST_PG_URL is not set")
        pytest.skip("VIRTFLEET_TEST_PG_URL is not set")
    url = make_url(base).set(database="vft_no_such_database").render_as_string(False)
    with pytest.raises(StoreError) as info:
        Store(url)
    assert "vft_no_such_database" in str(info.value)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------ inventory


def test_apply_then_fleet_gives_the_inventory_back(store: Store) -> None:
    plan = store.apply(parse_fleet(copy.deepcopy(BASE)))
    assert plan.changed == [] and plan.removed == []
    assert plan.added == [
        ("site", "oregon", "Oregon DC"),
        ("site", "texas", ""),
        ("pod", "or-pod1", "in site oregon"),
        ("pod", "or-pod2", "in site oregon"),
        ("pod", "tx-pod1", "in site texas"),
        ("hypervisor", "hv1", "in pod or-pod1: qemu+ssh://hv1.example.com/system"),
        ("hypervisor", "hv2", "in pod or-pod1: qemu+ssh://hv2.example.com/system"),
        ("hypervisor", "hv3", "in pod or-pod2: qemu+tcp://10.0.0.3/system"),
        ("hypervisor", "hv4", "in pod tx-pod1: test:///tmp/node4.xml"),
        ("group", "db", ""),  # named by hv2 only: created implicitly
        ("group", "web", "web servers"),
    ]
    fleet = store.fleet()
    assert fleet.groups == (HostGroup(name="db"), HostGroup(name="web", description="web servers"))
    assert [s.name for s in fleet.sites] == ["oregon", "texas"]
    oregon, texas = fleet.sites
    assert oregon.description == "Oregon DC"
    pod1 = oregon.pods[0]
    assert pod1.storage is not None
    assert (pod1.storage.type, pod1.storage.source, pod1.storage.target, pod1.storage.pool) == (
        "netfs", "filer1:/vol/vms", "/var/lib/virtfleet/pod", None)
    assert oregon.pods[1].storage is None
    tx = texas.pods[0].storage
    assert tx is not None and (tx.type, tx.target, tx.pool) == ("dir", "/srv/vms", "txpool")
    hv2 = pod1.hypervisors[1]
    assert (hv2.name, hv2.groups, hv2.maintenance) == ("hv2", ("web", "db"), True)
    # The store now equals the file: nothing more to do, and a round trip through YAML agrees.
    assert store.plan_apply(parse_fleet(copy.deepcopy(BASE))).empty
    assert store.apply(parse_fleet(copy.deepcopy(BASE))).empty
    assert store.plan_apply(parse_fleet(yaml.safe_load(dump_fleet(fleet)))).empty


def _changed_fleet() -> dict[str, Any]:
    new = copy.deepcopy(BASE)
    new["groups"][0]["description"] = "front ends"
    oregon = new["sites"][0]
    oregon["description"] = "Oregon"
    pod1, pod2 = oregon["pods"]
    pod1["storage"]["source"] = "filer2:/vol/vms"
    hv1, hv2 = pod1["hypervisors"]
    hv1["uri"] = "qemu+ssh://hv1b.example.com/system"
    hv2["groups"] = ["web"]
    hv2["maintenance"] = False
    pod1["hypervisors"].append(pod2["hypervisors"][0])  # hv3 moves to or-pod1, with qemu+tcp
    pod1["insecure_transport"] = True
    oregon["pods"] = [pod1]  # or-pod2 goes
    new["sites"][1] = {  # texas goes, virginia comes
        "name": "virginia",
        "pods": [{"name": "va-pod1", "hypervisors": [
            {"name": "hv5", "uri": "qemu+ssh://hv5.example.com/system", "groups": ["cache"]}]}],
    }
    return new


def test_plan_apply_reports_exact_changes_and_writes_nothing(base: Store) -> None:
    base.replace_host_domains("hv4", [dom("a", uuid_of(1)), dom("b", uuid_of(2))], T0)
    base.replace_host_domains("hv3", [dom("c", uuid_of(3))], T0)
    before = (base.fleet(), base.hypervisors(), base.fleet_vms(), base.host_statuses())

    plan = base.plan_apply(parse_fleet(_changed_fleet()))
    assert plan.added == [
        ("site", "virginia", ""),
        ("pod", "va-pod1", "in site virginia"),
        ("hypervisor", "hv5", "in pod va-pod1: qemu+ssh://hv5.example.com/system"),
        ("group", "cache", ""),
    ]
    assert plan.changed == [
        ("site", "oregon", "description: 'Oregon DC' -> 'Oregon'"),
        ("pod", "or-pod1", "storage: netfs filer1:/vol/vms at /var/lib/virtfleet/pod"
                           " -> netfs filer2:/vol/vms at /var/lib/virtfleet/pod"),
        ("pod", "or-pod1", "insecure_transport: false -> true"),
        ("hypervisor", "hv1",
         "uri: qemu+ssh://hv1.example.com/system -> qemu+ssh://hv1b.example.com/system"),
        ("hypervisor", "hv2", "groups: [web, db] -> [web]"),
        ("hypervisor", "hv2", "maintenance: on -> off"),
        ("hypervisor", "hv3", "moved to pod or-pod1"),
        ("group", "web", "description: 'web servers' -> 'front ends'"),
    ]
    assert plan.removed == [
        ("site", "texas", ""),
        ("pod", "or-pod2", "in site oregon"),
        ("pod", "tx-pod1", "in site texas"),
        ("hypervisor", "hv4", "in pod tx-pod1; forgets 2 observed VMs"),
        ("group", "db", ""),
    ]
    assert (base.fleet(), base.hypervisors(), base.fleet_vms(), base.host_statuses()) == before

    applied = base.apply(parse_fleet(_changed_fleet()))
    assert applied == plan
    assert base.plan_apply(parse_fleet(_changed_fleet())).empty
    hosts = base.hypervisors()
    assert [(h.name, h.site, h.pod, h.uri, h.groups, h.maintenance) for h in hosts] == [
        ("hv1", "oregon", "or-pod1", "qemu+ssh://hv1b.example.com/system", ("web",), False),
        ("hv2", "oregon", "or-pod1", "qemu+ssh://hv2.example.com/system", ("web",), False),
        ("hv3", "oregon", "or-pod1", "qemu+tcp://10.0.0.3/system", (), False),
        ("hv5", "virginia", "va-pod1", "qemu+ssh://hv5.example.com/system", ("cache",), False),
    ]
    # hv4 went with its VMs and status; hv3 moved pods and kept its VM.
    assert [(v.host, v.pod, v.domain.name) for v in base.fleet_vms()] == [
        ("hv3", "or-pod1", "c")]
    assert [s.host for s in base.host_statuses()] == ["hv3"]
    assert [g.name for g in base.fleet().groups] == ["cache", "web"]


def test_apply_can_swap_uris_between_hypervisors(base: Store) -> None:
    new = copy.deepcopy(BASE)
    hv1, hv2 = new["sites"][0]["pods"][0]["hypervisors"]
    hv1["uri"], hv2["uri"] = hv2["uri"], hv1["uri"]
    plan = base.apply(parse_fleet(new))
    assert len(plan.changed) == 2
    uris = {h.name: h.uri for h in base.hypervisors()}
    assert uris["hv1"] == "qemu+ssh://hv2.example.com/system"
    assert uris["hv2"] == "qemu+ssh://hv1.example.com/system"


def test_apply_is_all_or_nothing(base: Store) -> None:
    base.replace_host_domains("hv4", [dom("a", uuid_of(1))], T0)
    before = (base.fleet(), base.hypervisors(), base.fleet_vms(), base.host_statuses())
    # Changes to existing rows, removals, additions... and two new hypervisors sharing a uri.
    # The Fleet model would refuse that; built unvalidated, only the database can say no, late.
    data = _changed_fleet()
    data["sites"][1]["pods"][0]["hypervisors"].append(
        {"name": "hv6", "uri": "qemu+ssh://hv5.example.com/system"})
    bad = Fleet.model_construct(
        groups=tuple(HostGroup.model_validate(g) for g in data["groups"]),
        sites=tuple(Site.model_validate(s) for s in data["sites"]),
    )
    with pytest.raises(Conflict) as info:
        base.apply(bad)
    assert "\n" not in str(info.value)
    assert (base.fleet(), base.hypervisors(), base.fleet_vms(), base.host_statuses()) == before


def test_add_and_remove_hypervisor(store: Store) -> None:
    store.add_hypervisor("oregon", "or-pod1",
                         Hypervisor(name="hv1", uri="qemu+ssh://hv1/system", groups=("web",)))
    store.add_hypervisor("oregon", "or-pod1", Hypervisor(name="hv2", uri="qemu+ssh://hv2/system",
                                                         groups=("web", "db"), maintenance=True))
    store.add_hypervisor("texas", "tx-pod1", Hypervisor(name="hv3", uri="qemu+ssh://hv3/system"))
    assert [(h.name, h.site, h.pod, h.groups, h.maintenance) for h in store.hypervisors()] == [
        ("hv1", "oregon", "or-pod1", ("web",), False),
        ("hv2", "oregon", "or-pod1", ("web", "db"), True),
        ("hv3", "texas", "tx-pod1", (), False),
    ]
    assert [g.name for g in store.fleet().groups] == ["db", "web"]

    with pytest.raises(Conflict, match="hypervisor 'hv1' is already"):
        store.add_hypervisor("oregon", "or-pod1", Hypervisor(name="hv1", uri="qemu:///system"))
    with pytest.raises(Conflict, match="already belongs to hypervisor 'hv2'"):
        store.add_hypervisor("oregon", "or-pod1",
                             Hypervisor(name="hv9", uri="qemu+ssh://hv2/system"))
    with pytest.raises(Conflict, match="pod 'or-pod1' is in site 'oregon'"):
        store.add_hypervisor("texas", "or-pod1", Hypervisor(name="hv9", uri="qemu:///system"))
    with pytest.raises(InvalidInput):
        store.add_hypervisor("bad site", "p", Hypervisor(name="hv9", uri="qemu:///system"))
    assert host_names(store) == ["hv1", "hv2", "hv3"]  # the failures left nothing behind

    store.replace_host_domains("hv2", [dom("vm1", uuid_of(1))], T0)
    store.set_host_status(HostStatus(host="hv2", reachable=False, error="boom", observed_at=T1))
    store.remove_hypervisor("hv2")
    assert host_names(store) == ["hv1", "hv3"]
    assert store.fleet_vms() == []
    assert store.host_statuses() == []
    with pytest.raises(NotFound, match="hypervisor 'hv2' is not in the inventory"):
        store.remove_hypervisor("hv2")


def test_hypervisor_filters(base: Store) -> None:
    assert host_names(base) == ["hv1", "hv2", "hv3", "hv4"]
    assert host_names(base, site="oregon") == ["hv1", "hv2", "hv3"]
    assert host_names(base, pod="or-pod1") == ["hv1", "hv2"]
    assert host_names(base, host="hv3") == ["hv3"]
    assert host_names(base, group="web") == ["hv1", "hv2"]
    assert host_names(base, group="db") == ["hv2"]
    assert host_names(base, site="oregon", group="web", pod="or-pod1") == ["hv1", "hv2"]
    assert host_names(base, site="texas", pod="or-pod1") == []
    for kw, words in (({"site": "mars"}, "site 'mars' is not in the inventory"),
                      ({"pod": "nope"}, "pod 'nope' is not in the inventory"),
                      ({"host": "hv9"}, "host 'hv9' is not in the inventory"),
                      ({"group": "gpu"}, "group 'gpu' is not in the inventory")):
        with pytest.raises(NotFound) as info:
            base.hypervisors(**kw)
        assert str(info.value) == words
        with pytest.raises(NotFound):
            base.fleet_vms(**kw)


# ------------------------------------------------------------------------------ observed state


def test_replace_host_domains_inserts_updates_and_deletes(base: Store) -> None:
    base.replace_host_domains("hv1", [dom("a", uuid_of(1)), dom("b", uuid_of(2), "shut off")], T0)
    base.replace_host_domains("hv2", [dom("z", uuid_of(9))], T0)
    vms = base.fleet_vms(host="hv1")
    assert [(v.domain.name, v.domain.state, v.domain.id, v.observed_at) for v in vms] == [
        ("a", "running", 1, T0), ("b", "shut off", None, T0)]
    assert vms[0].site == "oregon" and vms[0].pod == "or-pod1" and vms[0].host == "hv1"

    # a changed, b gone, c new; hv2 untouched.
    base.replace_host_domains(
        "hv1", [dom("a", uuid_of(1), "paused", vcpus=8, memory_mib=1024),
                dom("c", uuid_of(3))], T1)
    vms = base.fleet_vms(host="hv1")
    assert [v.domain for v in vms] == [
        dom("a", uuid_of(1), "paused", id=None, vcpus=8, memory_mib=1024),
        dom("c", uuid_of(3)),
    ]
    assert {v.observed_at for v in vms} == {T1}
    assert [v.domain.name for v in base.fleet_vms(host="hv2")] == ["z"]

    base.replace_host_domains("hv1", [], T1)
    assert base.fleet_vms(host="hv1") == []
    assert {s.host: s.reachable for s in base.host_statuses()} == {"hv1": True, "hv2": True}
    with pytest.raises(NotFound, match="hypervisor 'hv9'"):
        base.replace_host_domains("hv9", [], T1)


def test_replace_many_in_one_transaction(base: Store) -> None:
    base.replace_many({"hv1": [dom("a", uuid_of(1))], "hv2": [dom("b", uuid_of(2))]}, T0)
    # The VM migrated from hv1 to hv2 between two syncs.
    base.replace_many({"hv1": [], "hv2": [dom("b", uuid_of(2)), dom("a", uuid_of(1))]}, T1)
    assert [(v.host, v.domain.name) for v in base.fleet_vms()] == [("hv2", "a"), ("hv2", "b")]
    with pytest.raises(NotFound):
        base.replace_many({"hv1": [dom("x", uuid_of(7))], "ghost": []}, T1)
    assert [(v.host, v.domain.name) for v in base.fleet_vms()] == [("hv2", "a"), ("hv2", "b")]


def test_a_vm_is_kept_per_host_and_delete_is_per_host(base: Store) -> None:
    base.replace_host_domains("hv1", [dom("web1", uuid_of(1)), dom("web2", uuid_of(2))], T0)
    base.upsert_domain("hv3", dom("web1", uuid_of(1), "paused"), T1)  # migrating to hv3
    # Until the source reports, the VM is on both: the store must show that, not hide it.
    where = sorted((v.host, v.domain.state) for v in base.fleet_vms() if v.domain.name == "web1")
    assert where == [("hv1", "running"), ("hv3", "paused")]
    base.delete_domain("hv1", uuid_of(1))  # the source's "undefined" event
    vms = {v.domain.name: v for v in base.fleet_vms()}
    assert (vms["web1"].host, vms["web1"].pod, vms["web1"].observed_at) == ("hv3", "or-pod2", T1)
    assert vms["web2"].host == "hv1"
    base.delete_domain("hv1", uuid_of(1))  # a repeat is a no-op
    base.delete_domain("hv3", uuid_of(1))
    assert [v.domain.name for v in base.fleet_vms()] == ["web2"]
    # a full list of one host does not disturb the same uuid on another
    base.replace_many({"hv1": [dom("web2", uuid_of(2))], "hv2": [dom("dup", uuid_of(2))]}, T1)
    assert sorted(v.host for v in base.fleet_vms()) == ["hv1", "hv2"]
    with pytest.raises(NotFound):
        base.replace_many({"hv1": [], "gone": []}, T1)
    base.replace_many({"hv1": [], "gone": []}, T1, skip_unknown=True)
    assert [v.host for v in base.fleet_vms()] == ["hv2"]
    with pytest.raises(NotFound):
        base.upsert_domain("nope", dom("x", uuid_of(5)), T1)
    with pytest.raises(NotFound):
        base.delete_domain("nope", uuid_of(2))


def test_fleet_vms_filters_and_order(base: Store) -> None:
    base.replace_many({
        "hv1": [dom("b", uuid_of(1)), dom("a", uuid_of(2), "shut off")],
        "hv2": [dom("c", uuid_of(3), "paused")],
        "hv3": [dom("d", uuid_of(4))],
        "hv4": [dom("e", uuid_of(5), "shut off")],
    }, T0)

    def names(**kw: Any) -> list[str]:
        return [v.domain.name for v in base.fleet_vms(**kw)]

    assert names() == ["a", "b", "c", "d", "e"]  # site, pod, host, name
    assert names(state="running") == ["b", "d"]
    assert names(state="shut off") == ["a", "e"]
    assert names(group="web") == ["a", "b", "c"]
    assert names(group="db") == ["c"]
    assert names(group="web", state="running") == ["b"]
    assert names(site="texas") == ["e"]
    assert names(pod="or-pod2") == ["d"]
    assert names(host="hv2") == ["c"]
    assert names(state="crashed") == []
    assert names(name="c") == ["c"] and names(name="c", host="hv1") == []
    assert names(name="nope") == []
    vm = base.fleet_vms(host="hv4")[0]
    assert vm.as_json()["observed_at"] == "2026-01-02T03:04:05.600000+00:00"


def test_datetimes_are_aware_utc(base: Store) -> None:
    plus2 = datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    base.replace_host_domains("hv1", [dom("a", uuid_of(1))], plus2)
    at = base.fleet_vms()[0].observed_at
    assert at == plus2 and at is not None and at.tzinfo == UTC
    with pytest.raises(InvalidInput, match="observed_at"):
        base.replace_host_domains("hv1", [], datetime(2026, 1, 1))


def test_host_status(base: Store) -> None:
    assert base.host_statuses() == []
    base.set_host_status(HostStatus(host="hv2", reachable=False, error="timed out", observed_at=T0))
    base.set_host_status(HostStatus(host="hv1", reachable=True, observed_at=T0))
    assert base.host_statuses() == [
        HostStatus(host="hv1", reachable=True, error="", observed_at=T0),
        HostStatus(host="hv2", reachable=False, error="timed out", observed_at=T0),
    ]
    base.replace_host_domains("hv2", [], T1)  # a successful sync clears the error
    assert base.host_statuses()[1] == HostStatus(host="hv2", reachable=True, observed_at=T1)
    with pytest.raises(NotFound):
        base.set_host_status(HostStatus(host="ghost", reachable=True))


def test_controller_registration(store: Store) -> None:
    assert store.controller() is None
    first = ControllerRecord(url="http://127.0.0.1:8000", token="t1", pid=100, hostname="mgmt1",
                             started_at=T0, heartbeat_at=T0)
    store.register_controller(first)
    assert store.controller() == first
    store.heartbeat_controller(100, T1)
    rec = store.controller()
    assert rec is not None and rec.heartbeat_at == T1 and rec.started_at == T0

    second = ControllerRecord(url="http://127.0.0.1:8001", token="t2", pid=200, hostname="mgmt2",
                              started_at=T1, heartbeat_at=T1)
    with pytest.raises(Conflict, match="pid 100 on mgmt1"):
        store.register_controller(second)  # only over the registration it judged dead
    with pytest.raises(Conflict):
        store.register_controller(second, replacing=first)  # first has beaten since: stale view
    assert store.controller() == rec
    store.register_controller(second, replacing=rec)  # replaces the first
    assert store.controller() == second
    with pytest.raises(NotFound, match="pid 100"):
        store.heartbeat_controller(100, T1)
    store.unregister_controller(100)  # not the registered one: no effect
    assert store.controller() == second
    store.unregister_controller(200)
    assert store.controller() is None


def test_operations_journal(base: Store) -> None:
    assert base.operations() == []
    made = (Made("claim", "hv1", "web1"), Made("volume", "hv1", "/pod/web1.qcow2"))
    rec = OperationRecord(id="op-1", kind="create", target="web1", hostname="mgmt1", pid=100,
                          started_at=T0, state="running", steps=())
    base.begin_operation(rec)
    with pytest.raises(Conflict):
        base.begin_operation(rec)  # one row per operation id
    base.record_step("op-1", made[:1])
    assert base.operations() == [replace(rec, steps=made[:1])]
    base.fail_operation("op-1", made, "volume: disk full")
    [failed] = base.operations()
    assert (failed.state, failed.steps, failed.error) == ("failed", made, "volume: disk full")
    base.end_operation("op-1")
    assert base.operations() == []
    with pytest.raises(InvalidInput, match="started_at"):
        base.begin_operation(OperationRecord(id="op-2", kind="create", target="x",
                                             hostname="m", pid=1, started_at=datetime(2026, 1, 1),
                                             state="running", steps=()))


def test_operator_maintenance_shows_in_hypervisors(base: Store) -> None:
    assert base.maintenance_records() == []
    assert base.start_maintenance("hv1", T0, "mgmt1", 100, "disk swap")
    assert not base.start_maintenance("hv1", T1, "mgmt2", 200)  # the first record stays
    [rec] = base.maintenance_records()
    assert (rec.host, rec.since, rec.hostname, rec.pid, rec.reason) == (
        "hv1", T0, "mgmt1", 100, "disk swap")
    # hv2 is in maintenance by the fleet file, hv1 by an operator: placement reads both.
    assert [h.name for h in base.hypervisors() if h.maintenance] == ["hv1", "hv2"]
    base.apply(parse_fleet(copy.deepcopy(BASE)))  # an apply does not end an operator's
    assert [r.host for r in base.maintenance_records()] == ["hv1"]
    assert base.end_maintenance("hv1") and not base.end_maintenance("hv1")
    assert [h.name for h in base.hypervisors() if h.maintenance] == ["hv2"]
    for call in (lambda: base.start_maintenance("ghost", T0, "m", 1),
                 lambda: base.end_maintenance("ghost"),
                 lambda: base.maintenance_records("ghost")):
        with pytest.raises(NotFound, match="'ghost' is not in the inventory"):
            call()
    with pytest.raises(InvalidInput, match="at"):
        base.start_maintenance("hv3", datetime(2026, 1, 1), "m", 1)


def test_store_is_one_object_over_one_engine(store_url: str) -> None:
    """Every concern's methods share the Store's one engine and transaction helper: a write
    through one part is seen by a read through another, and closing the Store closes them all."""
    from virtfleet.inventory.base import StoreBase

    with Store(store_url) as s:
        assert isinstance(s, StoreBase) and repr(s).startswith("Store(")
        assert Store._tx is StoreBase._tx  # no part brings a transaction of its own
        s.apply(parse_fleet(copy.deepcopy(BASE)))
        s.start_maintenance("hv3", T0, "m", 1)
        s.replace_host_domains("hv3", [dom("a", uuid_of(1))], T0)
        assert [v.domain.name for v in s.fleet_vms(host="hv3")] == ["a"]
        assert [h.name for h in s.hypervisors(host="hv3") if h.maintenance] == ["hv3"]


# ------------------------------------------------------------------------------ scale


def big_fleet(sites: int = 3, pods: int = 5, hosts: int = 100) -> Fleet:
    data: dict[str, Any] = {"groups": [{"name": "all"}], "sites": []}
    for s in range(sites):
        site: dict[str, Any] = {"name": f"site{s}", "pods": []}
        for p in range(pods):
            hvs = [
                {"name": f"hv-{s}-{p}-{h:03d}", "uri": f"qemu+tcp://10.{s}.{p}.{h + 1}/system",
                 "groups": ["all"] + (["even"] if h % 2 == 0 else [])}
                for h in range(hosts)
            ]
            site["pods"].append({"name": f"pod-{s}-{p}", "insecure_transport": True,
                                 "hypervisors": hvs})
        data["sites"].append(site)
    return parse_fleet(data)


def test_fleet_of_1500_hosts_and_15000_vms(tmp_path: Any) -> None:
    fleet = big_fleet()
    with Store(f"sqlite:///{tmp_path / 'big.db'}") as store:
        plan = store.apply(fleet)
        assert len([a for a in plan.added if a[0] == "hypervisor"]) == 1500
        names = [h.name for _, _, h in fleet.hypervisors()]
        results = {
            n: [dom(f"vm{v}", uuid_of(i * 10 + v), "running" if v < 8 else "shut off")
                for v in range(10)]
            for i, n in enumerate(names)
        }
        store.replace_many(results, T0)
        vms = store.fleet_vms()
        assert len(vms) == 15000
        assert len({v.domain.uuid for v in vms}) == 15000
        assert len(store.fleet_vms(pod="pod-1-2")) == 1000
        assert len(store.fleet_vms(site="site2")) == 5000
        assert len(store.fleet_vms(group="even")) == 7500
        assert len(store.fleet_vms(state="shut off")) == 3000
        assert len(store.fleet_vms(group="even", state="shut off", site="site0")) == 500

        # The next sync: every host lost its last VM and the rest are observed again.
        store.replace_many({n: doms[:-1] for n, doms in results.items()}, T1)
        vms = store.fleet_vms()
        assert len(vms) == 13500 and {v.observed_at for v in vms} == {T1}
        assert len(store.host_statuses()) == 1500
        assert len(store.hypervisors(group="even")) == 750
        assert store.plan_apply(fleet).empty


def test_fleet_file_round_trip(store: Store, tmp_path: Any) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(dump_fleet(parse_fleet(copy.deepcopy(BASE))))
    store.apply(load_fleet(path))
    path.write_text(dump_fleet(store.fleet()))
    assert store.plan_apply(load_fleet(path)).empty


def test_head_revision_constant_matches_the_migrations() -> None:
    # Store skips importing alembic when the database is at HEAD_REVISION; a new migration
    # file must move that constant too, or old databases would never be upgraded.
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from virtfleet.inventory.base import HEAD_REVISION, MIGRATIONS_DIR

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(cfg).get_current_head() == HEAD_REVISION
