"""VM lifecycle verbs on the test driver: in process for state changes, through the CLI for
what an operator sees (each CLI call opens a fresh test-driver hypervisor from its node file)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from virtfleet.cli.fields import options_named
from virtfleet.cli.vm import UNDEFINE_FLAGS
from virtfleet.errors import Conflict, NotFound
from virtfleet.fleet.locate import locate_vm
from virtfleet.inventory.store import Store
from virtfleet.virt.fanout import ConnectionPool
from virtfleet.virt.guest import Guest, Removal
from virtfleet.virt.host import Host

from .cli import run
from .nodes import node_uri


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host.open(node_uri(tmp_path, "two-vms.xml"))


def test_the_chapters_verbs_change_state(host: Host) -> None:
    g = Guest.lookup(host, "centos.template")
    assert g.state == "shut off"
    g.start()
    assert g.state == "running" and g.info().id is not None
    g.suspend()
    assert g.state == "paused"
    g.resume()
    g.reboot()
    assert g.state == "running"
    assert g.shutdown(timeout=5, force=False) == "shut off"  # the test driver obeys ACPI
    with pytest.raises(Conflict, match="not running"):
        g.shutdown(timeout=1, force=False)
    g.start()
    g.destroy()
    assert g.state == "shut off"
    g.set_autostart(True)
    assert g.info().autostart


def test_dominfo_and_domstats(host: Host) -> None:
    info = Guest.lookup(host, "vm1.example.com").info()
    assert (info.state, info.vcpus, info.max_memory_kib) == ("running", 4, 32 * 2**20)
    assert info.os_type  # "hvm" on QEMU; the test driver says "linux"
    assert info.persistent and not info.managed_save and info.snapshots == 0
    stats = Guest.lookup(host, "vm1.example.com").stats()
    assert stats["state.state"] == 1


def test_undefine_refuses_to_lose_snapshots_unless_named(host: Host) -> None:
    g = Guest.lookup(host, "centos.template")
    host.conn.lookupByName("centos.template").snapshotCreateXML(
        "<domainsnapshot><name>before-deploy</name></domainsnapshot>", 0)
    with pytest.raises(Conflict, match=r"1 snapshot\(s\) \(`remove_snapshots`\)") as exc:
        g.undefine(Removal())
    assert (exc.value.host, exc.value.vm) == (host.label, "centos.template")
    # `vm undefine` words the request's field as its option.
    with pytest.raises(Conflict) as exc, options_named(UNDEFINE_FLAGS):
        g.undefine(Removal())
    assert exc.value.message == (f"{host.label}/centos.template: undefine would lose 1 "
                                 "snapshot(s) (--remove-snapshots); name what may go")
    assert host.has_domain("centos.template")  # nothing was lost
    g.undefine(Removal(snapshots=True))
    assert not host.has_domain("centos.template")


def fleet(tmp_path: Path) -> Path:
    data = {"sites": [{"name": "oregon", "pods": [
        {"name": "or-pod1", "hypervisors": [
            {"name": "hv1", "uri": node_uri(tmp_path, "two-vms.xml", "hv1.xml")},
            {"name": "hv2", "uri": node_uri(tmp_path, "empty.xml", "hv2.xml")}]},
        {"name": "or-pod2", "hypervisors": [
            {"name": "hv3", "uri": node_uri(tmp_path, "two-vms.xml", "hv3.xml")}]}]}]}
    p = tmp_path / "fleet.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_locate_by_name_anywhere_and_refuse_ambiguity(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    from virtfleet.inventory.fleetfile import load_fleet
    store.apply(load_fleet(fleet(tmp_path)))
    pool = ConnectionPool()
    try:
        # hv1 and hv3 both carry the fixture's VMs: a name on two hosts must be disambiguated
        with pytest.raises(Conflict, match="hv1, hv3"):
            locate_vm("vm1.example.com", store, pool)
        assert locate_vm("vm1.example.com", store, pool, host="hv3").name == "hv3"
        with pytest.raises(NotFound, match="not defined on any hypervisor"):
            locate_vm("nope", store, pool)
    finally:
        pool.close()
        store.close()


def test_cli_verbs_and_errors(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    assert run(db, "apply", "-f", str(fleet(tmp_path))).code == 0
    r = run(db, "vm", "start", "centos.template", "--host", "hv1")
    assert r.code == 0 and r.out == "Domain 'centos.template' started\n"
    r = run(db, "vm", "start", "vm1.example.com", "--host", "hv1")
    assert r.code == 4 and "already running" in r.err
    r = run(db, "vm", "dominfo", "vm2.example.com", "--host", "hv3", "--json")
    assert r.json()["host"] == "hv3" and r.json()["state"] == "paused"
    assert "<name>vm2.example.com</name>" in run(db, "vm", "dumpxml", "vm2.example.com",
                                                 "--host", "hv1").out
    r = run(db, "vm", "start", "vm1.example.com")
    assert r.code == 4 and "several hypervisors" in r.err
    assert run(db, "vm", "start", "nope").code == 3
    assert run(db, "vm", "start", "bad;name").code == 2
    r = run(db, "vm", "start")
    assert r.code == 2 and "--all" in r.err
    r = run(db, "vm", "start", "x", "--pod", "or-pod1")
    assert r.code == 2 and "only go with --all" in r.err


def test_fleet_wide_forms_act_on_what_applies(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    run(db, "apply", "-f", str(fleet(tmp_path)))
    r = run(db, "vm", "start", "--all", "--json")
    assert r.code == 0
    assert sorted((o["host"], o["name"], o["result"]) for o in r.json()) == [
        ("hv1", "centos.template", "started"), ("hv3", "centos.template", "started")]
    r = run(db, "vm", "destroy", "--all", "--pod", "or-pod2", "--json")
    assert sorted(o["name"] for o in r.json()) == ["vm1.example.com", "vm2.example.com"]
    assert {o["host"] for o in r.json()} == {"hv3"}
    r = run(db, "vm", "resume", "--all")
    assert r.code == 0 and r.out.count("resumed") == 2


def test_a_host_that_fails_gets_a_row_not_a_partial_claim(tmp_path: Path) -> None:
    """Regression (issue 10, defect 7): `vm start --all` on hosts that did not answer printed
    an empty table, "no VM in scope needed it" and "results above are partial"."""
    from .nodes import refused_port

    data = yaml.safe_load(fleet(tmp_path).read_text())
    data["sites"][0]["pods"][0]["hypervisors"].append(
        {"name": "dead", "uri": f"qemu+tcp://127.0.0.1:{refused_port()}/system"})
    data["sites"][0]["pods"][0]["insecure_transport"] = True
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(data))
    db = tmp_path / "s.db"
    assert run(db, "apply", "-f", str(tmp_path / "fleet.yaml")).code == 0
    r = run(db, "vm", "start", "--all", "--host", "dead")
    assert r.code == 1
    assert r.out.splitlines()[2].startswith(" dead   -      failed: host-unavailable: "), r.out
    assert "needed it" not in r.err and "partial" not in r.err, r.err
    assert len(r.err.splitlines()) == 1 and r.err.startswith("virtfleet: dead: "), r.err
    r = run(db, "vm", "start", "--all", "--pod", "or-pod1")
    assert r.code == 1
    rows = sorted(line.split()[0] for line in r.out.splitlines()[2:])
    assert rows == ["dead", "hv1"], r.out
    assert r.err.splitlines()[-1] == "virtfleet: 1 of 3 host(s) failed", r.err
