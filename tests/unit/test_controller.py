"""`virtfleet serve` on test-driver hypervisors: found by the CLI, answers like a live query."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from virtfleet.controller.client import ControllerClient
from virtfleet.errors import NotFound
from virtfleet.inventory.store import Store

from .cli import run
from .nodes import node_uri, refused_port


def _fleet(tmp_path: Path) -> Path:
    data = {"sites": [{"name": "oregon", "pods": [{"name": "or-pod1", "hypervisors": [
        {"name": f"hv{i}", "uri": node_uri(tmp_path, "two-vms.xml", f"hv{i}.xml"),
         "groups": ["web"] if i % 2 else []}
        for i in range(4)] + [
        {"name": "dead", "uri": f"qemu+tcp://127.0.0.1:{refused_port()}/system"}]}]}]}
    p = tmp_path / "fleet.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    db = tmp_path / "store.db"
    assert run(db, "apply", "-f", str(_fleet(tmp_path))).code == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "virtfleet.cli.main", "serve", "--interval", "1"],
        env={**os.environ, "VIRTFLEET_DB": str(db)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    store = Store(f"sqlite:///{db}")
    try:
        deadline = time.monotonic() + 60
        while store.controller() is None or store.controller().pid != proc.pid:  # type: ignore[union-attr]
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "controller did not register"
            time.sleep(0.2)
        yield db, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        store.close()


def test_cli_finds_the_controller_and_gets_the_live_answer(controller: tuple) -> None:
    db, _proc = controller
    warm = run(db, "list", "--json")
    live = run(db, "list", "--json", "--live")
    assert warm.code == live.code == 1  # the dead host is named either way
    assert "dead" in warm.err and "dead" in live.err
    strip = [{k: v for k, v in vm.items() if k != "observed_at"} for vm in warm.json()]
    assert strip == [{k: v for k, v in vm.items() if k != "observed_at"} for vm in live.json()]
    assert all(vm["observed_at"] for vm in warm.json())
    assert all(vm["observed_at"] is None for vm in live.json())
    table = run(db, "list")
    assert "from the controller" in table.err and "oldest reading" in table.err
    assert {v["host"] for v in run(db, "list", "--json", "--group", "web").json()} == {
        "hv1", "hv3"}
    assert run(db, "list", "--pod", "nope").code == 3


def test_controller_rejects_a_wrong_token(controller: tuple) -> None:
    db, _proc = controller
    store = Store(f"sqlite:///{db}")
    rec = store.controller()
    store.close()
    assert rec is not None
    from dataclasses import replace

    from virtfleet.errors import HostUnavailable
    with pytest.raises(HostUnavailable, match="401"):
        ControllerClient(replace(rec, token="wrong")).vms()
    with pytest.raises(NotFound):
        ControllerClient(rec).vms(site="texas")


def test_sigterm_unregisters_and_a_killed_controller_falls_back(controller: tuple) -> None:
    db, proc = controller
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    r = run(db, "list", "--json")  # registration is fresh but nobody answers
    assert len(r.json()) == 12
    assert "asking the hypervisors directly" in r.err


def test_clean_stop_unregisters(controller: tuple) -> None:
    db, proc = controller
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    store = Store(f"sqlite:///{db}")
    assert store.controller() is None
    store.close()


def test_sqlite_fast_path_reads_the_same_registration(controller: tuple) -> None:
    from virtfleet.controller.client import registration_from_sqlite

    db, _proc = controller
    store = Store(f"sqlite:///{db}")
    try:
        assert registration_from_sqlite(f"sqlite:///{db}") == store.controller()
    finally:
        store.close()
