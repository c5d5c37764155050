"""The REST API of a real `virtfleet serve` (on test-driver hypervisors, over --listen on
loopback): who may do what where, what is refused and how, and that every write is audited.
The same cases against real QEMU guests are in tests/integration/test_api.py."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from lxml import etree

from virtfleet.controller.openapi import document
from virtfleet.fleet.access import hash_secret
from virtfleet.inventory.store import Store

from .api_callers import add_callers
from .apiclient import Api
from .cli import run, running_controller
from .nodes import FIXTURES, refused_port
from .selfsigned import self_signed


def _node(tmp: Path, group: str, n: int) -> str:
    """two-vms.xml with its domains renamed for `group`: GROUP01 running, GROUP02 shut off,
    GROUP03 paused; and a network."""
    doc = etree.parse(str(FIXTURES / "two-vms.xml"))
    names = {"vm1.example.com": "01", "centos.template": "02", "vm2.example.com": "03"}
    for dom in doc.getroot().iter("domain"):
        name, uuid = dom.find("name"), dom.find("uuid")
        assert name is not None and uuid is not None and name.text and uuid.text
        name.text = f"{group}{names[name.text]}"
        uuid.text = f"{n:08d}" + uuid.text[8:]
    # and the `default` network of with-networks.xml, so network lists have something to keep
    net = etree.parse(str(FIXTURES / "with-networks.xml")).getroot().find("network")
    assert net is not None
    doc.getroot().find("memory").addnext(net)  # type: ignore[union-attr]
    path = tmp / f"hv-{group}.xml"
    doc.write(str(path))
    return f"test://{path}"


@dataclass
class Served:
    db: Path
    api: Api  # no token: .as_(token)
    tokens: dict[str, str]  # user -> token
    controller_token: str

    def audit(self, **query: str) -> list[dict[str, Any]]:
        q = "&".join(f"{k}={v}" for k, v in query.items())
        got = self.api.as_(self.tokens["root"]).get(f"/api/v1/audit?{q}")
        assert got.status == 200, got.body
        return list(got.body)

    def state(self, vm: str) -> str:
        """The VM's state, asked of its hypervisor now (not the controller's view)."""
        got = self.api.as_(self.tokens["root"]).get(f"/api/v1/vms/{vm}")
        assert got.status == 200, got.body
        return str(got.body["state"])


def _token(db: Path, user: str) -> str:
    r = run(db, "token", "create", user, "--description", "test")
    assert r.code == 0, r.err
    return r.out.strip()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("api")
    fleet = {"sites": [{"name": "oregon", "pods": [{"name": "or-pod1", "hypervisors": [
        {"name": "hv-web", "uri": _node(tmp, "web", 1), "groups": ["web"]},
        {"name": "hv-db", "uri": _node(tmp, "db", 2), "groups": ["db"]}]}]}]}
    (tmp / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    db = tmp / "store.db"
    assert run(db, "apply", "-f", str(tmp / "fleet.yaml")).code == 0
    add_callers(db)
    tokens = {u: _token(db, u) for u in ("root", "viewer", "webop")}
    port = refused_port()
    with running_controller(db, "--listen", f"127.0.0.1:{port}"):
        with Store(f"sqlite:///{db}") as store:
            rec = store.controller()
        assert rec is not None
        yield Served(db, Api("127.0.0.1", port), tokens, rec.token)


def _denied(s: Served, before: int, action: str, status: int) -> dict[str, Any]:
    """The one audit entry a refused write left."""
    new = s.audit()[before:]
    mine = [e for e in new if e["via"] == "api"]
    assert len(mine) == 1, mine
    [entry] = mine
    assert entry["action"] == action and entry["status"] == status, entry
    assert entry["result"] == "denied", entry
    return entry


# ------------------------------------------------------------------ tokens


def test_nothing_is_answered_without_a_good_token(served: Served) -> None:
    before = len(served.audit())
    for api in (served.api, served.api.as_("nonsense"), served.api.as_("vf_" + "0" * 12 + "_"
                                                                        + "A" * 43)):
        got = api.get("/api/v1/vms")
        assert got.status == 401 and got.body["error"] == "unauthorized"
        assert got.headers["www-authenticate"].startswith("Bearer")
        # not even whether a path exists
        assert api.get("/api/v1/no-such-thing").status == 401
    got = served.api.post("/api/v1/vms/web02/start")
    assert got.status == 401
    entry = _denied(served, before, "vm.start", 401)
    assert entry["actor"] == "-" and entry["target"] == "vm:web02"
    assert served.state("web02") == "shut off"


def test_the_controllers_own_token_does_not_work_beyond_the_socket(served: Served) -> None:
    assert served.api.as_(served.controller_token).get("/api/v1/vms").status == 401
    assert served.api.as_(served.controller_token).get("/v1/vms").status == 404


def test_a_revoked_token_or_a_disabled_user_stops_at_once(served: Served) -> None:
    assert run(served.db, "user", "add", "temp").code == 0
    assert run(served.db, "grant", "add", "temp", "viewer", "--scope", "all").code == 0
    token = _token(served.db, "temp")
    me = served.api.as_(token)
    assert me.get("/api/v1/whoami").body["user"] == "temp"
    token_id = token.split("_")[1]
    assert run(served.db, "token", "revoke", token_id).code == 0
    assert me.get("/api/v1/whoami").status == 401  # the very next call

    second = served.api.as_(_token(served.db, "temp"))
    assert second.get("/api/v1/vms").status == 200
    root = served.api.as_(served.tokens["root"])
    assert root.post("/api/v1/users/temp/disable").status == 200
    assert second.get("/api/v1/vms").status == 401


# ------------------------------------------------------------------ roles and scopes


def test_a_viewer_cannot_start_a_vm(served: Served) -> None:
    viewer = served.api.as_(served.tokens["viewer"])
    assert {v["name"] for v in viewer.get("/api/v1/vms").body["items"]} >= {"web02", "db02"}
    before = len(served.audit())
    got = viewer.post("/api/v1/vms/web02/start")
    assert got.status == 403 and got.body["permission"] == "vm.lifecycle", got.body
    assert "viewer lacks vm.lifecycle" in got.body["message"]
    assert served.state("web02") == "shut off"
    entry = _denied(served, before, "vm.start", 403)
    assert entry["actor"] == "viewer" and entry["target"] == "vm:web02"


def test_an_operator_of_group_web_restarts_web_vms_and_not_db_vms(served: Served) -> None:
    webop = served.api.as_(served.tokens["webop"])
    listed = webop.get("/api/v1/vms").body
    assert {v["name"] for v in listed["items"]} == {"web01", "web02", "web03"}
    assert webop.get("/api/v1/vms/db01").status == 403

    assert served.state("web01") == "running"
    got = webop.post("/api/v1/vms/web01/reboot")
    assert got.status == 200, got.body
    before = len(served.audit())
    got = webop.post("/api/v1/vms/db01/reboot")
    assert got.status == 403 and got.body["target"] == "vm:db01", got.body
    _denied(served, before, "vm.reboot", 403)
    got = webop.post("/api/v1/vms/db02/start")
    assert got.status == 403 and served.state("db02") == "shut off"

    ok = [e for e in served.audit(user="webop") if e["action"] == "vm.reboot"
          and e["result"] == "ok"]
    assert [e["target"] for e in ok] == ["vm:web01"]


# ------------------------------------------------------------------ bad input


GOOD = {"name": "new1", "memory": "64M", "vcpus": 1, "pod": "or-pod1", "app": "web"}


Case = tuple[str, str, str, Any, int, str, str]


def refused_writes(web: str, db: str, pod: str) -> list[Case]:
    """Writes that must be refused, with nothing changed and an audit entry each: (who,
    method, path, body or raw bytes, status, the field or permission named, action). `web`
    and `db` are VMs of those groups; `pod` is where a create would go. Who: `` (no token),
    `expired`, `viewer` (viewer on all), `webop` (operator on group:web)."""
    good = {"name": "new1", "memory": "64M", "vcpus": 1, "pod": pod, "app": "web"}
    oversized = json.dumps({**good, "owner": "a" * 100_000}).encode()
    return [
        ("", "POST", "/api/v1/vms", good, 401, "", "vm.create"),
        ("expired", "POST", f"/api/v1/vms/{web}/start", None, 401, "", "vm.start"),
        ("webop", "POST", "/api/v1/vms", {**good, "app": "db"}, 403, "vm.create",
         "vm.create"),
        ("webop", "POST", f"/api/v1/vms/{db}/destroy", None, 403, "vm.lifecycle",
         "vm.destroy"),
        ("viewer", "POST", f"/api/v1/vms/{web}/destroy", None, 403, "vm.lifecycle",
         "vm.destroy"),
        ("viewer", "DELETE", f"/api/v1/vms/{web}", None, 403, "vm.delete", "vm.undefine"),
        ("webop", "POST", "/api/v1/tokens", {"user": "webop"}, 403, "user.manage",
         "token.create"),
        ("webop", "POST", "/api/v1/grants", {"user": "webop", "role": "admin",
                                             "scope": "all"}, 403, "user.manage", "grant.add"),
        ("webop", "POST", "/api/v1/vms", {**good, "host": "hv-db"}, 422, "host", "vm.create"),
        ("webop", "POST", "/api/v1/vms", {**good, "disks": [{"size": "1G",
                                                               "path": "/etc/shadow"}]},
         422, "disks[0].path", "vm.create"),
        ("webop", "POST", "/api/v1/vms", oversized, 413, "body", "vm.create"),
        ("webop", "POST", f"/api/v1/vms/{web}/shutdown", {"timeout": 1, "frobnicate": True},
         422, "frobnicate", "vm.shutdown"),
        ("webop", "POST", f"/api/v1/vms/{web}/destroy?hots=hv-db", None, 400, "hots",
         "vm.destroy"),
        ("webop", "POST", "/api/v1/vms", b'{"name": "x", ', 422, "body", "vm.create"),
        ("webop", "POST", "/api/v1/vms", {**good, "vcpus": 0}, 422, "vcpus", "vm.create"),
        ("webop", "POST", "/api/v1/vms/bad%20name!/start", None, 400, "name", "vm.start"),
    ]


def expired_token(db: Path) -> str:
    """A token of `viewer` that expired yesterday."""
    with Store(f"sqlite:///{db}") as store:
        past = datetime.now(UTC) - timedelta(days=2)
        store.add_token("viewer", "00000000dead", hash_secret("B" * 43), past,
                        expires_at=past + timedelta(days=1))
    return "vf_00000000dead_" + "B" * 43


def try_refused(api: Api, tokens: dict[str, str], case: Case,
                audit: Callable[[], list[dict[str, Any]]]) -> None:
    """Send one refused write; check its answer and its one audit entry."""
    who, method, path, body, status, named, action = case
    before = len(audit())
    caller = api.as_(tokens.get(who))
    got = (caller.call(method, path, raw=body) if isinstance(body, bytes)
           else caller.call(method, path, body))
    assert got.status == status, (case, got.body)
    assert "\n" not in got.body["message"]
    if status == 403:
        assert got.body["permission"] == named
    elif named:
        assert got.body["field"] == named, got.body
    new = [e for e in audit()[before:] if e["via"] == "api"]
    assert len(new) == 1, (case, new)
    [entry] = new
    assert (entry["action"], entry["status"], entry["result"]) == (action, status, "denied")
    assert entry["actor"] == ("-" if who in ("", "expired") else who)


CASES = refused_writes("web02", "db01", "or-pod1")


@pytest.mark.parametrize("case", CASES,
                         ids=[f"{c[4]}-{c[5] or c[0] or 'no-token'}-{c[2].split('/')[-1]}"
                              for c in CASES])
def test_a_bad_or_unauthorised_write_is_refused_audited_and_changes_nothing(
        served: Served, case: Case) -> None:
    if "expired" not in served.tokens:
        served.tokens["expired"] = expired_token(served.db)
    listed = served.api.as_(served.tokens["root"]).get("/api/v1/vms").body["items"]
    try_refused(served.api, served.tokens, case, served.audit)
    assert served.api.as_(served.tokens["root"]).get("/api/v1/vms").body["items"] == listed


def test_secrets_in_a_refused_body_are_masked_in_the_audit_log(served: Served) -> None:
    before = len(served.audit())
    got = served.api.as_(served.tokens["viewer"]).post(
        "/api/v1/vms", {**GOOD, "graphics_password": "hunter2"})
    assert got.status == 403
    entry = _denied(served, before, "vm.create", 403)
    assert entry["params"]["body"]["graphics_password"] == "***"
    assert "hunter2" not in json.dumps(served.audit())


# ------------------------------------------------------------------ lists, the document


def test_lists_are_paged_and_filtered_from_the_view(served: Served) -> None:
    viewer = served.api.as_(served.tokens["viewer"])
    page = viewer.get("/api/v1/vms?limit=4&offset=0").body
    assert page["total"] == 6 and len(page["items"]) == 4 and page["next"] == 4
    rest = viewer.get("/api/v1/vms?limit=4&offset=4").body
    assert rest["next"] is None and len(rest["items"]) == 2
    names = [v["name"] for v in page["items"] + rest["items"]]
    assert len(set(names)) == 6
    assert [v["name"] for v in viewer.get("/api/v1/vms?group=db&state=paused").body[
        "items"]] == ["db03"]
    assert [v["name"] for v in viewer.get("/api/v1/vms?name=web0*&host=hv-web").body[
        "items"]] == ["web01", "web02", "web03"]
    bad = viewer.get("/api/v1/vms?state=sleeping")
    assert bad.status == 400 and bad.body["field"] == "state"
    assert viewer.get("/api/v1/vms?pod=nope").status == 404
    low = viewer.get("/api/v1/vms?limit=0")
    assert low.status == 422
    # the same shape as before, in the CLI's words: not pydantic's "Input should be ..."
    assert low.body == {"error": "invalid-input", "field": "limit",
                        "message": "must be at least 1",
                        "errors": [{"field": "limit", "rule": "must be at least 1"}]}, low.body


def test_the_served_document_is_the_one_in_the_repository(served: Served) -> None:
    served_doc = served.api.as_(served.tokens["viewer"]).get("/api/v1/openapi.json").body
    assert served_doc == document()
    kept = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
    assert served_doc == json.loads(kept.read_text()), (
        "docs/openapi.json differs from the API served: run `make openapi` and commit it")


# ------------------------------------------------------------------ where it listens


def test_beyond_loopback_only_with_tls(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    r = run(db, "serve", "--listen", "0.0.0.0:8443", timeout=60)
    assert r.code == 2 and "--listen" in r.err and "--tls-cert" in r.err, r.err
    r = run(db, "serve", "--tls-cert", "/etc/hostname", timeout=60)
    assert r.code == 2 and "--tls-cert" in r.err


def test_tls_listener_serves_https_only(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    key.chmod(0o644)
    db = tmp_path / "store.db"
    r = run(db, "serve", "--listen", "127.0.0.1:1", "--tls-cert", str(cert), "--tls-key",
            str(key), timeout=60)
    assert r.code == 2 and "--tls-key" in r.err and "chmod 600" in r.err, r.err
    key.chmod(0o600)
    assert run(db, "user", "add", "u").code == 0
    assert run(db, "grant", "add", "u", "viewer", "--scope", "all").code == 0
    token = _token(db, "u")
    port = refused_port()
    with running_controller(db, "--listen", f"127.0.0.1:{port}", "--tls-cert", str(cert),
                            "--tls-key", str(key)):
        tls = ssl.create_default_context(cafile=str(cert))
        got = Api("127.0.0.1", port, token, tls=tls).get("/api/v1/whoami")
        assert got.status == 200 and got.body["user"] == "u"
        with pytest.raises((ConnectionError, OSError)):
            Api("127.0.0.1", port, token, timeout=10).get("/api/v1/whoami")


def test_a_scoped_caller_sees_only_its_hosts_everywhere(served: Served) -> None:
    webop, root = served.api.as_(served.tokens["webop"]), served.api.as_(served.tokens["root"])
    assert [h["name"] for h in webop.get("/api/v1/hosts").body["items"]] == ["hv-web"]
    assert {h["name"] for h in root.get("/api/v1/hosts").body["items"]} == {"hv-web", "hv-db"}
    got = webop.get("/api/v1/hosts/hv-db")
    assert got.status == 403 and got.body["permission"] == "host.read"
    assert webop.get("/api/v1/hosts/hv-web").body["groups"] == ["web"]
    nets = root.get("/api/v1/networks").body["items"]
    assert {n["host"] for n in nets} == {"hv-web", "hv-db"}  # the test driver's `default`
    for path in ("/api/v1/networks", "/api/v1/pools", "/api/v1/templates"):
        got = webop.get(path)
        assert got.status == 200, (path, got.body)
        assert {i["host"] for i in got.body["items"]} <= {"hv-web"}, path
    assert webop.get("/api/v1/audit").status == 403  # admins on `all` only


def test_events_and_metrics_take_the_apis_tokens_and_scopes(served: Served) -> None:
    viewer = served.api.as_(served.tokens["viewer"])
    assert served.api.get("/metrics").status == 401
    got = viewer.get("/metrics")
    assert got.status == 200 and "virtfleet_" in got.body
    root, webop = served.api.as_(served.tokens["root"]), served.api.as_(served.tokens["webop"])
    assert root.post("/api/v1/vms/db01/suspend").status == 200  # an event of group db
    assert root.post("/api/v1/vms/db01/resume").status == 200
    everything = root.get("/api/v1/events?follow=false")
    assert everything.status == 200 and '"vm": "db01"' in everything.body
    mine = webop.get("/api/v1/events?follow=false")
    assert mine.status == 200 and '"vm": "db01"' not in mine.body


def test_the_api_places_with_the_controllers_policy(tmp_path: Path) -> None:
    # serve --cpu-ratio reaches the API's scheduler, not only the controller's own moves.
    fleet = {"sites": [{"name": "oregon", "pods": [{"name": "or-pod1", "hypervisors": [
        {"name": "hv-web", "uri": _node(tmp_path, "web", 1)}]}]}]}
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    db = tmp_path / "store.db"
    assert run(db, "apply", "-f", str(tmp_path / "fleet.yaml")).code == 0
    assert run(db, "user", "add", "root").code == 0
    assert run(db, "grant", "add", "root", "admin", "--scope", "all").code == 0
    token = _token(db, "root")
    fits = {}
    for ratio in ("1", "4"):
        port = refused_port()
        with running_controller(db, "--listen", f"127.0.0.1:{port}", "--cpu-ratio", ratio):
            got = Api("127.0.0.1", port).as_(token).get(
                "/api/v1/plan/headroom?vcpus=1&memory=1M")
            assert got.status == 200, got.body
            fits[ratio] = got.body["fits"]
    assert 0 < fits["1"] < fits["4"], fits
