"""Two `virtfleet serve` on one PostgreSQL store over test-driver hypervisors in two sites
(docs/scale-out.md): each takes one site, `list` and `sync` cover both through them, and a
controller killed with SIGKILL hands its site to the other; three race to take over the
operations of a killed one and of dead CLIs, each once. The lab version, with real
libvirtd daemons and a pause past the lease, is tests/integration/test_scale_out.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from tests.conftest import _postgres_url
from tests.unit.cli import Result, run
from tests.unit.nodes import node_uri, silent_server
from virtfleet.inventory.claims import ClaimRequest
from virtfleet.inventory.records import Made, OperationRecord
from virtfleet.inventory.store import Store

pytestmark = pytest.mark.postgres

TTL = "2"


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _postgres_url()


def wait_for(what: str, check: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def vms(r: Result) -> list[tuple[str, str, str, str]]:
    """What a list says, without the age of each row (a live list's rows have none)."""
    assert r.code == 0, r.err
    return sorted((v["host"], v["name"], v["uuid"], v["state"]) for v in r.json())


def serve(url: str, tmp_path: Path, i: int) -> subprocess.Popen[str]:
    with (tmp_path / f"serve{i}.log").open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "virtfleet.cli.main", "serve", "--interval", "1"],
            env={**os.environ, "VIRTFLEET_DB": url, "VIRTFLEET_LEASE_TTL": TTL,
                 "VIRTFLEET_RUN_DIR": str(tmp_path / f"run{i}")},
            stdout=out, stderr=subprocess.STDOUT, text=True)


def two_sites(tmp_path: Path) -> Path:
    sites = [{"name": s, "pods": [{"name": f"{s}-pod", "hypervisors": [
        {"name": f"{s}-hv", "uri": node_uri(tmp_path, "two-vms.xml", f"{s}.xml")}]}]}
        for s in ("sa", "sb")]
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump({"sites": sites}))
    return tmp_path / "fleet.yaml"


def test_two_controllers_share_two_sites_and_one_takes_over_the_other(
        pg_url: str, tmp_path: Path) -> None:
    assert run(pg_url, "apply", "-f", str(two_sites(tmp_path))).code == 0
    truth = vms(run(pg_url, "list", "--live", "--json"))
    assert len(truth) == 6
    procs = [serve(pg_url, tmp_path, i) for i in range(2)]
    store = Store(pg_url)
    try:
        def holders() -> dict[str, int]:
            return {s: m.record.pid for s, m in store.holders(alive_within=2.0).items()}

        wait_for("one site each", lambda: sorted(holders().values()) == sorted(
            p.pid for p in procs))
        listed = run(pg_url, "list", "--json")
        assert vms(listed) == truth
        assert "asking" not in listed.err
        table = run(pg_url, "list")
        assert table.code == 0, table.err
        assert "6 VMs on 2 hypervisors, from the controller" in table.err, table.err
        synced = run(pg_url, "sync", "--json")
        assert synced.code == 0 and synced.json() == {"hosts": 2, "vms": 6, "failed": []}
        victim = next(p for p in procs if p.pid == holders()["sa"])
        survivor = next(p for p in procs if p is not victim)
        token = store.leases()["sa"].token
        victim.kill()
        victim.wait()
        assert vms(run(pg_url, "list", "--json")) == truth  # its site asked directly
        table = run(pg_url, "list")  # the table too (a mix until the survivor takes sa)
        assert table.code == 0 and "6 VMs on 2 hypervisors" in table.err, table.err
        wait_for("the survivor to take site sa", lambda: holders().get("sa") == survivor.pid)
        assert store.leases()["sa"].token == token + 1
        assert vms(run(pg_url, "list", "--json")) == truth
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=60)
        store.close()


def test_a_list_with_one_site_served_and_one_asked_directly(pg_url: str, tmp_path: Path) -> None:
    """Regression: the table computed an age for every row, and the rows of a site nobody
    served (its controller killed, stopped, or handing over) have none: `list` died with a
    TypeError. Here the only controller is pinned to sb, so sa is always asked directly."""
    assert run(pg_url, "apply", "-f", str(two_sites(tmp_path))).code == 0
    with (tmp_path / "serve.log").open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "virtfleet.cli.main", "serve", "--interval", "1",
             "--site", "sb"],
            env={**os.environ, "VIRTFLEET_DB": pg_url, "VIRTFLEET_LEASE_TTL": TTL,
                 "VIRTFLEET_RUN_DIR": str(tmp_path / "run")},
            stdout=out, stderr=subprocess.STDOUT, text=True)
    store = Store(pg_url)
    try:
        wait_for("sb served", lambda: "sb" in store.holders(alive_within=2.0))
        wait_for("sb read", lambda: run(pg_url, "list", "--json").json()[-1]["observed_at"]
                 is not None)
        table = run(pg_url, "list")
        assert table.code == 0, table.err
        assert "6 VMs on 2 hypervisors, from the controller" in table.err, table.err
        assert "1 hypervisor(s) of sa, which no live controller serves now, asked directly" \
            in table.err, table.err
        ages: dict[str, set[str]] = {}
        for line in table.out.splitlines()[2:]:  # past the header and its rule
            ages.setdefault(line.split()[2], set()).add(line.split()[-1])
        assert ages["sa-hv"] == {"live"} and "live" not in ages["sb-hv"], table.out
        assert len(run(pg_url, "list", "--json").json()) == 6
        # A CLI need not share the controllers' VIRTFLEET_LEASE_TTL: with a shorter one it
        # took the controller for dead and asked sb's hypervisor itself, silently.
        rows = run(pg_url, "list", "--json", env={"VIRTFLEET_LEASE_TTL": "0.001"}).json()
        assert all(v["observed_at"] is not None for v in rows if v["site"] == "sb"), rows
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        store.close()


def test_a_first_sync_longer_than_the_lease_keeps_the_lease(pg_url: str, tmp_path: Path) -> None:
    """Regression (bench/scale's event lag): the leases were renewed only once the first full
    sync was done, so a sync longer than a lease let them lapse right after "serving" (the
    controller dropped its site and took it again under a new token). Here a hypervisor that
    accepts and never answers holds the first sync for its 5 s connect deadline, over a 2 s
    lease."""
    with silent_server() as port:
        hvs = [{"name": "sa-hv", "uri": node_uri(tmp_path, "two-vms.xml", "sa.xml")},
               {"name": "sa-hung", "uri": f"qemu+tcp://127.0.0.1:{port}/system"}]
        fleet = {"sites": [{"name": "sa", "pods": [
            {"name": "sa-pod", "insecure_transport": True, "hypervisors": hvs}]}]}
        (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(fleet))
        assert run(pg_url, "apply", "-f", str(tmp_path / "fleet.yaml")).code == 0
        log = tmp_path / "serve.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "virtfleet.cli.main", "serve", "--interval", "60"],
                env={**os.environ, "VIRTFLEET_DB": pg_url, "VIRTFLEET_LEASE_TTL": TTL,
                     "VIRTFLEET_CONNECT_TIMEOUT": "5",
                     "VIRTFLEET_RUN_DIR": str(tmp_path / "run")},
                stdout=out, stderr=subprocess.STDOUT, text=True)
        store = Store(pg_url)
        try:
            wait_for("serving", lambda: "serving" in log.read_text())
            began = time.monotonic()
            wait_for("two more lease lengths", lambda: time.monotonic() - began > 2 * float(TTL))
            text = log.read_text()
            assert "1 unreachable" in text, text  # the hung host did hold the first sync
            assert "ran out before it was renewed" not in text, text
            lease = store.leases()["sa"]
            assert lease.token == 1 and lease.holder is not None, lease
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            store.close()


def test_three_controllers_take_each_orphaned_operation_over_once(
        pg_url: str, tmp_path: Path) -> None:
    """A controller killed with its operations in the journal, and operations of dead CLIs:
    the three (then two) controllers race for them; each is undone by one controller only
    (one log line each, claims given back once, nothing refused), and a live one is left."""
    sites = [{"name": s, "pods": [{"name": f"{s}-pod", "hypervisors": [
        {"name": f"{s}-hv", "uri": node_uri(tmp_path, "two-vms.xml", f"{s}.xml")}]}]}
        for s in ("sa", "sb")]
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump({"sites": sites}))
    assert run(pg_url, "apply", "-f", str(tmp_path / "fleet.yaml")).code == 0
    procs = [serve(pg_url, tmp_path, i) for i in range(3)]
    store = Store(pg_url)
    try:
        wait_for("both sites held and three controllers beating", lambda: (
            len(store.holders(alive_within=2.0)) == 2
            and len(store.members(alive_within=2.0)) == 3))
        owner_pid = store.holders(alive_within=2.0)["sa"].record.pid
        owner = next(p for p in procs if p.pid == owner_pid)
        [holder] = [m.holder for m in store.members() if m.record.pid == owner_pid]
        ops: list[str] = []

        def journal(host: str, vm: str | None, pid: int, by: str | None) -> str:
            if vm is not None:
                store.claim_placements([ClaimRequest(host, vm, 1, 64, 100, 10**6)])
            op_id = uuid.uuid4().hex
            store.begin_operation(OperationRecord(
                id=op_id, kind="clone", target=f"{host}/{vm}", hostname=socket.gethostname(),
                pid=pid, started_at=datetime.now(UTC), state="running",
                steps=(Made("claim", host, vm),) if vm else (), owner=by))
            return op_id

        live = journal("sb-hv", "live-vm", os.getpid(), None)
        dead = subprocess.Popen(["true"])
        dead.wait()
        ops += [journal("sa-hv", f"ctl-{i}", owner_pid, holder) for i in range(3)]
        ops += [journal("sb-hv", f"cli-{i}", dead.pid, None) for i in range(3)]
        ops += [journal("sb-hv", None, dead.pid, None) for _ in range(6)]  # anybody's
        owner.kill()  # mid-operation, as far as the journal knows
        owner.wait()
        wait_for("every orphaned operation undone", lambda: (
            [o.id for o in store.operations()] == [live]), 120)
        assert [c.vm for c in store.placement_claims()] == ["live-vm"]
        logs = [(tmp_path / f"serve{i}.log").read_text() for i in range(3)]
        for op_id in ops:
            assert sum(log.count(f"took over operation {op_id[:12]} ") for log in logs) == 1
        assert not any("could not undo" in log or "write refused" in log for log in logs)
        print("\noperations taken over per controller:", [
            sum(log.count(f"took over operation {o[:12]} ") for o in ops) for log in logs])
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=60)
        store.close()
