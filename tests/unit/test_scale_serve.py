"""Two `virtfleet serve` on one PostgreSQL store over test-driver hypervisors in two sites
(docs/scale-out.md): each takes one site, `list` and `sync` cover both through them, and a
controller killed with SIGKILL hands its site to the other. The lab version, with real
libvirtd daemons and a pause past the lease, is tests/integration/test_scale_out.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import _postgres_url
from tests.unit.cli import Result, run
from tests.unit.nodes import node_uri, silent_server
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


def test_two_controllers_share_two_sites_and_one_takes_over_the_other(
        pg_url: str, tmp_path: Path) -> None:
    sites = [{"name": s, "pods": [{"name": f"{s}-pod", "hypervisors": [
        {"name": f"{s}-hv", "uri": node_uri(tmp_path, "two-vms.xml", f"{s}.xml")}]}]}
        for s in ("sa", "sb")]
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump({"sites": sites}))
    assert run(pg_url, "apply", "-f", str(tmp_path / "fleet.yaml")).code == 0
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
        synced = run(pg_url, "sync", "--json")
        assert synced.code == 0 and synced.json() == {"hosts": 2, "vms": 6, "failed": []}
        victim = next(p for p in procs if p.pid == holders()["sa"])
        survivor = next(p for p in procs if p is not victim)
        token = store.leases()["sa"].token
        victim.kill()
        victim.wait()
        assert vms(run(pg_url, "list", "--json")) == truth  # its site asked directly
        wait_for("the survivor to take site sa", lambda: holders().get("sa") == survivor.pid)
        assert store.leases()["sa"].token == token + 1
        assert vms(run(pg_url, "list", "--json")) == truth
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=60)
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
