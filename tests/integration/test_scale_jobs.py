"""A controller dies mid-operation (issue 15 item 3; docs/scale-out.md): three controllers on
one PostgreSQL store, the lab's pods as sites. The controller holding the site whose hypervisor
its operations made volumes on is killed with SIGKILL; its successor on that site claims those
operations (SKIP LOCKED rows) and undoes each exactly once. Ground truth: the volumes are gone
from the real libvirtd, and each operation was taken over once, in one controller's log. An
operation whose owner is alive is left alone throughout."""

from __future__ import annotations

import os
import socket
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.integration.conftest import LabFixture
from tests.integration.test_scale_out import Controllers, pg_url, three_sites, wait_for
from tests.unit.cli import run
from virtfleet.inventory.records import Made, OperationRecord
from virtfleet.virt import storage
from virtfleet.virt.host import Host

pytestmark = pytest.mark.integration

__all__ = ["pg_url"]  # the fixture, imported for this module's tests

COUNT = 5


def journal(c: Controllers, host: str, path: str, pid: int, owner: str | None) -> str:
    op_id = uuid.uuid4().hex
    c.store.begin_operation(OperationRecord(
        id=op_id, kind="clone", target=f"{host}/jobs-{op_id[:6]}", hostname=socket.gethostname(),
        pid=pid, started_at=datetime.now(UTC), state="running",
        steps=(Made("volume", host, path),), owner=owner))
    return op_id


def test_a_killed_controllers_operations_are_undone_once_by_its_successor(
        lab: LabFixture, pg_url: str, tmp_path: Path) -> None:
    assert run(pg_url, "apply", "-f", str(three_sites(lab, tmp_path))).code == 0
    c = Controllers(pg_url, tmp_path)
    [rec] = c.store.hypervisors(host=c.store.hypervisors(site="sa")[0].name)
    r = run(pg_url, "pool", "apply-pod", "--pod", rec.pod)
    assert r.code == 0, r.err
    paths: dict[str, str] = {}
    with Host.open(rec.uri) as host:
        pool = next(p.name for p in storage.pools(host) if p.active)
        made = [storage.create_volume(host, pool, f"jobs-{os.getpid()}-{i}.qcow2", 2**20,
                                      "qcow2") for i in range(COUNT + 1)]
    try:
        for _ in range(3):
            c.start()
        wait_for("each controller to hold one site", c.balanced)
        owner = next(p for p in c.procs if p.pid == c.holders()["sa"])
        [holder] = [m.holder for m in c.store.members() if m.record.pid == owner.pid]
        # Operations the site's controller runs (as the API's would be), and one of a process
        # still at work (this test's).
        for path in made[:COUNT]:
            paths[journal(c, rec.name, path, owner.pid, holder)] = path
        live = journal(c, rec.name, made[COUNT], os.getpid(), None)
        owner.kill()  # SIGKILL: the controller dies mid-operation
        owner.wait()
        killed = time.monotonic()
        wait_for("the successor to undo the dead controller's operations", lambda: (
            {o.id for o in c.store.operations()} == {live}), 120)
        took = time.monotonic() - killed
        with Host.open(rec.uri) as host:
            for path in paths.values():
                assert storage.volume_at(host, path) is None
            assert storage.volume_at(host, made[COUNT]) is not None
        [row] = c.store.operations()
        assert row.state == "running" and row.pid == os.getpid() and row.claimed_at is None
        logs = "".join(c.log(p) for p in c.procs)
        for op_id in paths:
            assert logs.count(f"took over operation {op_id[:12]} ") == 1, op_id
        assert "could not undo" not in logs
        lease = c.store.leases()["sa"]
        assert lease.holder is not None and f":{owner.pid}:" not in lease.holder
        print(f"\n{COUNT} operations of a killed controller undone {took:.1f}s after its "
              f"kill -9 (lease 4s)")
    finally:
        c.stop()  # the live operation's row goes with the test's database
        with Host.open(rec.uri) as host:
            for path in made:
                if storage.volume_at(host, path) is not None:
                    storage.delete_volume(host, path)
