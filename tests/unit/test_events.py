"""The events bus, its SSE route over a real HTTP server, the journal watcher, and `virtfleet
events` against a real controller on test-driver hypervisors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from virtfleet.controller.events import EventBus, HostEvents, check_kinds
from virtfleet.controller.events_api import events_router
from virtfleet.controller.eventstream import SSEParser
from virtfleet.controller.journalwatch import JournalWatcher, progress_events
from virtfleet.errors import InvalidInput
from virtfleet.fleet.scope import Step
from virtfleet.inventory.records import Made
from virtfleet.inventory.store import Store
from virtfleet.provision.journal import begin

from .cli import run, running_controller
from .nodes import host, node_uri, refused_port
from .unix_uvicorn import serving_on_unix_socket


def test_a_subscriber_gets_what_it_asked_for_in_order_with_ids() -> None:
    bus = EventBus()
    hv = host("hv1", "test:///x", groups=("web",))
    backlog, sub = bus.subscribe(("vm", "host.down"))
    assert backlog == [] and sub is not None
    bus.publish("host.up", host=hv)
    bus.publish("vm.state", host=hv, vm="web01", data={"state": "running"})
    bus.publish("host.down", host=hv, data={"reason": "gone"})
    got = sub.get(0)
    assert [e.kind for e in got] == ["vm.state", "host.down"]
    assert [e.seq for e in got] == [2, 3]
    assert got[0].as_json() == {"kind": "vm.state", "at": got[0].at.isoformat(),
                                "id": f"{bus.epoch}-2", "site": "oregon", "pod": "or-pod1",
                                "host": "hv1", "vm": "web01", "groups": ["web"],
                                "data": {"state": "running"}}
    sub.close()
    assert bus.subscribers == 0


def test_unknown_kinds_are_refused_naming_the_field() -> None:
    assert check_kinds(["host", "vm.state"]) == ("host", "vm.state")
    with pytest.raises(InvalidInput) as err:
        check_kinds(["vm", "vms"], "kinds")
    assert err.value.field == "kinds" and "'vms' is not an event kind" in err.value.rule
    with pytest.raises(ValueError):
        EventBus().publish("vm.exploded")


def test_a_slow_subscriber_is_dropped_with_a_final_event_and_never_blocks_the_publisher() -> None:
    bus = EventBus(ring=100, queue=10)
    _backlog, slow = bus.subscribe()
    _backlog, quick = bus.subscribe()
    assert slow is not None and quick is not None
    for i in range(5):
        bus.publish("host.up", data={"i": i})
    assert len(quick.get(0)) == 5  # the quick one keeps up
    assert len(slow.get(0)) == 5 and slow.last_id == f"{bus.epoch}-5"
    quick_got = []
    for i in range(5, 40):  # the slow one stops reading; the quick one reads as they come
        bus.publish("host.up", data={"i": i})
        quick_got += quick.get(0)
    [final] = slow.get(0)
    assert final.kind == "stream.dropped" and final.seq == 0
    assert final.data == {"reason": "the client fell 10 events behind",
                          "resume_from": f"{bus.epoch}-5"}
    assert slow.finished and bus.dropped == 1
    assert len(quick_got) == 35 and not quick.dropped
    # Coming back from where it was dropped, it gets everything it missed from the ring.
    missed, again = bus.subscribe(last_id=str(final.data["resume_from"]), follow=False)
    assert again is None and [e.data["i"] for e in missed] == list(range(5, 40))


def test_resuming_beyond_the_ring_or_from_another_process_says_there_is_a_gap() -> None:
    bus = EventBus(ring=5)
    for _ in range(12):
        bus.publish("host.up")
    within, _ = bus.subscribe(last_id=f"{bus.epoch}-9", follow=False)
    assert [e.seq for e in within] == [10, 11, 12]
    beyond, _ = bus.subscribe(last_id=f"{bus.epoch}-3", follow=False)
    assert beyond[0].kind == "stream.gap" and "4 events are no longer kept" in str(
        beyond[0].data["reason"])
    assert [e.seq for e in beyond[1:]] == [8, 9, 10, 11, 12]
    other, _ = bus.subscribe(last_id="0badcafe-3", follow=False)
    assert other[0].kind == "stream.gap" and "restarted" in str(other[0].data["reason"])
    for bad, rule in ((f"{bus.epoch}-13", "later than the last event"),
                      ("13", "not an event id")):
        with pytest.raises(InvalidInput) as err:
            bus.subscribe(last_id=bad)
        assert err.value.field == "Last-Event-ID" and rule in err.value.rule
    assert bus.subscribers == 0  # a refused subscription leaves nothing behind


def test_host_events_say_only_what_changed() -> None:
    bus = EventBus()
    hosts = HostEvents(bus)
    hv = host("hv1", "test:///x")
    hosts.answered(hv, 3)
    hosts.answered(hv, 3)  # a resync of a healthy host says nothing
    hosts.lost(hv, "no answer to keepalive probes", "host-unavailable")
    hosts.lost(hv, "connection refused", "host-unavailable")  # still the same outage
    hosts.answered(hv, 2)
    events, _ = bus.subscribe(follow=False)
    assert [e.kind for e in events] == ["host.up", "host.down", "host.up"]
    assert events[0].data == {"vms": 3, "again": False}
    assert events[1].data == {"reason": "no answer to keepalive probes",
                              "error_kind": "host-unavailable"}
    assert events[2].data["again"] is True and "down_seconds" in events[2].data


def test_progress_events_publish_the_last_step_always() -> None:
    bus = EventBus()
    tick = progress_events(bus, "op1")
    for done in range(1, 101):
        tick(Step("start", done, 100))
    events, _ = bus.subscribe(follow=False)
    assert events[0].data == {"what": "start", "done": 1, "total": 100}
    assert events[-1].data == {"what": "start", "done": 100, "total": 100}
    assert len(events) < 100 and {e.operation for e in events} == {"op1"}


def test_the_journal_watcher_tells_operations_from_start_to_end(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        bus = EventBus()
        watch = JournalWatcher(store, bus)
        old = begin(store, "clone", "before")
        watch.poll()  # what ran before the controller is not news
        op = begin(store, "create", "web01")
        watch.poll()
        op.made(Made("volume", "hv1", "/pool/web01.qcow2"))
        watch.poll()
        assert watch.counts() == {"running": 2}
        store.end_operation(op.id)
        store.fail_operation(old.id, [], "disk vanished")
        watch.poll()
        events, _ = bus.subscribe(follow=False)
    assert [(e.kind, e.operation) for e in events] == [
        ("operation.started", op.id), ("operation.progress", op.id),
        ("operation.failed", old.id), ("operation.ended", op.id)]
    assert events[1].data["step"] == "volume /pool/web01.qcow2 on hv1"
    assert events[2].data["error"] == "disk vanished"
    assert watch.ended_counts() == {("create", "ended"): 1, ("clone", "failed"): 1}


# -- over HTTP -------------------------------------------------------------------------------


@pytest.fixture
def served_bus(tmp_path: Path) -> Iterator[tuple[EventBus, str]]:
    """The events route on a real uvicorn, on a Unix socket, with a bus the test drives."""
    bus = EventBus(queue=50)
    app = FastAPI()

    def auth() -> str:
        return "tester"

    app.include_router(events_router(bus, auth))
    path = str(tmp_path / "events.sock")
    with serving_on_unix_socket(app, path):
        yield bus, path


def _connect(path: str, query: str = "", headers: str = "") -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window fills quickly
    s.connect(path)
    s.sendall(f"GET /api/v1/events{query} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
    return s


def _messages(raw: bytes) -> list[tuple[str, str, dict[str, object]]]:
    """The SSE messages of a chunked HTTP body read whole (chunk sizes are their own lines)."""
    body = raw.split(b"\r\n\r\n", 1)[1].decode()
    parser = SSEParser()
    out = []
    for line in body.split("\n"):
        msg = parser.feed(line.rstrip("\r"))
        if msg is not None:
            out.append((msg.id, msg.kind, msg.body))
    return out


def _read_all(s: socket.socket) -> bytes:
    chunks = []
    s.settimeout(60)
    while data := s.recv(65536):
        chunks.append(data)
        if b"\r\n0\r\n\r\n" in data:
            break
    return b"".join(chunks)


def test_sse_sends_the_backlog_after_last_event_id_and_ends_without_follow(
        served_bus: tuple[EventBus, str]) -> None:
    bus, path = served_bus
    for i in range(4):
        bus.publish("host.up" if i % 2 else "vm.state", data={"i": i})
    s = _connect(path, "?follow=false&kind=vm", f"Last-Event-ID: {bus.epoch}-1\r\n")
    got = _messages(_read_all(s))
    assert [(m[0], m[1], m[2]["data"]) for m in got] == [(f"{bus.epoch}-3", "vm.state",
                                                          {"i": 2})]
    bad = _connect(path, "?kind=vms")
    answer = _read_all(bad).decode()
    assert answer.startswith("HTTP/1.1 400") and "kind: 'vms' is not an event kind" in answer


def test_sse_drops_a_client_that_stopped_reading_and_it_can_resume(
        served_bus: tuple[EventBus, str]) -> None:
    bus, path = served_bus
    s = _connect(path)
    deadline = time.monotonic() + 30
    while bus.subscribers == 0:
        assert time.monotonic() < deadline, "the stream never subscribed"
        time.sleep(0.05)
    first = bus.publish("host.up")
    seen_first = b""
    s.settimeout(60)
    while first.id.encode() not in seen_first:  # the stream is live and read up to here
        seen_first += s.recv(4096)
    # The client reads nothing while 3,000 events of 1 KiB are published: once the socket's
    # buffers are full the server's writer waits, the subscriber's queue (50) fills and the bus
    # drops it. A publisher that waited for the reader would never get through this loop.
    filler = "x" * 1024
    done = threading.Event()

    def publish() -> None:
        for i in range(3000):
            bus.publish("vm.state", data={"i": i, "pad": filler})
        done.set()

    threading.Thread(target=publish, daemon=True).start()
    assert done.wait(120), "a client that does not read held up the publisher"
    assert bus.dropped == 1
    # Now it reads: what fitted in the buffers, then the notice.
    got = _messages(seen_first + _read_all(s))
    assert got[0][0] == first.id
    assert got[-1][1] == "stream.dropped" and got[-1][0] == ""
    resume = str(got[-1][2]["data"]["resume_from"])  # type: ignore[index]
    assert resume == got[-2][0]  # the last event it was given
    seen = [m[2]["data"]["i"] for m in got[1:-1]]  # type: ignore[index]
    assert seen == list(range(len(seen))) and len(seen) < 3000
    back = _messages(_read_all(_connect(path, "?follow=false",
                                        f"Last-Event-ID: {resume}\r\n")))
    assert [m[2]["data"]["i"] for m in back] == list(range(len(seen), 3000))  # type: ignore[index]


# -- the CLI against a real controller ---------------------------------------------------------


def _fleet(tmp_path: Path) -> Path:
    import yaml

    # insecure_transport: the "dead" host is a refused qemu+tcp port.
    data = {"sites": [{"name": "oregon", "pods": [{"name": "or-pod1", "insecure_transport": True,
                                                  "hypervisors": [
        {"name": "hv0", "uri": node_uri(tmp_path, "two-vms.xml", "hv0.xml"), "groups": ["web"]},
        {"name": "dead", "uri": f"qemu+tcp://127.0.0.1:{refused_port()}/system"}]}]}]}
    p = tmp_path / "fleet.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_virtfleet_events_prints_what_the_controller_saw(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    assert run(db, "apply", "-f", str(_fleet(tmp_path))).code == 0
    r = run(db, "events")
    assert r.code == 1 and "no controller is running for this store" in r.err
    with running_controller(db):
        r = run(db, "events", "--json")
        assert r.code == 0, r.err
        got = [json.loads(line) for line in r.out.splitlines()]
        assert {(e["kind"], e["host"]) for e in got} == {("host.up", "hv0"),
                                                         ("host.down", "dead")}
        up = next(e for e in got if e["kind"] == "host.up")
        assert up["groups"] == ["web"] and up["data"] == {"vms": 3, "again": False}
        text = run(db, "events", "--kind", "host.down")
        assert text.code == 0 and "oregon/or-pod1/dead" in text.out
        assert "Connection refused" in text.out and "hv0" not in text.out
        later = run(db, "events", "--json", "--since", got[0]["id"])
        assert [json.loads(x)["id"] for x in later.out.splitlines()] == [
            e["id"] for e in got[1:]]
        for args, says in ((["--kind", "vms"], "--kind: 'vms' is not an event kind"),
                           (["--since", "yesterday"], "--since: 'yesterday' is not an event")):
            bad = run(db, "events", *args)
            assert bad.code == 2 and says in bad.err and not bad.out


def test_a_controller_stops_on_sigterm_with_an_events_client_following(tmp_path: Path) -> None:
    """Regression (bench/scale): uvicorn waits for every open response before it stops, and an
    events stream never ends by itself, so a SIGTERM with `events --follow` connected left the
    controller running (on PostgreSQL, renewing its leases) until the client went away."""
    db = tmp_path / "store.db"
    assert run(db, "apply", "-f", str(_fleet(tmp_path))).code == 0
    with running_controller(db) as proc:
        client = subprocess.Popen(
            [sys.executable, "-m", "virtfleet.cli.main", "events", "--follow"],
            env={**os.environ, "VIRTFLEET_DB": str(db)}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        try:
            assert client.stdout is not None
            assert "host." in client.stdout.readline()  # following: the backlog came
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)  # before the fix: never, while the client stays
            assert client.poll() is None  # it is still there, and reconnecting
        finally:
            client.kill()
            client.communicate()
    with Store(f"sqlite:///{db}") as store:
        assert store.controller() is None  # it unregistered: an orderly stop


# What the monitor and the journal watcher publish (ha/monitor.py, controller/journalwatch.py).
SAID = [
    ("host.suspect", {"state": "suspect", "detail": "lost 4s ago; asking its BMC"},
     "HA suspect: lost 4s ago; asking its BMC"),
    ("host.unknown", {"state": "fence-failed", "detail": "its BMC did not answer"},
     "HA fence-failed: its BMC did not answer"),
    ("ha.action", {"state": "fenced", "detail": "powered off through its BMC"},
     "HA fenced: powered off through its BMC"),
    ("ha.action", {"action": "restart", "uuid": "5f0c", "on": "hv2"}, "HA restarted it on hv2"),
    ("ha.action", {"action": "reconcile", "uuid": "5f0c", "detail": "runs on hv2"},
     "HA undefined its stale copy here: runs on hv2"),
    ("operation.failed", {"kind": "clone", "target": "web-3", "state": "failed",
                          "error": "disk left behind"}, "clone web-3 failed: disk left behind"),
    ("stream.gap", {"reason": "resumed from another controller"},
     "resumed from another controller"),
    ("vm.future", {"why": "new", "n": 2, "empty": None}, "why=new n=2"),
]


@pytest.mark.parametrize("kind,data,words", SAID, ids=[f"{k}-{i}" for i, (k, _d, _w)
                                                       in enumerate(SAID)])
def test_each_event_kind_reads_as_a_sentence_not_json(kind: str, data: dict[str, object],
                                                      words: str) -> None:
    """Regression: `virtfleet events` printed HA events' data as raw JSON."""
    from virtfleet.cli.events import line, summary

    body = {"kind": kind, "at": "2026-12-01T07:00:00+00:00", "host": "hv1", "data": data}
    assert summary(body) == words
    assert "{" not in line(body) and line(body).count("\n") == 1


def test_every_kind_the_controller_publishes_has_its_own_sentence() -> None:
    from virtfleet.cli.events import _RENDER
    from virtfleet.controller.events import KINDS

    assert all(k in _RENDER or f"{k.split('.')[0]}.*" in _RENDER for k in KINDS)
