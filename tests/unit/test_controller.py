"""`virtfleet serve` on test-driver hypervisors: found by the CLI, answers like a live query."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pty
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from virtfleet.config import Timeouts
from virtfleet.controller.client import ControllerClient
from virtfleet.controller.service import HEARTBEAT_SECONDS, Controller, now
from virtfleet.errors import NotFound
from virtfleet.inventory.records import ControllerRecord, HostRecord
from virtfleet.inventory.store import Store

from .cli import Result, run, run_dir, running_controller, serve_log
from .faulty_serve import FAULT_ENV
from .nodes import node_uri, refused_port, silent_server

NOBODY = 65534


def _fleet(tmp_path: Path) -> Path:
    data = {"sites": [{"name": "oregon", "pods": [{"name": "or-pod1",
                                                   "insecure_transport": True, "hypervisors": [
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
    # what each answer knows only its way: when it was seen (the controller's), and which
    # VMs are templates (the controller asks each domain once; a direct list does not ask)
    only = ("observed_at", "template")
    strip = [{k: v for k, v in vm.items() if k not in only} for vm in warm.json()]
    assert strip == [{k: v for k, v in vm.items() if k not in only} for vm in live.json()]
    assert all(vm["observed_at"] for vm in warm.json())
    assert all(vm["observed_at"] is None for vm in live.json())
    assert {vm["template"] for vm in warm.json()} == {False}  # two-vms.xml has none
    assert {vm["template"] for vm in live.json()} == {None}
    table = run(db, "list")
    assert "from the controller" in table.err and " Age" in table.out.splitlines()[0]
    assert {v["host"] for v in run(db, "list", "--json", "--group", "web").json()} == {
        "hv1", "hv3"}
    assert run(db, "list", "--pod", "nope").code == 3


def test_the_warm_json_is_what_the_cli_encoder_writes_and_passes_on_the_controllers_rows(
        controller: tuple) -> None:
    """A script's warm `list --json` passes the controller's rows on unparsed: the bytes are
    those json.dumps writes for the parsed rows (what the CLI printed when it parsed them)."""
    db, _proc = controller
    with Store(f"sqlite:///{db}") as store:
        rec = store.controller()
    assert rec is not None
    for scope in ({}, {"group": "web"}, {"state": "running"}):
        parsed = ControllerClient(rec).vms(**scope)
        rest, rows = ControllerClient(rec).vm_rows(**scope)
        assert rows == json.dumps(parsed.pop("vms")).encode()
        assert rest.keys() == parsed.keys() and rest["failed"] == parsed["failed"]
        args = [a for k, v in scope.items() for a in (f"--{k}", v)]
        warm = run(db, "list", "--json", *args)
        assert warm.out == json.dumps(json.loads(warm.out)) + "\n"
    assert len(json.loads(ControllerClient(rec).vm_rows(state="running")[1])) == 4


def test_a_warm_list_at_a_terminal_is_indented(controller: tuple) -> None:
    db, _proc = controller
    main, sub = pty.openpty()
    try:
        p = subprocess.Popen([sys.executable, "-m", "virtfleet.cli.main", "list", "--json"],
                             env={**os.environ, "VIRTFLEET_DB": str(db)}, stdout=sub,
                             stderr=subprocess.PIPE)
        os.close(sub)
        out = bytearray()
        with contextlib.suppress(OSError):  # EIO: the CLI has exited and closed its end
            while chunk := os.read(main, 65536):
                out += chunk
        assert p.wait(timeout=60) == 1 and p.stderr is not None and b"dead" in p.stderr.read()
    finally:
        os.close(main)
    text = out.decode().replace("\r\n", "\n")
    rows = json.loads(text)
    assert len(rows) == 12 and all(v["observed_at"] for v in rows)
    assert text == json.dumps(rows, indent=2) + "\n"


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
    r = run(db, "list", "--json")  # registration is fresh but its process is gone
    assert len(r.json()) == 12 and all(v["observed_at"] is None for v in r.json())
    assert f"controller (pid {proc.pid}) is gone; asking the hypervisors directly" in r.err


def test_clean_stop_unregisters(controller: tuple) -> None:
    db, proc = controller
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    store = Store(f"sqlite:///{db}")
    assert store.controller() is None
    store.close()


def test_sqlite_fast_path_reads_the_same_registration(controller: tuple) -> None:
    from virtfleet.inventory.registration import registration_from_sqlite

    db, _proc = controller
    store = Store(f"sqlite:///{db}")
    try:
        assert registration_from_sqlite(f"sqlite:///{db}") == store.controller()
    finally:
        store.close()


def test_the_warm_path_imports_no_sqlalchemy(controller: tuple) -> None:
    """Importing SQLAlchemy costs more than a whole warm `list`: the registration is read with
    the standard library (inventory/registration.py) and the answer comes over the socket,
    without http.client either (it brings the email and ssl modules: a tenth of the time)."""
    db, _proc = controller
    probe = ("import sys\nfrom virtfleet.cli.main import main\ntry:\n    main()\nfinally:\n"
             "    heavy = sorted({'sqlalchemy', 'http.client', 'email', 'ssl', 'typer'}"
             " & set(sys.modules))\n"
             "    print(f'imported {heavy}' if heavy else 'stdlib only', file=sys.stderr)\n")
    p = subprocess.run([sys.executable, "-c", probe, "list", "--json"],
                       env={**os.environ, "VIRTFLEET_DB": str(db)}, capture_output=True,
                       text=True, timeout=60, check=False)
    assert p.returncode == 1 and all(v["observed_at"] for v in json.loads(p.stdout))
    assert "stdlib only" in p.stderr, p.stderr


def test_a_second_controller_is_refused_and_sync_goes_through_the_first(controller: tuple
                                                                         ) -> None:
    db, first = controller
    second = run(db, "serve")
    assert second.code == 4 and f"pid {first.pid}" in second.err
    # One line, saying what would allow several (docs/scale-out.md).
    assert "several controllers need a PostgreSQL store" in second.err
    assert len(second.err.strip().splitlines()) == 1, second.err
    pinned = run(db, "serve", "--site", "oregon")
    assert pinned.code == 2 and "--site" in pinned.err and "PostgreSQL" in pinned.err
    assert len(pinned.err.strip().splitlines()) == 1, pinned.err
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


def test_serve_refuses_a_socket_directory_others_can_reach(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    r = run(db, "serve", "--socket-dir", str(shared))
    assert r.code == 2 and "--socket-dir" in r.err and "0700" in r.err, r.err
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, NOBODY, NOBODY)
    r = run(db, "serve", "--socket-dir", str(theirs))
    assert r.code == 2 and "belongs to uid 65534" in r.err, r.err
    with Store(f"sqlite:///{db}") as store:
        assert store.controller() is None  # nothing half-made


def test_serve_listens_on_a_socket_in_a_private_directory(controller: tuple) -> None:
    db, proc = controller
    with Store(f"sqlite:///{db}") as store:
        rec = store.controller()
    assert rec is not None and rec.url == f"unix:{run_dir(db)}/controller-{proc.pid}.sock"
    assert stat.S_IMODE(run_dir(db).stat().st_mode) == 0o700
    assert stat.S_IMODE((run_dir(db) / f"controller-{proc.pid}.sock").stat().st_mode) == 0o600
    # no TCP listener at all: nothing for anyone to take over after a crash
    assert _tcp_listeners(proc.pid) == set()
    with socket.socket() as probe:  # the check does see a listener where there is one
        probe.bind(("127.0.0.1", 0))
        probe.listen(1)
        assert os.fstat(probe.fileno()).st_ino in _tcp_listeners(os.getpid())


def _tcp_listeners(pid: int) -> set[int]:
    """Socket inodes of process `pid` that listen on TCP (from /proc, no `ss` needed)."""
    mine = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):  # the fd listdir itself used, say
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                mine.add(int(link[8:-1]))
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A":  # TCP_LISTEN
                listening.add(int(cols[9]))
    return mine & listening


def _raw_get(rec: ControllerRecord, target: str, token: str | None) -> int:
    conn = http.client.HTTPConnection("localhost", timeout=10)
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(rec.url.removeprefix("unix:"))
    conn.sock = sock
    conn.request("GET", target, headers={"Authorization": f"Bearer {token}"} if token else {})
    status = conn.getresponse().status
    conn.close()
    return status


def test_every_route_needs_the_token_even_the_api_description(controller: tuple) -> None:
    db, _proc = controller
    with Store(f"sqlite:///{db}") as store:
        rec = store.controller()
    assert rec is not None
    for open_route in ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"):
        assert _raw_get(rec, open_route, None) == 404
        assert _raw_get(rec, open_route, rec.token) == 404
    for route in ("/v1/openapi.json", "/v1/health", "/v1/vms"):
        assert _raw_get(rec, route, None) == 401
        assert _raw_get(rec, route, "wrong") == 401
        assert _raw_get(rec, route, rec.token) == 200
    for route in ("/api/v1/openapi.json", "/api/v1/vms", "/api/v1/no-such-route"):
        assert _raw_get(rec, route, None) == 401
        assert _raw_get(rec, route, "wrong") == 401
    # the description is of the REST API (docs/openapi.json); the CLI's /v1 calls are not in it
    doc = ControllerClient(rec)._call("GET", "openapi.json")
    assert "/api/v1/vms" in doc["paths"] and "/v1/vms" not in doc["paths"]


# ----------------------------------------------------------------- a dead or hung controller


def test_a_restart_right_after_kill_9_takes_over_at_once(controller: tuple) -> None:
    db, first = controller
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    # the registration is seconds old, but its process is gone: nobody to wait for
    with running_controller(db) as second:
        with Store(f"sqlite:///{db}") as store:
            rec = store.controller()
        assert rec is not None and rec.pid == second.pid
        r = run(db, "list")
        assert "from the controller" in r.err
        assert "taking over from controller pid" in serve_log(db).read_text()
        # the first one's socket was cleared away, the second's is there
        assert [p.name for p in run_dir(db).iterdir()] == [f"controller-{second.pid}.sock"]


def test_a_live_controller_is_not_taken_over_even_when_stopped(controller: tuple) -> None:
    db, first = controller
    first.send_signal(signal.SIGSTOP)
    try:
        r = run(db, "serve")
        assert r.code == 4 and f"pid {first.pid}" in r.err
    finally:
        first.send_signal(signal.SIGCONT)


def test_a_stopped_controller_costs_the_cli_one_short_wait(controller: tuple) -> None:
    db, proc = controller
    proc.send_signal(signal.SIGSTOP)
    try:
        began = time.monotonic()
        r = run(db, "list", "--json")
        took = time.monotonic() - began
        synced = run(db, "sync", "--json")  # checks the controller answers before the long wait
    finally:
        proc.send_signal(signal.SIGCONT)
    assert synced.code == 1 and synced.json()["vms"] == 12, synced.err
    assert "did not answer" in synced.err and "syncing from here" in synced.err
    assert r.code == 1 and len(r.json()) == 12
    assert all(v["observed_at"] is None for v in r.json())  # asked live
    assert f"controller pid {proc.pid} did not answer" in r.err, r.err
    assert "asking the hypervisors directly" in r.err
    # Not a speed target (bench/controller_failover measures the ~2.5 s): a bound far from both
    # the configured wait and the old 30 s one, so a loaded machine cannot fail it by accident.
    assert took < 20, f"the CLI waited {took:.1f}s on a stopped controller (the old wait was 30s)"
    r = run(db, "list", "--json", env={"VIRTFLEET_CONTROLLER_TIMEOUT": "0"})
    assert r.code == 2 and "VIRTFLEET_CONTROLLER_TIMEOUT" in r.err


# ----------------------------------------------------------------- impersonation


SQUATTER = r"""
import json, os, socket, sys
kind, addr, log = sys.argv[1:4]
if kind == "tcp":
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(addr)))
else:
    s = socket.socket(socket.AF_UNIX)
    s.bind(addr)
s.listen(16)
print(os.getpid(), flush=True)
vm = {"host": "hv0", "site": "oregon", "pod": "or-pod1", "name": "FORGED-VM", "uuid": "0",
      "state": "running", "id": 1, "vcpus": 1, "memory_mib": 1,
      "observed_at": "2026-01-01T00:00:00+00:00"}
body = json.dumps({"generated_at": vm["observed_at"], "failed": [], "vms": [vm]}).encode()
while True:
    c, _ = s.accept()
    c.settimeout(2)
    try:
        data = c.recv(65536)
    except OSError:
        data = b""
    with open(log, "ab") as f:
        f.write(b"<connection>" + data)
    try:
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                  + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    except OSError:
        pass
    c.close()
"""


@contextmanager
def squatter(kind: str, addr: str, scratch: Path) -> Iterator[tuple[int, Path]]:
    """A process of user nobody listening on `addr`, logging what it is sent, answering every
    request with a forged fleet view. Yields its pid and its log."""
    log = scratch / f"squat-{kind}.log"
    proc = subprocess.Popen(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c",
                             SQUATTER, kind, addr, str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip().isdigit(), proc.stderr.read() if proc.stderr else line
        yield int(line), log
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory user nobody can write (tmp_path's parents are root's only)."""
    d = Path(tempfile.mkdtemp(prefix="vf-squat-"))
    d.chmod(0o755)
    os.chown(d, NOBODY, NOBODY)
    yield d
    shutil.rmtree(d)


def _forge_registration(db: Path, url: str, pid: int) -> None:
    """What a store left by an older virtfleet (or a tampered row) would say."""
    with Store(f"sqlite:///{db}") as store:
        old = store.controller()
        store.register_controller(ControllerRecord(
            url=url, token="THE-SECRET-TOKEN", pid=pid, hostname=socket.gethostname(),
            started_at=datetime.now(UTC), heartbeat_at=datetime.now(UTC)), replacing=old)


def _asked_live_and_told_nothing(db: Path, log: Path) -> Result:
    r = run(db, "list", "--json")
    assert "FORGED-VM" not in r.out + r.err
    assert len(r.json()) == 12 and all(v["observed_at"] is None for v in r.json())
    assert not log.exists() or b"THE-SECRET-TOKEN" not in log.read_bytes()
    assert not log.exists() or log.read_bytes() in (b"", b"<connection>"), log.read_bytes()
    return r


def test_a_squatter_after_kill_9_cannot_take_the_socket_or_the_token(controller: tuple,
                                                                     scratch: Path) -> None:
    db, proc = controller
    with Store(f"sqlite:///{db}") as store:
        rec = store.controller()
    assert rec is not None
    path = rec.url.removeprefix("unix:")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    # nobody cannot bind where the controller listened: the directory is root's, 0700
    grab = subprocess.run(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c",
                           "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])",
                           path], capture_output=True, text=True, check=False)
    assert grab.returncode != 0 and "PermissionError" in grab.stderr, grab.stderr
    # the old attack: a TCP port on loopback, named by a registration (as older versions made)
    port = refused_port()
    with squatter("tcp", str(port), scratch) as (pid, log):
        _forge_registration(db, f"http://127.0.0.1:{port}", pid)
        r = _asked_live_and_told_nothing(db, log)
        assert "not a Unix socket; not sending it the token" in r.err


def test_a_socket_in_a_directory_others_can_write_gets_no_token(controller: tuple,
                                                                scratch: Path) -> None:
    db, _proc = controller
    with squatter("unix", str(scratch / "controller.sock"), scratch) as (pid, log):
        _forge_registration(db, f"unix:{scratch}/controller.sock", pid)
        r = _asked_live_and_told_nothing(db, log)
        assert "is not a directory of root or uid 0 with mode 0700" in r.err, r.err


def test_a_socket_held_by_another_user_gets_no_token(controller: tuple, scratch: Path) -> None:
    db, _proc = controller
    inner = scratch / "d"
    inner.mkdir(mode=0o700)
    os.chown(inner, NOBODY, NOBODY)
    with squatter("unix", str(inner / "controller.sock"), scratch) as (pid, log):
        # the directory now passes the check (root's, 0700), but nobody listens on the socket
        os.chown(inner, 0, 0)
        _forge_registration(db, f"unix:{inner}/controller.sock", pid)
        r = _asked_live_and_told_nothing(db, log)
        assert f"held by pid {pid} (uid {NOBODY})" in r.err, r.err


# ----------------------------------------------------------------- workers that fail


FAULTY = "tests.unit.faulty_serve"


def wait_for(what: str, check: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def _served(db: Path) -> Result:
    return run(db, "list", "--json")


def _from_controller(r: Result) -> bool:
    return bool(r.out) and all(v["observed_at"] for v in r.json()) and \
        "asking the hypervisors" not in r.err


def _health(db: Path) -> dict[str, Any]:
    with Store(f"sqlite:///{db}") as store:
        rec = store.controller()
    assert rec is not None
    return ControllerClient(rec).health()


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[tuple[Path, Path, subprocess.Popen[str]]]:
    db = tmp_path / "store.db"
    assert run(db, "apply", "-f", str(_fleet(tmp_path))).code == 0
    fault = tmp_path / "fault"
    with running_controller(db, "--stuck-after", "3", module=FAULTY,
                            env={FAULT_ENV: str(fault)}) as proc:
        yield db, fault, proc


def test_a_worker_outlives_unexpected_errors_and_is_not_served_while_they_last(
        faulty: tuple) -> None:
    db, fault, _proc = faulty
    assert _from_controller(_served(db))
    fault.write_text("raise")
    wait_for("the controller to report itself unhealthy",
             lambda: "controller unhealthy" in _served(db).err)
    r = _served(db)
    assert re.search(r"the maintenance worker failed \d+ passes in a row \(RuntimeError: "
                     "injected fault", r.err), r.err
    assert all(v["observed_at"] is None for v in r.json())  # live, not the stale view
    log = serve_log(db).read_text()
    assert "Traceback" in log and "RuntimeError: injected fault" in log  # logged in full
    fault.unlink()
    wait_for("the controller to heal", lambda: _from_controller(_served(db)))
    health = _health(db)
    maintenance = health["workers"]["maintenance"]
    assert health["healthy"] and maintenance["alive"] and maintenance["failing"] == 0
    assert maintenance["faults"] >= 3  # counted


def test_a_dead_worker_stops_the_heartbeat_and_the_cli_asks_live(faulty: tuple) -> None:
    db, fault, proc = faulty
    assert _from_controller(_served(db))
    fault.write_text("exit")  # SystemExit ends the maintenance thread, nothing else
    wait_for("the worker to die", lambda: "the maintenance worker has died" in _served(db).err)
    fault.unlink()  # a dead worker stays dead: the controller must keep saying so
    r = _served(db)
    assert "controller unhealthy: the maintenance worker has died" in r.err
    assert len(r.json()) == 12 and all(v["observed_at"] is None for v in r.json())
    assert proc.poll() is None
    wait_for("the heartbeat to stop", lambda: "heartbeat stopped" in serve_log(db).read_text())
    with Store(f"sqlite:///{db}") as store:
        before = store.controller()
        time.sleep(HEARTBEAT_SECONDS * 1.5)
        after = store.controller()
    assert before is not None and after is not None and before == after  # no beat since
    # ... so once its last beat is STALE_AFTER old, CLIs stop asking it at all, and a new
    # controller may take over


def test_a_stuck_worker_stops_being_served_until_it_moves_again(faulty: tuple) -> None:
    db, fault, _proc = faulty
    fault.write_text("hang")
    wait_for("the stuck worker to be noticed",
             lambda: "the maintenance worker has made no progress" in _served(db).err)
    assert all(v["observed_at"] is None for v in _served(db).json())
    fault.unlink()
    wait_for("the controller to heal", lambda: _from_controller(_served(db)))


class _FailingStore(Store):
    """A store whose domain writes fail with an error virtfleet does not expect."""

    def delete_domain(self, host: str, uuid: str) -> None:
        raise RuntimeError("injected fault: the store write blew up")


def test_the_event_worker_outlives_an_unexpected_error(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    assert run(db, "apply", "-f", str(_fleet(tmp_path))).code == 0
    store = _FailingStore(f"sqlite:///{db}")
    ctl = Controller(store, interval=60)
    try:
        ctl.start(f"unix:{tmp_path}/none.sock")
        events = ctl.workers["events"]
        # an event for a domain that is gone: the controller deletes it, and the store raises
        ctl._events.put(("domain", "hv0", "00000000-0000-0000-0000-000000000000", now(),
                         ("undefined", "removed")))
        wait_for("the fault to be counted", lambda: events.faults == 1)
        assert events.last_fault.startswith("RuntimeError: injected fault")
        assert events.thread is not None and events.thread.is_alive()
        assert ctl.problems() == []  # one failure is logged and counted, not fatal
        for _ in range(2):
            ctl._events.put(("domain", "hv0", "00000000-0000-0000-0000-000000000000", now(),
                             ("undefined", "removed")))
        wait_for("three in a row", lambda: events.failing == 3)
        assert ctl.problems() == ["the events worker failed 3 passes in a row "
                                  "(RuntimeError: injected fault: the store write blew up)"]
    finally:
        ctl.stop()
        store.close()


def test_an_event_is_not_held_up_by_a_sync_waiting_on_a_hung_host(tmp_path: Path) -> None:
    """Each retry of a fenced host waits out its connect deadline; the events of the other
    hosts go into the view meanwhile (they used to wait behind it: ~10 s of lag per retry)."""
    db = tmp_path / "store.db"
    assert run(db, "apply", "-f", str(_fleet(tmp_path))).code == 0
    store = Store(f"sqlite:///{db}")
    ctl = Controller(store, interval=3600, timeouts=Timeouts(connect=60, call=60))
    vm1 = "ba292588-6570-2674-1425-b2ee6a4e7c2b"
    with silent_server() as port:
        hung = HostRecord("hung", f"qemu+tcp://127.0.0.1:{port}/system", "oregon", "or-pod1")
        try:
            ctl.start(f"unix:{tmp_path}/none.sock")
            assert ctl.state.domain("hv0", vm1) is not None
            syncing = threading.Thread(target=ctl.sync, args=([hung],), daemon=True)
            syncing.start()
            ctl.state.delete("hv0", vm1, now())  # so the event's effect can be seen
            ctl._events.put(("domain", "hv0", vm1, now(), ("started", "booted")))
            wait_for("the event in the view",
                     lambda: ctl.state.domain("hv0", vm1) is not None, seconds=50)
            assert syncing.is_alive()  # still waiting on the hung host
        finally:
            ctl.stop()
            store.close()


def test_a_vm_ha_restarted_elsewhere_leaves_the_fenced_hosts_row_in_the_view(
        tmp_path: Path) -> None:
    """The store drops the fenced host's copy when HA restarts the VM on another host; the
    controller's view must too, or list shows it twice (once `unknown`)."""
    db = tmp_path / "store.db"
    assert run(db, "apply", "-f", str(_fleet(tmp_path))).code == 0
    store = Store(f"sqlite:///{db}")
    ctl = Controller(store, interval=3600)
    vm1 = "ba292588-6570-2674-1425-b2ee6a4e7c2b"
    try:
        ctl.start(f"unix:{tmp_path}/none.sock")
        assert ctl.state.domain("hv0", vm1) is not None and ctl.state.domain("hv1", vm1)
        ctl._publish_ha("ha.action", "hv0", "vm1.example.com",
                        {"action": "restart", "uuid": vm1, "on": "hv1"})
        assert ctl.state.domain("hv0", vm1) is None
        assert ctl.state.domain("hv1", vm1) is not None  # where it runs now stays
        ctl._publish_ha("ha.action", "hv1", None, {"state": "fenced", "detail": "off"})
        assert ctl.state.domain("hv1", vm1) is not None  # other HA news changes no row
    finally:
        ctl.stop()
        store.close()
