"""The REST API of a real controller on the lab's libvirtd hypervisors, with real QEMU guests.

Truth comes from the machine: the QEMU processes whose -uuid is a guest's (one per running
guest; a new pid once it was powered off and started again), not virtfleet's own view.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import LabFixture
from tests.unit.apiclient import Api
from tests.unit.cli import run, running_controller
from tests.unit.nodes import refused_port
from tests.unit.test_api import expired_token, refused_writes, try_refused

pytestmark = pytest.mark.integration


def qemu_pids(uuid: str) -> list[int]:
    """The QEMU processes on this machine whose -uuid is `uuid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and b"qemu-system" in args[0] and any(
                a == b"-uuid" and b == uuid.encode()
                for a, b in zip(args, args[1:], strict=False)):
            found.append(int(entry.name))
    return found


@dataclass
class LabApi:
    db: Path
    api: Api
    tokens: dict[str, str]
    web: str  # a running guest on a hypervisor of group web
    db_vm: str  # a running guest on a hypervisor of group db
    pod: str  # a pod whose only web hypervisor has no db guest

    def as_(self, who: str) -> Api:
        return self.api.as_(self.tokens[who])

    def audit(self, **query: str) -> list[dict[str, Any]]:
        q = "&".join(f"{k}={v}" for k, v in query.items())
        got = self.as_("root").get(f"/api/v1/audit?{q}")
        assert got.status == 200, got.body
        return list(got.body)

    def uuid(self, vm: str) -> str:
        got = self.as_("root").get(f"/api/v1/vms/{vm}")
        assert got.status == 200, got.body
        return str(got.body["uuid"])


def started_event(api: Api, vm: str, wait: float = 60) -> bool:
    """Whether /api/v1/events (its backlog, follow=false) holds `vm` reaching running; the
    lifecycle event may trail the operation's end by a moment."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        got = api.get("/api/v1/events?follow=false&kind=vm.state")
        assert got.status == 200, got.body
        frames = [json.loads(line[len("data: "):]) for line in str(got.body).splitlines()
                  if line.startswith("data: ")]
        if any(e["vm"] == vm and e["data"].get("state") == "running" for e in frames):
            return True
        time.sleep(1)
    return False


def _token(db: Path, user: str) -> str:
    r = run(db, "token", "create", user)
    assert r.code == 0, r.err
    return r.out.strip()


@pytest.fixture(scope="module")
def lab_api(lab: LabFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabApi]:
    tmp = tmp_path_factory.mktemp("lab-api")
    web_host, db_host, other = lab.hosts  # pod 1: web, db; pod 2: web
    fleet = yaml.safe_load(lab.fleet_file.read_text())
    for pod in fleet["sites"][0]["pods"]:
        for hv in pod["hypervisors"]:
            hv["groups"] = ["db"] if hv["name"] == db_host.name else ["web"]
    (tmp / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    db = tmp / "store.db"
    assert run(db, "apply", "-f", str(tmp / "fleet.yaml")).code == 0
    guests = {g.host: g.name for g in lab.lab.guests(1, timeout=180)}
    for user, role, scope in (("root", "admin", "all"), ("viewer", "viewer", "all"),
                              ("webop", "operator", "group:web")):
        assert run(db, "user", "add", user).code == 0
        assert run(db, "grant", "add", user, role, "--scope", scope).code == 0
    tokens = {u: _token(db, u) for u in ("root", "viewer", "webop")}
    tokens["expired"] = expired_token(db)
    port = refused_port()
    try:
        with running_controller(db, "--listen", f"127.0.0.1:{port}"):
            yield LabApi(db, Api("127.0.0.1", port, timeout=300), tokens,
                         guests[web_host.name], guests[db_host.name], other.pod)
    finally:
        lab.lab.guests(0)


def test_a_viewer_cannot_stop_a_vm(lab_api: LabApi) -> None:
    uuid = lab_api.uuid(lab_api.web)
    [pid] = qemu_pids(uuid)
    got = lab_api.as_("viewer").post(f"/api/v1/vms/{lab_api.web}/destroy")
    assert got.status == 403 and got.body["permission"] == "vm.lifecycle", got.body
    assert qemu_pids(uuid) == [pid]  # the same QEMU, untouched
    [entry] = [e for e in lab_api.audit(user="viewer") if e["action"] == "vm.destroy"]
    assert entry["result"] == "denied" and entry["target"] == f"vm:{lab_api.web}"


def test_an_operator_of_group_web_restarts_a_web_vm_and_not_a_db_vm(lab_api: LabApi) -> None:
    webop = lab_api.as_("webop")
    web_uuid, db_uuid = lab_api.uuid(lab_api.web), lab_api.uuid(lab_api.db_vm)
    [web_pid], [db_pid] = qemu_pids(web_uuid), qemu_pids(db_uuid)

    got = webop.post(f"/api/v1/vms/{lab_api.db_vm}/destroy")
    assert got.status == 403 and got.body["target"] == f"vm:{lab_api.db_vm}", got.body
    assert qemu_pids(db_uuid) == [db_pid]

    # restarted the hard way, so the machine shows it: a new QEMU process
    assert webop.post(f"/api/v1/vms/{lab_api.web}/destroy").status == 200
    assert qemu_pids(web_uuid) == []
    got = webop.post(f"/api/v1/vms/{lab_api.web}/start")
    assert got.status == 200, got.body
    [new_pid] = qemu_pids(web_uuid)
    assert new_pid != web_pid
    assert qemu_pids(db_uuid) == [db_pid]
    done = [(e["action"], e["result"]) for e in lab_api.audit(user="webop")
            if e["target"] == f"vm:{lab_api.web}"]
    assert done[-2:] == [("vm.destroy", "ok"), ("vm.start", "ok")]


def test_a_revoked_token_stops_at_once(lab_api: LabApi) -> None:
    token = _token(lab_api.db, "webop")
    api = lab_api.api.as_(token)
    uuid = lab_api.uuid(lab_api.web)
    [pid] = qemu_pids(uuid)
    assert api.get("/api/v1/whoami").status == 200
    assert run(lab_api.db, "token", "revoke", token.split("_")[1]).code == 0
    got = api.post(f"/api/v1/vms/{lab_api.web}/destroy")
    assert got.status == 401
    assert qemu_pids(uuid) == [pid]


def test_refused_writes_change_nothing_and_are_each_audited(lab_api: LabApi) -> None:
    running = {vm: qemu_pids(lab_api.uuid(vm)) for vm in (lab_api.web, lab_api.db_vm)}
    cases = refused_writes(lab_api.web, lab_api.db_vm, lab_api.pod)
    assert len(cases) >= 12
    for case in cases:
        try_refused(lab_api.api, lab_api.tokens, case, lab_api.audit)
    assert {vm: qemu_pids(lab_api.uuid(vm)) for vm in running} == running
    listed = lab_api.as_("root").get("/api/v1/vms").body["items"]
    assert not any(v["name"] in ("new1", "x") for v in listed)


def test_create_through_the_api_is_an_operation_with_progress_and_audited(
        lab_api: LabApi, lab: LabFixture) -> None:
    webop = lab_api.as_("webop")
    name = "api-made-1"
    body = {"name": name, "memory": "64M", "vcpus": 1, "pod": lab_api.pod, "app": "web",
            "pxe": True, "virt_type": "qemu", "graphics": {"type": "none"}}
    got = webop.post("/api/v1/vms", body)
    assert got.status == 202, got.body
    op = got.body
    assert op["state"] in ("queued", "running") and op["user"] == "webop"
    try:
        deadline = time.monotonic() + 240
        while op["state"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, op
            time.sleep(0.5)
            op = webop.get(f"/api/v1/operations/{op['id']}").body
        assert op["state"] == "succeeded", op
        steps = [s["what"] for s in op["progress"]]
        [host] = [h.name for h in lab.hosts if h.pod == lab_api.pod]
        assert steps[0] == f"placed {name} on {host}"
        assert any(s.startswith("recorded ") for s in steps)  # from the journal
        assert steps[-1] == f"started {name} on {host}"
        uuid = op["result"]["uuid"]
        assert len(qemu_pids(uuid)) == 1  # it runs, once
        # The events stream, read with the same operator's token, shows it start.
        assert started_event(webop, name), "no vm.state event of it running"

        mine = [e for e in lab_api.audit(user="webop") if e["action"] == "vm.create"
                and e["result"] == "ok"]
        assert [e["status"] for e in mine[-2:]] == [202, 200]  # accepted, then finished
        assert mine[-1]["params"]["operation"] == op["id"]
        assert mine[-1]["target"] == f"vm:{name}"
        # a viewer on the estate may follow it too
        assert lab_api.as_("viewer").get(f"/api/v1/operations/{op['id']}").status == 200
    finally:
        with contextlib.suppress(AssertionError):
            webop.post(f"/api/v1/vms/{name}/destroy")
        gone = webop.call("DELETE", f"/api/v1/vms/{name}")
        assert gone.status in (200, 404), gone.body
