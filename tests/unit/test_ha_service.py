"""The HA service and its store on test-driver hypervisors: marking VMs HA (their own metadata,
autostart off, their definition kept), a group's policy, `ha enable` refusals, the fleet file's
BMCs in the store (never a password), `ha status`, and the CLI's words.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from virtfleet.errors import Conflict, InvalidInput, NotFound
from virtfleet.fleet.ha import EnableRequest, HAService, MarkRequest
from virtfleet.ha.credentials import BmcConfigError
from virtfleet.ha.definitions import Definitions
from virtfleet.inventory.fleetfile import dump_fleet, load_fleet, parse_fleet
from virtfleet.inventory.ha import Recovery, RecoveryStep
from virtfleet.inventory.store import Store
from virtfleet.virt import ha as vha
from virtfleet.virt.fanout import ConnectionPool
from virtfleet.xml.domain import VF_NS, Domain, FleetFacts

from .cli import run
from .nodes import node_uri

WEB01 = "3f1c2b7a-6a55-4c5e-9d7e-0b6f6a1d2c01"
T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def fleet_data(tmp_path: Path, bmc: bool = True) -> dict[str, Any]:
    hosts = [("hv1", "migrate-source.xml"), ("hv2", "ha-target.xml")]
    return {"groups": [{"name": "web", "ha": {"priority": 300}}, {"name": "db"}],
            "sites": [{"name": "oregon", "pods": [
                {"name": "or-pod1", "storage": {"type": "dir", "target": "/srv/or-pod1"},
                 "hypervisors": [
                     {"name": n, "uri": node_uri(tmp_path, f, f"{n}.xml"), "groups": ["web"],
                      **({"bmc": {"agent": "ipmilan", "address": f"127.0.0.{i + 1}",
                                  "username": "fence",
                                  "password_file": "/etc/virtfleet/bmc/pass"}}
                         if bmc else {})}
                     for i, (n, f) in enumerate(hosts)]},
                {"name": "or-pod2", "hypervisors": [
                    {"name": "hv9", "uri": node_uri(tmp_path, "empty.xml", "hv9.xml")}]}]}]}


@dataclass
class Env:
    store: Store
    pool: ConnectionPool
    service: HAService
    db: Path

    def host(self, name: str) -> Any:
        [r] = self.store.hypervisors(host=name)
        return self.pool.get(r)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    db = tmp_path / "s.db"
    store = Store(f"sqlite:///{db}")
    store.apply(parse_fleet(fleet_data(tmp_path)))
    pool = ConnectionPool()
    for r in store.hypervisors():
        store.replace_host_domains(r.name, pool.get(r).list_domains(), T0)
    service = HAService(store, pool)
    yield Env(store, pool, service, db)
    pool.close()
    store.close()


# ------------------------------------------------------------------ which VMs are HA


def test_marking_a_vm_writes_its_own_metadata_turns_autostart_off_and_keeps_its_definition(
        env: Env) -> None:
    h1 = env.host("hv1")
    vha.set_autostart(h1, WEB01, True, 5)
    marked = env.service.mark(MarkRequest(vm="web01", priority=250))
    assert (marked.host, marked.uuid, marked.priority, marked.source) == (
        "hv1", WEB01, 250, "marked")
    assert marked.autostart_turned_off
    found = vha.definition(h1, WEB01, 5)
    assert found is not None and not found.autostart
    facts = Domain.parse(found.xml).facts
    assert facts is not None and facts.ha_priority == 250
    assert f'xmlns:vf="{VF_NS}"' in found.xml  # libvirt put it in virtfleet's namespace
    [vm] = env.store.ha_vms()
    assert (vm.uuid, vm.name, vm.host, vm.marked_priority, vm.priority) == (
        WEB01, "web01", "hv1", 250, 250)
    assert Domain.parse(vm.definition).uuid == WEB01


def test_unmarking_takes_the_mark_away_and_the_store_forgets_it(env: Env) -> None:
    env.service.mark(MarkRequest(vm="web01"))
    out = env.service.unmark("web01")
    assert (out.priority, out.source) == (None, "none")
    found = vha.definition(env.host("hv1"), WEB01, 5)
    assert found is not None
    facts = Domain.parse(found.xml).facts
    assert facts is None or facts.ha_priority is None
    assert env.store.ha_vms() == []


def test_a_groups_policy_makes_its_vms_ha_and_survives_an_unmark(env: Env) -> None:
    doc = Domain.parse(vha.definition(env.host("hv1"), WEB01, 5).xml)  # type: ignore[union-attr]
    facts = doc.facts or FleetFacts()
    facts.app = "web"
    doc.set_facts(facts)
    env.host("hv1").define_domain(doc.to_xml())
    Definitions(env.store, env.pool, lambda: T0).hosts_synced(env.store.hypervisors())
    [vm] = env.store.ha_vms()
    assert (vm.name, vm.marked_priority, vm.app, vm.priority) == ("web01", None, "web", 300)
    out = env.service.unmark("web01")
    assert (out.priority, out.source) == (300, "group web")


def test_a_bad_priority_or_name_is_refused_before_anything_is_asked(env: Env) -> None:
    for req, field in ((MarkRequest(vm="web01", priority=1001), "priority"),
                       (MarkRequest(vm="web01", priority=-1), "priority"),
                       (MarkRequest(vm="../x"), "vm")):
        with pytest.raises(InvalidInput) as info:
            env.service.mark(req)
        assert info.value.field == field
    with pytest.raises(NotFound):
        env.service.mark(MarkRequest(vm="nosuch"))
    assert env.store.ha_vms() == []


def test_a_transient_vm_cannot_be_ha(env: Env) -> None:
    h2 = env.host("hv2")
    doc = Domain.parse(vha.definition(env.host("hv1"), WEB01, 5).xml)  # type: ignore[union-attr]
    doc.name = "temp01"
    doc.uuid = "3f1c2b7a-6a55-4c5e-9d7e-0b6f6a1d2c99"
    h2.conn.createXML(doc.to_xml(), 0)
    with pytest.raises(Conflict, match="transient"):
        env.service.mark(MarkRequest(vm="temp01"))


# ------------------------------------------------------------------ where HA acts


def test_enable_is_refused_for_a_pod_with_a_hypervisor_that_has_no_bmc(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'nobmc.db'}")
    store.apply(parse_fleet(fleet_data(tmp_path, bmc=False)))
    with HAService(store) as service, pytest.raises(BmcConfigError) as info:
        service.enable(EnableRequest(pod="or-pod1", check_bmcs=False))
    assert info.value.host == "hv1" and info.value.field == "bmc"
    assert "no bmc: block in the fleet file" in info.value.message
    assert "\n" not in info.value.message
    assert store.ha_pods() == {}
    store.close()


def test_enable_needs_another_hypervisor_to_restart_on(env: Env) -> None:
    with pytest.raises(InvalidInput, match="has 1 hypervisor"):
        env.service.enable(EnableRequest(pod="or-pod2", check_bmcs=False))
    with pytest.raises(NotFound):
        env.service.enable(EnableRequest(pod="nosuch", check_bmcs=False))
    assert env.store.ha_pods() == {}


def test_enable_and_disable(env: Env) -> None:
    done = env.service.enable(EnableRequest(pod="or-pod1", check_bmcs=False))
    assert (done.hosts, done.was_enabled) == (("hv1", "hv2"), False)
    assert env.service.enable(EnableRequest(pod="or-pod1", check_bmcs=False)).was_enabled
    assert list(env.store.ha_pods()) == ["or-pod1"]
    assert env.service.disable("or-pod1") is True
    assert env.service.disable("or-pod1") is False
    assert env.store.ha_pods() == {}


# ------------------------------------------------------------------ the store


def test_the_fleet_files_bmcs_and_group_policies_are_stored_without_any_password(
        env: Env, tmp_path: Path) -> None:
    bmcs = env.store.hypervisor_bmcs()
    assert sorted(bmcs) == ["hv1", "hv2"]
    assert bmcs["hv1"].password_file == "/etc/virtfleet/bmc/pass"
    assert env.store.group_ha() == {"web": 300}
    # The fleet written back from the store is the one applied.
    path = tmp_path / "back.yaml"
    path.write_text(dump_fleet(env.store.fleet()))
    assert env.store.plan_apply(load_fleet(path)).empty
    # A change shows in the plan and is applied; nothing resembling a password is stored.
    data = fleet_data(tmp_path)
    data["groups"][0]["ha"]["priority"] = 10
    data["sites"][0]["pods"][0]["hypervisors"][1]["bmc"]["port"] = 6230
    plan = env.store.apply(parse_fleet(data))
    assert ("group", "web", "ha: priority 300 -> priority 10") in plan.changed
    assert ("hypervisor", "hv2", "bmc: ipmilan 127.0.0.2 -> ipmilan 127.0.0.2:6230") \
        in plan.changed
    assert env.store.group_ha() == {"web": 10}
    with sqlite3.connect(env.db) as conn:
        specs = [json.loads(s) for (s,) in conn.execute("SELECT spec FROM hypervisor_bmcs")]
    assert [sorted(s) for s in specs] == [["address", "agent", "password_file", "username"],
                                          ["address", "agent", "password_file", "port",
                                           "username"]]


def test_the_recovery_journal_keeps_the_last_finished_recoveries_of_each_host(
        env: Env) -> None:
    from virtfleet.inventory.ha import RECOVERIES_KEPT

    for i in range(RECOVERIES_KEPT + 3):
        at = datetime(2026, 12, 1, 12, i, tzinfo=UTC)
        rec = Recovery(id=f"r{i:030d}", host="hv1", state="running", started_at=at,
                       updated_at=at, hostname="here", pid=1)
        env.store.begin_recovery(rec)
        env.store.record_recovery(rec.id, [RecoveryStep("suspect", at),
                                           RecoveryStep("done", at, detail="x")], "done", at)
    kept = env.store.recoveries("hv1")
    assert len(kept) == RECOVERIES_KEPT
    assert kept[-1].id == f"r{RECOVERIES_KEPT + 2:030d}"
    assert [s.kind for s in kept[-1].steps] == ["suspect", "done"]
    assert env.store.recoveries("hv1", running=True) == []


# ------------------------------------------------------------------ status and the CLI


def test_status_names_each_hosts_state_and_where_each_ha_vm_is(env: Env) -> None:
    env.service.mark(MarkRequest(vm="web01", priority=7))
    env.service.enable(EnableRequest(pod="or-pod1", check_bmcs=False))
    st = env.service.status()
    assert st.controller is None and st.pods == ("or-pod1",)
    assert {h.host: (h.state, h.ha, h.bmc) for h in st.hosts} == {
        "hv1": ("ok", True, True), "hv2": ("ok", True, True), "hv9": ("ok", False, False)}
    [vm] = st.vms
    assert (vm.vm, vm.priority, vm.source, vm.host, vm.state) == ("web01", 7, "marked", "hv1",
                                                                  "running")
    out = json.loads(json.dumps(st.as_json()))
    assert out["vms"][0]["vm"] == "web01" and out["hosts"][0]["state"] == "ok"


def test_the_cli_refuses_bad_input_in_one_line_naming_the_option(env: Env,
                                                                 tmp_path: Path) -> None:
    r = run(env.db, "ha", "set", "web01", "--priority", "5000")
    assert r.code == 2 and r.err.count("\n") == 1, r.err
    assert "--priority: must be a whole number from 0 to 1000" in r.err
    r = run(env.db, "ha", "enable", "or-pod2", "--no-check")
    assert r.code == 2 and "POD: or-pod2 has 1 hypervisor(s)" in r.err, r.err
    nobmc = tmp_path / "nobmc.db"
    path = tmp_path / "nobmc.yaml"
    path.write_text(yaml.safe_dump(fleet_data(tmp_path, bmc=False)))
    assert run(nobmc, "apply", "-f", str(path)).code == 0
    r = run(nobmc, "ha", "enable", "or-pod1")
    assert r.code == 2 and r.err.count("\n") == 1, r.err
    assert r.err.startswith("virtfleet: error: hv1: bmc: missing:")
    assert run(nobmc, "ha", "status", "--json").json()["pods"] == []
    for value, rule in (("-1", "must be 0 or more"), ("5000", "must be at most 3600 seconds"),
                        ("soon", "must be a number of seconds")):
        r = run(env.db, "serve", env={"VIRTFLEET_HA_GRACE": value})
        assert r.code == 2 and r.err.count("\n") == 1, r.err
        assert f"VIRTFLEET_HA_GRACE: {rule}" in r.err


def test_ha_power_asks_only_a_declared_bmc_and_says_why_it_cannot(env: Env) -> None:
    """`ha power [--on]` (the lab's BMCs power a host on: tests/integration/test_fence.py)."""
    for args, code, words in (
            (["hv9"], 2, "virtfleet: error: hv9: bmc: missing: this hypervisor has no bmc:"),
            (["nosuch", "--on"], 3, "virtfleet: error: host 'nosuch' is not in the inventory"),
            (["bad;name"], 2, "virtfleet: error: HOST: 'bad;name' is not a valid name"),
            # hv1's password file does not exist: the agent is never run
            (["hv1", "--on"], 1, "virtfleet: error: hv1: power on through fence_ipmilan "
             "failed: ")):
        r = run(env.db, "ha", "power", *args)
        assert (r.code, r.out, r.err.count("\n")) == (code, "", 1), (args, r.err)
        assert r.err.startswith(words), (args, r.err)
    with pytest.raises(BmcConfigError):
        env.service.power("hv9", on=True)


def test_the_cli_marks_and_shows(env: Env) -> None:
    r = run(env.db, "ha", "set", "web01", "--priority", "42")
    assert r.code == 0 and "Domain 'web01' is HA, restart priority 42 (on hv1)" in r.out, r.err
    r = run(env.db, "ha", "enable", "or-pod1", "--no-check")
    assert r.code == 0 and "HA is now enabled in pod or-pod1 (2 hypervisors)" in r.out, r.err
    r = run(env.db, "ha", "status")
    assert r.code == 0, r.err
    assert "no controller is running" in r.err
    lines = r.out.splitlines()
    assert lines[0].split() == ["Host", "Pod", "HA", "BMC", "State", "Since", "Detail"]
    assert any(line.split()[:5] == ["web01", "42", "marked", "hv1", "running"]
               for line in lines)
    r = run(env.db, "ha", "disable", "or-pod1")
    assert r.code == 0 and "HA is now disabled in pod or-pod1" in r.out


def test_the_ha_tables_on_both_backends(store_url: str, tmp_path: Path) -> None:
    from virtfleet.inventory.ha import HAVM, HAHost

    with Store(store_url) as store:
        store.apply(parse_fleet(fleet_data(tmp_path)))
        assert sorted(store.hypervisor_bmcs()) == ["hv1", "hv2"]
        assert store.enable_ha("or-pod1", T0, "here", 1) is True
        assert store.enable_ha("or-pod1", T0, "here", 1) is False
        vm = HAVM(uuid=WEB01, name="web01", host="hv1", marked_priority=None, app="web",
                  definition="<domain/>", defined_at=T0)
        store.record_ha_vm(vm)
        store.record_ha_vm(vm)  # replaced, not doubled
        [got] = store.ha_vms(host="hv1")
        assert (got.priority, got.app, got.defined_at) == (300, "web", T0)
        store.move_ha_vm(WEB01, None, only_from="hv2")  # the record names hv1: unchanged
        assert store.ha_vms(uuid=WEB01)[0].host == "hv1"
        store.move_ha_vm(WEB01, "hv2")
        assert store.ha_vms(uuid=WEB01)[0].host == "hv2"
        store.set_ha_host(HAHost("hv1", "fenced", T0, T0, "powered off", T0))
        store.set_ha_host(HAHost("hv1", "restarting", T0, T0, "1 of 1", T0))
        assert store.ha_hosts()["hv1"].state == "restarting"
        # A hypervisor leaving the inventory takes its BMC, HA state and VM placement along.
        data = fleet_data(tmp_path)
        del data["sites"][0]["pods"][0]["hypervisors"][1]
        store.apply(parse_fleet(data))
        assert sorted(store.hypervisor_bmcs()) == ["hv1"]
        assert store.ha_vms(uuid=WEB01)[0].host is None
        assert store.forget_ha_vm(WEB01) is True
        assert store.disable_ha("or-pod1") is True
