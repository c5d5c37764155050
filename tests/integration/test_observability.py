"""Events and metrics from a real controller on the lab: the events stream shows a VM started
through the CLI and a hypervisor whose libvirtd is killed and restarted; Prometheus itself
scrapes /metrics and answers a PromQL query for a lab VM's CPU."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import REQUIRE_ENV, LabFixture
from tests.unit.cli import run, running_controller
from tests.unit.tools import require_tool
from virtfleet.inventory.store import Store

pytestmark = pytest.mark.integration


def wait_for(what: str, check: Callable[[], bool], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


class Tail:
    """`virtfleet events --follow --json` in the background, its lines collected as they come."""

    def __init__(self, db: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "virtfleet.cli.main", "events", "--follow", "--json", *args],
            env={**os.environ, "VIRTFLEET_DB": str(db)}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.events.append(json.loads(line))

    def find(self, **want: Any) -> dict[str, Any] | None:
        with self._lock:
            for e in self.events:
                if all(_get(e, k) == v for k, v in want.items()):
                    return e
        return None

    def close(self) -> str:
        self.proc.terminate()
        _out, err = self.proc.communicate(timeout=30)
        return err


def _get(event: dict[str, Any], key: str) -> Any:
    if key.startswith("data_"):
        return event.get("data", {}).get(key.removeprefix("data_"))
    return event.get(key)


@pytest.fixture(scope="module")
def guest(lab: LabFixture) -> Iterator[tuple[str, str]]:
    """One tiny guest running per lab hypervisor; yields (VM name, its host)."""
    try:
        started = lab.lab.guests(1, timeout=180)
        yield started[0].name, started[0].host
    finally:
        lab.lab.guests(0)


def test_the_events_stream_shows_a_vm_start_and_a_host_lost_and_back(
        lab: LabFixture, guest: tuple[str, str], tmp_path: Path) -> None:
    vm, vm_host = guest
    db = tmp_path / "store.db"
    assert run(db, "apply", "-f", str(lab.fleet_file)).code == 0
    assert run(db, "vm", "destroy", vm).code == 0
    victim = next(h for h in lab.hosts if h.name != vm_host)
    with running_controller(db):
        tail = Tail(db, "--kind", "vm", "--kind", "host")
        try:
            # The backlog comes first: every hypervisor reached at start.
            wait_for("the stream's backlog", lambda: all(
                tail.find(kind="host.up", host=h.name) for h in lab.hosts))
            r = run(db, "vm", "start", vm)
            assert r.code == 0, r.err
            wait_for(f"{vm} started in the stream", lambda: tail.find(
                kind="vm.state", vm=vm, data_event="started") is not None)
            started = tail.find(kind="vm.state", vm=vm, data_event="started")
            assert started is not None
            assert (started["host"], started["data"]["state"], started["data"]["detail"]) == (
                vm_host, "running", "booted")
            assert started["site"] and started["pod"] and started["id"]

            lab.kill_daemon(victim)
            wait_for(f"{victim.name} down in the stream", lambda: tail.find(
                kind="host.down", host=victim.name) is not None)
            lab.restart_daemon(victim)
            wait_for(f"{victim.name} back in the stream", lambda: tail.find(
                kind="host.up", host=victim.name, data_again=True) is not None)
            order = [(e["kind"], e.get("host")) for e in tail.events]
            assert order.index(("host.down", victim.name)) < order.index(
                ("host.up", victim.name), order.index(("host.down", victim.name)))
        finally:
            err = tail.close()
        assert "Traceback" not in err, err


# -- Prometheus ------------------------------------------------------------------------------


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


class Forward:
    """127.0.0.1:PORT -> the controller's Unix socket, for Prometheus, which cannot scrape a
    Unix socket. The controller itself listens on no TCP port (docs/controller.md); bytes are
    passed through unchanged, the token included, so the controller checks it as ever."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.port = int(self.srv.getsockname()[1])
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.srv.settimeout(0.5)
        while not self._stop.is_set():
            try:
                client, _ = self.srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._pump, args=(client,), daemon=True).start()

    def _pump(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX)
        upstream.connect(self.path)
        pair = {client: upstream, upstream: client}
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select(list(pair), [], [], 0.5)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    pair[s].sendall(data)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()

    def close(self) -> None:
        self._stop.set()
        self.srv.close()


def _query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def test_prometheus_scrapes_the_controller_and_answers_for_a_lab_vms_cpu(
        lab: LabFixture, guest: tuple[str, str], tmp_path: Path) -> None:
    prometheus = require_tool("prometheus", "prometheus", REQUIRE_ENV)
    vm, vm_host = guest
    assert run(tmp_path / "s.db", "apply", "-f", str(lab.fleet_file)).code == 0
    assert run(tmp_path / "s.db", "vm", "start", vm).code in (0, 4)  # running already: fine
    with running_controller(tmp_path / "s.db", "--stats-interval", "2"), \
            Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        rec = store.controller()
        assert rec is not None
        forward = Forward(rec.url.removeprefix("unix:"))
        token = tmp_path / "token"
        token.write_text(rec.token)
        token.chmod(0o600)
        web = _free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(json.dumps({  # YAML is a superset of JSON
            "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
            "scrape_configs": [{
                "job_name": "virtfleet", "scrape_interval": "2s", "scrape_timeout": "2s",
                "authorization": {"type": "Bearer", "credentials_file": str(token)},
                "static_configs": [{"targets": [f"127.0.0.1:{forward.port}"]}]}]}))
        log = (tmp_path / "prometheus.log").open("w")
        prom = subprocess.Popen(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{web}"], stdout=log, stderr=subprocess.STDOUT)
        try:
            def answered() -> bool:
                assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()
                try:
                    return bool(_query(web, f'virtfleet_vm_cpu_seconds_total{{vm="{vm}"}}'))
                except OSError:
                    return False  # not listening yet

            wait_for("Prometheus to have the VM's CPU", answered, 180)
            [cpu] = _query(web, f'virtfleet_vm_cpu_seconds_total{{vm="{vm}"}}')
            assert cpu["metric"]["host"] == vm_host and cpu["metric"]["job"] == "virtfleet"
            # The lab's hosts are in no group, and Prometheus keeps no empty label: no group.
            assert {"site", "pod", "host", "vm"} <= set(cpu["metric"])
            assert float(cpu["value"][1]) > 0
            [up] = _query(web, 'up{job="virtfleet"}')
            assert up["value"][1] == "1"
            states = _query(web, "count by (state) (virtfleet_vm_state)")
            assert {s["metric"]["state"] for s in states} >= {"running"}
        finally:
            prom.terminate()
            prom.wait(timeout=60)
            log.close()
            forward.close()
