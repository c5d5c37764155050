"""Fleet queries and the controller against real libvirtd daemons in the lab."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lxml import etree
from lxml.builder import E

from tests.integration.conftest import LabFixture
from tests.unit.cli import run, running_controller
from tests.unit.nodes import refused_port
from virtfleet.errors import HostUnavailable
from virtfleet.inventory.records import HostRecord
from virtfleet.virt.fanout import ConnectionPool, fan_out
from virtfleet.virt.host import Host

pytestmark = pytest.mark.integration


def domain_xml(name: str) -> str:
    """A minimal TCG domain that can be defined (never started here)."""
    root = E.domain(
        E.name(name), E.uuid(str(uuid.uuid4())), E.memory("65536", unit="KiB"), E.vcpu("1"),
        E.os(E.type("hvm", arch="x86_64")), type="qemu")
    return etree.tostring(root, encoding="unicode")


@pytest.fixture
def store_db(tmp_path: Path, lab: LabFixture) -> Path:
    db = tmp_path / "store.db"
    r = run(db, "apply", "-f", str(lab.fleet_file))
    assert r.code == 0, r.err
    return db


@pytest.fixture
def defined(lab: LabFixture) -> Iterator[dict[str, str]]:
    """One defined (shut off) VM per lab hypervisor; removed afterwards."""
    names = {}
    for h in lab.hosts:
        with Host.open(h.uri) as conn:
            names[h.name] = conn.define_domain(domain_xml(f"itest-{h.name}-{os.getpid()}"))
    yield names
    lab.heal()
    for h in lab.hosts:
        with Host.open(h.uri) as conn:
            conn.undefine_domain(names[h.name])


def wait_for(what: str, check: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_list_and_host_facts_across_real_daemons(lab: LabFixture, store_db: Path,
                                                  defined: dict[str, str]) -> None:
    r = run(store_db, "list", "--json")
    assert r.code == 0, r.err
    mine = {v["host"]: v for v in r.json() if v["name"].startswith("itest-")}
    assert set(mine) == {h.name for h in lab.hosts}
    for h in lab.hosts:
        vm = mine[h.name]
        assert vm["name"] == defined[h.name] and vm["state"] == "shut off"
        assert vm["pod"] == h.pod and vm["memory_mib"] == 64 and vm["vcpus"] == 1
    info = run(store_db, "host", "info", "--json").json()
    assert len(info) == 3 and all(i["cpus"] >= 1 for i in info)
    check = run(store_db, "host", "check", "--json").json()
    assert all(c["reachable"] and "qemu" in c["virt_types"] for c in check)
    assert run(store_db, "host", "version", "--json").json()[0]["driver"] == "QEMU"


def test_daemon_killed_mid_query_and_refusing_address(lab: LabFixture,
                                                      defined: dict[str, str]) -> None:
    victim = lab.hosts[1]
    hosts = [HostRecord(h.name, h.uri, "lab", h.pod) for h in lab.hosts]
    hosts.append(HostRecord("refuses", f"qemu+tcp://127.0.0.1:{refused_port()}/system",
                            "lab", "x"))

    def work(host: Host) -> int:
        first = len(host.list_domains())
        if host.label == victim.name:
            lab.kill_daemon(victim)  # dies between two calls of the same query
        return first + len(host.list_domains())

    pool = ConnectionPool()
    try:
        results = fan_out(hosts, work, pool, concurrency=4, deadline=60)
    finally:
        pool.close()
    by = {r.host.name: r for r in results}
    assert isinstance(by[victim.name].error, HostUnavailable)
    assert isinstance(by["refuses"].error, HostUnavailable)
    assert all(by[h.name].ok for h in lab.hosts if h.name != victim.name)


def test_hung_daemon_costs_one_deadline_and_is_named(lab: LabFixture, store_db: Path,
                                                     defined: dict[str, str]) -> None:
    hung = lab.hosts[0]
    lab.stop_daemon(hung)
    r = run(store_db, "list", "--json", env={"VIRTFLEET_HOST_DEADLINE": "3",
                                             "VIRTFLEET_CONNECT_TIMEOUT": "3"})
    assert r.code == 1
    assert f"{hung.name}: operation-timeout" in r.err
    assert {v["host"] for v in r.json() if v["name"].startswith("itest-")} == {
        h.name for h in lab.hosts[1:]}


@pytest.fixture
def controller(store_db: Path) -> Iterator[subprocess.Popen[str]]:
    with running_controller(store_db) as proc:
        yield proc


def test_controller_follows_events_and_reconnects(lab: LabFixture, store_db: Path,
                                                  controller: subprocess.Popen[str]) -> None:
    h = lab.hosts[2]
    name = f"itest-event-{os.getpid()}"

    def warm() -> tuple[set[str], str]:
        r = run(store_db, "list", "--json", "--host", h.name)
        # served by the controller: every row carries the time the controller saw it
        assert "asking the hypervisors" not in r.err
        assert all(v["observed_at"] for v in r.json()), r.json()
        return {v["name"] for v in r.json()}, r.err

    with Host.open(h.uri) as conn:
        conn.define_domain(domain_xml(name))
        try:
            wait_for("the define event", lambda: name in warm()[0])
        finally:
            conn.undefine_domain(name)
    wait_for("the undefine event", lambda: name not in warm()[0])

    lab.kill_daemon(h)
    wait_for("the controller to notice", lambda: f"{h.name}:" in warm()[1])
    lab.restart_daemon(h)
    wait_for("the controller to reconnect", lambda: f"{h.name}:" not in warm()[1])
