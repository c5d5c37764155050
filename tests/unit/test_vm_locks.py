"""One operation at a time on a VM: busy for the second, a dead holder's lock taken over."""

from __future__ import annotations

import os
import socket
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from virtfleet.errors import Busy
from virtfleet.inventory.records import VMLock
from virtfleet.inventory.store import Store
from virtfleet.provision.locks import _stale, vm_lock

from .cli import run
from .nodes import node_uri

HOST = socket.gethostname()


def never(_lock: VMLock) -> bool:
    return False


def test_lock_busy_unlock(store_url: str) -> None:
    now = datetime.now(UTC)
    store = Store(store_url)
    try:
        store.lock_vm("web01", "shutdown", HOST, 111, now, never)
        with pytest.raises(Busy, match=r"'web01' is busy: shutdown by pid 111 on "):
            store.lock_vm("web01", "start", HOST, 222, now, never)
        store.lock_vm("web02", "start", HOST, 222, now, never)  # other VMs are free
        store.unlock_vm("web01", HOST, 999)  # not the holder: nothing released
        with pytest.raises(Busy):
            store.lock_vm("web01", "start", HOST, 222, now, never)
        store.unlock_vm("web01", HOST, 111)
        store.lock_vm("web01", "start", HOST, 222, now, never)
    finally:
        store.close()


def test_a_dead_or_ancient_holder_is_replaced(store_url: str) -> None:
    # taken per test, not at import: a full run reaches this test an hour after collection,
    # and a lock taken at import time would be ancient by then
    now = datetime.now(UTC)
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert _stale(VMLock("vm", "op", HOST, gone.pid, now))
    assert not _stale(VMLock("vm", "op", HOST, os.getpid(), now))
    # a live process here keeps its lock however long it runs (a long template seal)
    assert not _stale(VMLock("vm", "op", HOST, os.getpid(), now - timedelta(hours=5)))
    assert not _stale(VMLock("vm", "op", "elsewhere", 1, now))  # can't see its processes
    assert _stale(VMLock("vm", "op", "elsewhere", 1, now - timedelta(hours=2)))
    store = Store(store_url)
    try:
        store.lock_vm("db01", "create", HOST, gone.pid, now, _stale)
        # the killed holder does not block it; the new holder does
        with vm_lock(store, "db01", "start"), pytest.raises(Busy, match="start by pid"):
            store.lock_vm("db01", "revert", HOST, os.getpid(), now, _stale)
        store.lock_vm("db01", "revert", HOST, 1, now, never)  # released on leaving
    finally:
        store.close()


def test_cli_says_busy_and_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump({"sites": [{"name": "oregon", "pods": [
        {"name": "or-pod1", "hypervisors": [
            {"name": "hv1", "uri": node_uri(tmp_path, "two-vms.xml", "hv1.xml")},
            {"name": "hv2", "uri": node_uri(tmp_path, "two-vms.xml", "hv2.xml")}]}]}]}))
    assert run(db, "apply", "-f", str(fleet)).code == 0
    store = Store(f"sqlite:///{db}")
    try:
        # the fixture puts VMs of the same name on two hosts: each is its own VM to lock
        store.lock_vm("hv1/centos.template", "snapshot revert", HOST, os.getpid(),
                      datetime.now(UTC), never)
        r = run(db, "vm", "start", "centos.template", "--host", "hv1")
        assert r.code == 4 and "is busy: snapshot revert" in r.err
        r = run(db, "snapshot", "create", "centos.template", "--host", "hv1")
        assert r.code == 4 and "is busy" in r.err
        r = run(db, "vm", "start", "--all", "--json")  # the busy VM is its own row
        rows = {o["host"]: o for o in r.json()}
        assert r.code == 1 and not rows["hv1"]["ok"] and "busy" in rows["hv1"]["result"]
        assert rows["hv2"]["ok"]  # its namesake on hv2 is another VM
        store.unlock_vm("hv1/centos.template", HOST, os.getpid())
        assert run(db, "vm", "start", "centos.template", "--host", "hv1").code == 0
    finally:
        store.close()
