"""The metrics: bulk stats on the test driver and on a real QEMU domain's answer, the stats pass
over the controller's own connections, the whole exposition checked by promtool and by
prometheus-client's parser, the alert rules run by promtool, and the dashboard's queries."""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from virtfleet.controller.exposition import assemble, escape
from virtfleet.controller.metrics import VIEW_FAMILIES
from virtfleet.controller.observe import Observability
from virtfleet.controller.service import Controller
from virtfleet.controller.stats import FAMILIES, StatsCache, render_host
from virtfleet.inventory.store import Store
from virtfleet.virt.fanout import ConnectionPool
from virtfleet.virt.host import Host
from virtfleet.virt.stats import HostStats, NodeStats, host_stats, parse_domain

from .cli import run, running_controller
from .nodes import host, node_uri, refused_port
from .tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
QEMU = json.loads((Path(__file__).parent / "fixtures" / "stats" / "qemu-domain.json").read_text())
HOST_LABELS = {"site", "pod", "host", "group"}


def samples(text: str | bytes) -> list[Sample]:
    raw = text.decode() if isinstance(text, bytes) else text
    return [s for fam in text_string_to_metric_families(raw) for s in fam.samples]


def value(found: list[Sample], name: str, **labels: str) -> float:
    [hit] = [s for s in found if s.name == name
             and all(s.labels.get(k) == v for k, v in labels.items())]
    return hit.value


def test_bulk_stats_on_the_test_driver(tmp_path: Path) -> None:
    with Host.open(node_uri(tmp_path, "two-vms.xml")) as h:
        got = host_stats(h)
    assert {d.name: d.state for d in got.domains} == {
        "vm1.example.com": "running", "centos.template": "shut off", "vm2.example.com": "paused"}
    # The test driver reports state only: what was not read is None, never 0.
    assert {d.cpu_seconds for d in got.domains} == {None}
    assert got.node.cpus == 16 and got.node.memory_bytes == 64 * 2**30
    assert got.node.memory_free_bytes is None  # the test driver has no node memory stats
    assert set(got.node.cpu_seconds) == {"user", "kernel", "idle", "iowait"}


def test_a_real_qemu_domains_bulk_stats_become_records() -> None:
    d = parse_domain(QEMU["name"], QEMU["uuid"], QEMU["stats"])
    assert d.state == "running" and d.cpu_seconds == 2.5
    assert d.balloon_bytes == d.maximum_bytes == 98304 * 1024
    assert d.rss_bytes == 208152 * 1024 and d.usable_bytes is None
    [disk] = d.blocks
    assert (disk.device, disk.read_bytes, disk.read_requests, disk.write_bytes) == (
        "vdb", 5632, 3, 0)
    [nic] = d.nets
    assert (nic.interface, nic.rx_bytes, nic.tx_packets, nic.rx_drops) == ("vfobs0", 656, 11, 0)


def _qemu_host_stats() -> HostStats:
    node = NodeStats(cpus=40, memory_bytes=384 * 2**30, memory_free_bytes=100 * 2**30,
                     cpu_seconds={"user": 10.0, "kernel": 2.0, "idle": 80.0, "iowait": 0.5})
    return HostStats(node, (parse_domain(QEMU["name"], QEMU["uuid"], QEMU["stats"]),),
                     datetime.now(UTC))


def test_a_hosts_series_carry_site_pod_host_group_and_vm() -> None:
    rec = host("hv1", "test:///x", groups=("web", "batch"))
    text = assemble(FAMILIES, [render_host(rec, _qemu_host_stats(), 0.25)])
    found = samples(text)
    assert value(found, "virtfleet_vm_cpu_seconds_total", vm=QEMU["name"]) == 2.5
    assert value(found, "virtfleet_vm_block_read_bytes_total", device="vdb") == 5632
    assert value(found, "virtfleet_vm_network_transmit_packets_total", interface="vfobs0") == 11
    assert value(found, "virtfleet_host_cpu_seconds_total", mode="idle") == 80.0
    assert value(found, "virtfleet_host_stats_up") == 1
    for s in found:
        assert s.labels["group"] == "batch,web" and s.labels["pod"] == "or-pod1"
        assert set(s.labels) >= HOST_LABELS
        assert ("vm" in s.labels) == s.name.startswith("virtfleet_vm_")
    # Each family's header comes once, before all of its samples (the format's rule).
    assert len(re.findall(r"^# TYPE virtfleet_vm_cpu_seconds_total ", text, re.M)) == 1


def test_label_values_are_escaped_so_a_name_cannot_forge_a_series() -> None:
    rec = host('a"b\\c\nd', "test:///x")
    found = samples(assemble(FAMILIES, [render_host(rec, None, 0.0)]))
    assert [(s.name, s.labels["host"], s.value) for s in found] == [
        ("virtfleet_host_stats_up", 'a"b\\c\nd', 0)]
    assert escape('x"}\n') == 'x\\"}\\n'


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Controller, Observability]]:
    import yaml

    # insecure_transport: the "dead" host is a refused qemu+tcp port.
    data = {"sites": [{"name": "oregon", "pods": [{"name": "or-pod1", "insecure_transport": True,
                                                  "hypervisors": [
        {"name": f"hv{i}", "uri": node_uri(tmp_path, "two-vms.xml", f"hv{i}.xml"),
         "groups": ["web"] if i else []} for i in range(2)] + [
        {"name": "dead", "uri": f"qemu+tcp://127.0.0.1:{refused_port()}/system"}]}]}]}
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(data))
    db = tmp_path / "store.db"
    assert run(db, "apply", "-f", str(tmp_path / "fleet.yaml")).code == 0
    with Store(f"sqlite:///{db}") as store:
        ctl = Controller(store, interval=60)
        obs = ctl.observe
        ctl.reload_inventory()
        ctl.sync()
        try:
            yield ctl, obs
        finally:
            ctl.pool.close()


def test_a_stats_pass_rides_only_on_the_controllers_connections(
        fleet: tuple[Controller, Observability]) -> None:
    ctl, obs = fleet
    hv1 = next(h for h in ctl.state.hosts() if h.name == "hv1")
    ctl.pool.discard(hv1)  # as if its connection had just been lost
    opened = set(ctl.pool.opened())
    done = obs.stats.collect()
    assert set(ctl.pool.opened()) == opened  # no connection opened for hv1 (or dead)
    assert (done.hosts, done.failed, done.vms) == (3, 2, 3)
    assert done.failures == {"hv1": "not connected", "dead": "not connected"}
    found = samples(done.text)
    assert {s.labels["host"]: s.value for s in found
            if s.name == "virtfleet_host_stats_up"} == {"hv0": 1, "hv1": 0, "dead": 0}
    assert {s.labels["host"] for s in found if s.name == "virtfleet_host_cpus"} == {"hv0"}


def test_the_whole_exposition_passes_promtool_and_follows_the_view(
        fleet: tuple[Controller, Observability]) -> None:
    promtool = require_tool("promtool", "prometheus")
    ctl, obs = fleet
    obs.stats.collect()
    obs.journal.poll()
    text = obs.metrics.render()
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           check=False)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    found = samples(text)
    names = {s.name for s in found}
    for fam in VIEW_FAMILIES:
        assert fam.name in names
    assert value(found, "virtfleet_host_up", host="dead") == 0
    assert value(found, "virtfleet_host_up", host="hv1", group="web") == 1
    assert value(found, "virtfleet_vm_state", host="hv0", vm="vm2.example.com",
                 state="paused") == 1
    assert value(found, "virtfleet_controller_hosts", status="lost") == 1
    assert value(found, "virtfleet_controller_events_total", kind="host.up") == 2
    assert value(found, "virtfleet_controller_host_losses_total") == 1
    assert value(found, "virtfleet_controller_worker_faults_total", worker="stats") == 0
    assert value(found, "virtfleet_controller_stats_passes_total") == 1
    # The view part follows the controller's state at once (no stats pass needed).
    ctl.state.fail("hv0", "gone", "host-unavailable", datetime.now(UTC))
    after = samples(obs.metrics.render())
    assert value(after, "virtfleet_host_up", host="hv0") == 0
    assert value(after, "virtfleet_vm_state", host="hv0", vm="vm1.example.com",
                 state="unknown") == 1


def test_full_qemu_series_pass_promtool() -> None:
    promtool = require_tool("promtool", "prometheus")
    text = assemble(FAMILIES, [render_host(host(f"hv{i}", "test:///x"), _qemu_host_stats(), 0.1)
                               for i in range(3)])
    check = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                           capture_output=True, check=False)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


def test_metrics_need_the_token_and_say_their_format(tmp_path: Path) -> None:
    import yaml

    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump({"sites": [{"name": "oregon", "pods": [
        {"name": "or-pod1", "hypervisors": [
            {"name": "hv0", "uri": node_uri(tmp_path, "two-vms.xml")}]}]}]}))
    db = tmp_path / "store.db"
    assert run(db, "apply", "-f", str(tmp_path / "fleet.yaml")).code == 0
    with running_controller(db), Store(f"sqlite:///{db}") as store:
        rec = store.controller()
        assert rec is not None
        for token, status in ((None, 401), ("wrong", 401), (rec.token, 200)):
            conn = http.client.HTTPConnection("localhost", timeout=30)
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(rec.url.removeprefix("unix:"))
            conn.sock = sock
            conn.request("GET", "/metrics",
                         headers={"Authorization": f"Bearer {token}"} if token else {})
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            assert resp.status == status
        assert resp.getheader("content-type", "").startswith("text/plain; version=0.0.4")
        assert value(samples(body), "virtfleet_vm_state", vm="vm1.example.com") == 1


def test_the_alert_rules_pass_promtool_and_fire_as_written() -> None:
    promtool = require_tool("promtool", "prometheus")
    rules = ROOT / "docs" / "prometheus" / "virtfleet-rules.yml"
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True,
                           text=True, check=False)
    assert check.returncode == 0 and "SUCCESS: 14 rules found" in check.stdout, check.stdout
    tests = Path(__file__).parent / "fixtures" / "prometheus"
    unit = subprocess.run([promtool, "test", "rules", "rules-test.yml"], cwd=tests,
                          capture_output=True, text=True, check=False)
    assert unit.returncode == 0, unit.stdout + unit.stderr


def test_the_dashboard_asks_only_for_series_the_controller_exports(
        fleet: tuple[Controller, Observability]) -> None:
    _ctl, obs = fleet
    obs.stats.collect()
    text = obs.metrics.render().decode()
    # Every declared family counts, with or without samples now (no operation has finished).
    exported = {f.name for f in FAMILIES} | {s.name for s in samples(text)}
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)", text, re.M):
        exported |= {name} | ({f"{name}_bucket", f"{name}_sum", f"{name}_count"}
                              if kind == "histogram" else set())
    recorded = set(re.findall(r"record: (\S+)", (ROOT / "docs" / "prometheus" /
                                                 "virtfleet-rules.yml").read_text()))
    board = json.loads((ROOT / "docs" / "grafana" / "virtfleet.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in board["templating"]["list"] if "definition" in v]
    assert len(exprs) > 20
    for expr in exprs:
        for name in re.findall(r"\b(virtfleet_[a-z_]+)", expr):
            assert name in exported or name in recorded, f"{name} in {expr!r}"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def test_a_stats_cache_before_its_first_pass_serves_nothing() -> None:
    with ConnectionPool() as pool:
        cache = StatsCache(pool, list)
        assert cache.last.text == b"" and cache.last.finished_at == 0
        assert cache.collect().hosts == 0


def _get(path: str, url: str, token: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("localhost", timeout=30)
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    conn.sock = sock
    conn.request("GET", url, headers={"Authorization": f"Bearer {token}"})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


def test_the_routes_take_the_apis_guards_one_per_route_and_narrow_events_by_scope(
        fleet: tuple[Controller, Observability], tmp_path: Path) -> None:
    """The seam the API branch plugs into (docs/api.md): a Depends per route, as its
    require("events.read") and require("metrics.read") are, and a caller scoped to group web
    sees only that group's events."""
    from fastapi import Depends, FastAPI, Header, HTTPException

    from virtfleet.controller.events import Event

    from .unix_uvicorn import serving_on_unix_socket

    ctl, obs = fleet
    callers = {"Bearer web": "web", "Bearer admin": "admin"}

    def events_read(authorization: str = Header("")) -> str:
        if authorization not in callers:
            raise HTTPException(status_code=401, detail="bad token")
        return callers[authorization]

    def metrics_read(who: str = Depends(events_read)) -> str:
        if who != "admin":
            raise HTTPException(status_code=403, detail=f"{who} lacks metrics.read")
        return who

    def in_web(e: Event) -> bool:
        return "web" in e.groups

    app = FastAPI()
    for r in obs.routers(Depends(events_read), metrics_auth=Depends(metrics_read),
                         visible=lambda who: in_web if who == "web" else None):
        app.include_router(r)
    path = str(tmp_path / "api.sock")
    with serving_on_unix_socket(app, path):
        def hosts_seen(token: str) -> set[tuple[str, str]]:
            status, body = _get(path, "/api/v1/events?follow=false&kind=host", token)
            assert status == 200
            return {(m["kind"], m["host"]) for m in (
                json.loads(line.removeprefix("data: "))
                for line in body.decode().splitlines() if line.startswith("data: "))}

        assert hosts_seen("admin") == {("host.up", "hv0"), ("host.up", "hv1"),
                                       ("host.down", "dead")}
        assert hosts_seen("web") == {("host.up", "hv1")}
        assert _get(path, "/metrics", "admin")[0] == 200
        status, body = _get(path, "/metrics", "web")
        assert status == 403 and b"lacks metrics.read" in body and b"virtfleet_" not in body
        assert _get(path, "/metrics", "nobody")[0] == 401
