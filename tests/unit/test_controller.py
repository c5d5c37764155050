"""`virtfleet serve` on test-driver hypervisors: found by the CLI, answers like a live query."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from virtfleet.controller.client import ControllerClient
from virtfleet.errors import NotFound
from virtfleet.inventory.store import Store

from .cli import run, running_controller
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
    with running_controller(db) as proc:
        yield db, proc


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
    assert "from the controller" in table.err and " Age" in table.out.splitlines()[0]
    assert {v["host"] for v in run(db, "list", "--json", "--group", "web").json()} == {
        "hv1", "hv3"}
    assert run(db, "list", "--pod", "nope").code == 3


def test_controller_rejects_a_wrong_or_missing_token(controller: tuple) -> None:
    db, _proc = controller
    store = Store(f"sqlite:///{db}")
    rec = store.controller()
    store.close()
    assert rec is not None
    from dataclasses import replace

    from virtfleet.errors import HostUnavailable
    with pytest.raises(HostUnavailable, match="401"):
        ControllerClient(replace(rec, token="wrong")).vms()
    with pytest.raises(HostUnavailable, match="401"):
        ControllerClient(replace(rec, token="")).vms()
    with pytest.raises(NotFound):
        ControllerClient(rec).vms(site="texas")


def test_a_killed_controller_falls_back_to_asking_the_hypervisors(controller: tuple) -> None:
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


def test_a_second_controller_is_refused_and_sync_goes_through_the_first(controller: tuple
                                                                         ) -> None:
    db, first = controller
    second = run(db, "serve")
    assert second.code == 4 and f"pid {first.pid}" in second.err
    r = run(db, "sync", "--json")
    assert r.code == 1 and r.json()["vms"] == 12 and r.json()["failed"][0]["host"] == "dead"
    store = Store(f"sqlite:///{db}")
    try:
        rec = store.controller()
        assert rec is not None and rec.pid == first.pid
    finally:
        store.close()


def test_cached_list_reads_the_store_with_ages(controller: tuple) -> None:
    db, _proc = controller
    r = run(db, "list", "--cached", "--json")
    assert r.code == 1 and len(r.json()) == 12 and all(v["observed_at"] for v in r.json())
    assert "dead" in r.err
    table = run(db, "list", "--cached")
    assert "from the store" in table.err and " Age" in table.out.splitlines()[0]
    assert run(db, "list", "--cached", "--live").code == 2


def test_serve_refuses_a_network_address(tmp_path: Path) -> None:
    r = run(tmp_path / "s.db", "serve", "--listen", "0.0.0.0:8080")
    assert r.code == 2 and "--listen" in r.err and "loopback" in r.err
