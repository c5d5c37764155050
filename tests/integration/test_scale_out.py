"""Three controllers sharing one PostgreSQL store over the lab plus simulated hypervisors
(docs/scale-out.md): shards move when a controller dies, a controller paused past its lease
writes nothing under its old token and rejoins, and `list` stays right throughout. Ground
truth for "nothing done twice": QEMU processes per -uuid in this machine's process table."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.conftest import _postgres_url
from tests.integration.conftest import LabFixture
from tests.integration.test_fleet import domain_xml
from tests.integration.ticking import qemus
from tests.unit.cli import Result, run
from tests.unit.nodes import node_uri
from virtfleet.inventory.store import Store
from virtfleet.virt.host import Host

pytestmark = pytest.mark.integration

TTL = "4"  # seconds: a lease, so the takeover and the pause fit in a short test


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _postgres_url()


def wait_for(what: str, check: Callable[[], bool], seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def three_sites(lab: LabFixture, tmp_path: Path) -> Path:
    """The lab's two pods as two sites, and a third site of two simulated hypervisors."""
    data = yaml.safe_load(lab.fleet_file.read_text())
    site = data["sites"][0]
    pod_a, pod_b = site["pods"]
    sim = [{"name": f"sim{i}", "uri": node_uri(tmp_path, "two-vms.xml", f"sim{i}.xml")}
           for i in (1, 2)]
    data["sites"] = [{**copy.deepcopy(site), "name": "sa", "pods": [pod_a]},
                     {**copy.deepcopy(site), "name": "sb", "pods": [pod_b]},
                     {"name": "sc", "pods": [{"name": "sc-pod1", "hypervisors": sim}]}]
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class Controllers:
    def __init__(self, url: str, tmp_path: Path, args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> None:
        self.url = url
        self.tmp = tmp_path
        self.args = args
        self.env = env or {}
        self.procs: list[subprocess.Popen[str]] = []
        self.store = Store(url)

    def start(self) -> subprocess.Popen[str]:
        i = len(self.procs)
        with (self.tmp / f"serve{i}.log").open("a") as out:
            p = subprocess.Popen(
                [sys.executable, "-m", "virtfleet.cli.main", "serve", "--interval", "1",
                 *self.args],
                env={**os.environ, "VIRTFLEET_DB": self.url,
                     "VIRTFLEET_RUN_DIR": str(self.tmp / f"run{i}"),
                     "VIRTFLEET_LEASE_TTL": TTL, **self.env},
                stdout=out, stderr=subprocess.STDOUT, text=True)
        self.procs.append(p)
        return p

    def log(self, p: subprocess.Popen[str]) -> str:
        return (self.tmp / f"serve{self.procs.index(p)}.log").read_text()

    def holders(self) -> dict[str, int]:
        """site -> pid of the live controller that leases it."""
        return {s: m.record.pid for s, m in self.store.holders(alive_within=float(TTL)).items()}

    def balanced(self) -> bool:
        live = [p.pid for p in self.procs if p.poll() is None]
        held = self.holders()
        # Every site held, and by every live controller (three: one each).
        return set(held) == {"sa", "sb", "sc"} and set(held.values()) == set(live)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.store.close()


@contextmanager
def three_controllers(url: str, tmp_path: Path) -> Iterator[Controllers]:
    c = Controllers(url, tmp_path)
    try:
        for _ in range(3):
            c.start()
        wait_for("each controller to hold one site", c.balanced)
        yield c
    finally:
        c.stop()


def vm_names(r: Result) -> list[tuple[str, str, str]]:
    assert r.code == 0, r.err
    return sorted((v["host"], v["name"], v["state"]) for v in r.json())


@pytest.fixture
def lab_vms(lab: LabFixture) -> Iterator[dict[str, str]]:
    """One defined VM per lab hypervisor (its name by host), the first one started."""
    names: dict[str, str] = {}
    for h in lab.hosts:
        with Host.open(h.uri) as conn:
            names[h.name] = conn.define_domain(domain_xml(f"scale-{h.name}-{os.getpid()}"))
    first = lab.hosts[0]
    with Host.open(first.uri) as conn:
        conn.start_domain(names[first.name])
    try:
        yield names
    finally:
        lab.heal()
        for h in lab.hosts:
            with Host.open(h.uri) as conn:
                for d in conn.list_domains():
                    if d.name.startswith("scale-"):
                        if d.state == "running":
                            conn.destroy_domain(d.name)
                        conn.undefine_domain(d.name)


def test_a_killed_controllers_sites_move_and_list_stays_right(
        lab: LabFixture, lab_vms: dict[str, str], pg_url: str, tmp_path: Path) -> None:
    assert run(pg_url, "apply", "-f", str(three_sites(lab, tmp_path))).code == 0
    truth = vm_names(run(pg_url, "list", "--live", "--json"))
    assert len(truth) == len(lab.hosts) + 6  # the lab's VMs and each simulated host's three
    with three_controllers(pg_url, tmp_path) as c:
        assert vm_names(run(pg_url, "list", "--json")) == truth
        victim = next(p for p in c.procs if p.pid == c.holders()["sa"])
        victim.kill()
        killed = time.monotonic()
        lists = 0
        while c.holders().get("sa") in (None, victim.pid):
            assert vm_names(run(pg_url, "list", "--json")) == truth  # right throughout
            lists += 1
            assert time.monotonic() - killed < 120, "site sa was never taken over"
        took = time.monotonic() - killed
        print(f"\nsite sa taken over {took:.1f}s after kill -9 (lease {TTL}s; "
              f"{lists} lists meanwhile)")
        wait_for("the two left to share the three sites", c.balanced)
        r = run(pg_url, "list", "--json")
        assert vm_names(r) == truth
        assert "asking" not in r.err, r.err  # served by the controllers again
        # A sync goes through both controllers, each for its own sites: every host counted.
        synced = run(pg_url, "sync", "--json")
        assert synced.code == 0, synced.err
        assert synced.json() == {"hosts": len(lab.hosts) + 2, "vms": len(truth), "failed": []}


def test_a_controller_paused_past_its_lease_writes_nothing_and_rejoins(
        lab: LabFixture, lab_vms: dict[str, str], pg_url: str, tmp_path: Path) -> None:
    assert run(pg_url, "apply", "-f", str(three_sites(lab, tmp_path))).code == 0
    first = lab.hosts[0]
    with Host.open(first.uri) as conn:
        uuid = next(d.uuid for d in conn.list_domains() if d.name == lab_vms[first.name])
    assert len(qemus(uuid)) == 1
    with three_controllers(pg_url, tmp_path) as c:
        paused = next(p for p in c.procs if p.pid == c.holders()["sa"])
        token = c.store.leases()["sa"].token
        paused.send_signal(signal.SIGSTOP)
        try:
            wait_for("another controller to take site sa",
                     lambda: c.holders().get("sa") not in (None, paused.pid))
            # Something for the paused one to write about when it wakes: a new VM in sa.
            with Host.open(first.uri) as conn:
                conn.define_domain(domain_xml(f"scale-late-{os.getpid()}"))
            assert c.store.leases()["sa"].token > token
        finally:
            paused.send_signal(signal.SIGCONT)
        wait_for("the paused controller to notice", lambda: any(
            words in c.log(paused) for words in ("write refused", "ran out before it was "
                                                 "renewed", "lost the lease")))
        wait_for("the paused controller to hold a site again", c.balanced)
        assert paused.poll() is None
        assert len(qemus(uuid)) == 1  # nothing started twice
        sa_rows = c.store.fleet_vms(site="sa")
        assert f"scale-late-{os.getpid()}" in {v.domain.name for v in sa_rows}
        log = c.log(paused)
        print("\n" + "\n".join(line for line in log.splitlines()
                               if "refused" in line or "lease" in line or "site" in line))
        truth = vm_names(run(pg_url, "list", "--live", "--json"))
        assert vm_names(run(pg_url, "list", "--json")) == truth
