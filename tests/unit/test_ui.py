"""The web console of a real `virtfleet serve` (test-driver hypervisors, --listen on loopback),
over plain HTTP without a browser: sign-in, sessions and sign-out, CSRF, who sees and may do
what, escaping, and that every write is audited. The browser's side (htmx, the events stream,
screenshots) is tests/integration/test_ui.py."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from lxml import etree

from virtfleet.controller.openapi import document
from virtfleet.inventory.records import InstallPlan
from virtfleet.inventory.store import Store
from virtfleet.xml.domain import TEMPLATE_ROLE, FleetFacts

from .api_callers import add_callers
from .apiclient import Api
from .cli import run, running_controller, serve_log
from .nodes import FIXTURES, refused_port
from .uiclient import Browserless, Page

SCRIPT_VM = "<script>alert(1)"  # libvirt refuses '/' in a name, so no closing tag
HTMX_SHA256 = "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"  # 2.0.11
# @xterm/xterm 6.0.0, lib/xterm.js (static/README.md)
XTERM_SHA256 = "14903579ff54664cd72f8e8699e6961a6272c21863ec1c3b118cdc8af5d4a972"


def _node(tmp: Path, group: str, n: int) -> str:
    """two-vms.xml renamed for `group`: GROUP01 running, GROUP02 shut off (for db, a sealed
    template: virtfleet's metadata says role=template), and (web only) the paused one named
    like a script."""
    doc = etree.parse(str(FIXTURES / "two-vms.xml"))
    names = {"vm1.example.com": f"{group}01", "centos.template": f"{group}02",
             "vm2.example.com": SCRIPT_VM if group == "web" else f"{group}03"}
    for dom in doc.getroot().iter("domain"):
        name, uuid = dom.find("name"), dom.find("uuid")
        assert name is not None and uuid is not None and name.text and uuid.text
        name.text = names[name.text]
        uuid.text = f"{n:08d}" + uuid.text[8:]
        if name.text == "web01":  # a VNC and a SPICE display, where nothing listens
            devices = etree.SubElement(dom, "devices")
            for kind, port in (("vnc", "5977"), ("spice", "5978")):
                etree.SubElement(devices, "graphics", type=kind, port=port, listen="127.0.0.1")
        if name.text == "db02":
            facts = FleetFacts()
            facts.role = TEMPLATE_ROLE
            uuid.addnext(etree.fromstring(f"<metadata>{facts.to_xml()}</metadata>"))
    path = tmp / f"hv-{group}.xml"
    doc.write(str(path))
    return f"test://{path}"


@dataclass
class Console:
    db: Path
    port: int
    tokens: dict[str, str]

    def browser(self, user: str | None = None) -> Browserless:
        b = Browserless(self.port)
        if user is not None:
            got = b.sign_in(user, self.tokens[user])
            assert got.status == 303, got.text
        return b

    def audit(self) -> list[dict[str, Any]]:
        got = Api("127.0.0.1", self.port, self.tokens["root"]).get("/api/v1/audit")
        assert got.status == 200, got.body
        return list(got.body)

    def state(self, vm: str) -> str:
        got = Api("127.0.0.1", self.port, self.tokens["root"]).get(f"/api/v1/vms/{vm}")
        assert got.status == 200, got.body
        return str(got.body["state"])


def _token(db: Path, user: str) -> str:
    r = run(db, "token", "create", user)
    assert r.code == 0, r.err
    return r.out.strip()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    tmp = tmp_path_factory.mktemp("ui")
    fleet = {"sites": [{"name": "oregon", "pods": [{"name": "or-pod1", "hypervisors": [
        {"name": "hv-web", "uri": _node(tmp, "web", 1), "groups": ["web"]},
        {"name": "hv-db", "uri": _node(tmp, "db", 2), "groups": ["db"]}]}]}]}
    (tmp / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    db = tmp / "store.db"
    assert run(db, "apply", "-f", str(tmp / "fleet.yaml")).code == 0
    add_callers(db)
    tokens = {u: _token(db, u) for u in ("root", "viewer", "webop")}
    port = refused_port()
    # a stats pass a second, so the VM page's sparklines have samples soon
    with running_controller(db, "--listen", f"127.0.0.1:{port}", "--stats-interval", "1"):
        yield Console(db, port, tokens)


def _ui_entries(c: Console, before: int) -> list[dict[str, Any]]:
    return [e for e in c.audit()[before:] if e["via"] == "ui"]


# ------------------------------------------------------------------ signing in and out


def test_pages_send_a_stranger_to_sign_in(console: Console) -> None:
    b = console.browser()
    for path in ("/ui/estate", "/ui/vms", "/ui/vms/web01", "/ui/installs", "/ui/audit"):
        got = b.get(path)
        assert got.status == 303, (path, got.status)
        assert got.headers["location"].startswith("/ui/login?next=")
    assert b.get("/ui/events").status == 401


def test_the_installs_table_polls_and_a_poll_without_a_session_goes_to_sign_in(
        console: Console) -> None:
    # boot serve writes installs to the store, where the controller has no events of them:
    # the table reads itself again, and a poll after sign-out moves the whole page
    page = console.browser("root").get("/ui/installs")
    assert page.status == 200
    [table] = etree.HTML(page.text).xpath('//table[@id="installs"]')
    assert (table.get("hx-get"), table.get("hx-trigger"), table.get("hx-select")) == (
        "/ui/installs", "every 5s", "#installs")
    got = console.browser().get("/ui/installs", headers={"HX-Request": "true"})
    assert got.status == 204 and got.headers["hx-redirect"] == "/ui/login?next=/ui/installs"


def test_the_installs_table_has_boot_statuss_columns_and_words(console: Console) -> None:
    with Store(f"sqlite:///{console.db}") as store:
        store.plan_installs([InstallPlan("hv-web", "52:54:00:0f:0f:02", "oregon", "or-pod1",
                                         "rocky9")], datetime(2026, 12, 3, 9, 0, tzinfo=UTC))
    page = console.browser("root").get("/ui/installs")
    [table] = etree.HTML(page.text).xpath('//table[@id="installs"]')
    rows = [[c.xpath("string()") for c in tr.xpath("th|td")] for tr in table.xpath("tr")]
    assert rows[0] == ["Host", "MAC", "Site", "Pod", "State", "Since (UTC)", "Check",
                       "Refused", "429s", "Error"]
    assert ["hv-web", "52:54:00:0f:0f:02", "oregon", "or-pod1", "planned",
            "2026-12-03 09:00:00", "-", "0", "0", "-"] in rows[1:]


def test_sign_in_sets_a_strict_httponly_session_cookie(console: Console) -> None:
    b = Browserless(console.port)
    got = b.sign_in("viewer", console.tokens["viewer"])
    assert got.status == 303 and got.headers["location"] == "/ui/vms"
    [line] = [c for c in got.set_cookies if c.startswith("vf_session=")]
    attrs = {a.strip().lower() for a in line.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/ui"} <= attrs, line
    # the token is not the cookie: the cookie is a session of its own
    assert console.tokens["viewer"] not in line
    assert b.get("/ui/vms").status == 200


@pytest.mark.parametrize("user, token", [("viewer", "nonsense"), ("root", "viewer"),
                                         ("viewer", "")])
def test_a_bad_user_or_token_is_refused_with_one_message(console: Console, user: str,
                                                         token: str) -> None:
    b = Browserless(console.port)
    real = console.tokens.get(token, token)  # ("root", "viewer"): viewer's token as root
    got = b.sign_in(user, real)
    assert got.status == 401
    assert "Bad user or token" in got.text
    assert "vf_session" not in b.cookies
    assert b.get("/ui/vms").status == 303


def test_the_sign_in_form_needs_its_own_csrf_token(console: Console) -> None:
    """A third site cannot post the sign-in form (login CSRF): without the form's cookie, or
    with another token, nothing is signed in and the attempt is audited."""
    before = len(console.audit())
    b = Browserless(console.port)
    got = b.post("/ui/login", {"csrf": "x", "user": "viewer", "token": console.tokens["viewer"]})
    assert got.status == 403 and "vf_session" not in b.cookies
    b.get("/ui/login")  # a real form's cookie, but the attacker's token
    got = b.post("/ui/login", {"csrf": "y" * 43, "user": "viewer",
                               "token": console.tokens["viewer"]})
    assert got.status == 403 and "vf_session" not in b.cookies
    entries = _ui_entries(console, before)
    assert [(e["action"], e["result"]) for e in entries] == [("ui.signin", "denied")] * 2
    assert all(console.tokens["viewer"] not in str(e) for e in entries)


def test_a_cookie_is_refused_after_sign_out(console: Console) -> None:
    b = console.browser("webop")
    page = b.get("/ui/vms")
    csrf, old = page.csrf(), dict(b.cookies)
    got = b.post("/ui/logout", {"csrf": csrf})
    assert got.status == 303 and got.headers["location"] == "/ui/login"
    # the old cookie, replayed, is dead on the server: pages, actions, events
    thief = Browserless(console.port, cookies=old)
    assert thief.get("/ui/vms").status == 303
    got = thief.post("/ui/vms/web02/start?host=hv-web", headers={"X-CSRF-Token": csrf})
    assert got.status == 401
    assert thief.get("/ui/events").status == 401
    assert console.state("web02") == "shut off"


def test_sign_out_needs_the_csrf_token(console: Console) -> None:
    b = console.browser("viewer")
    assert b.post("/ui/logout", {"csrf": "wrong"}).status == 403
    assert b.get("/ui/vms").status == 200  # still signed in


def test_a_revoked_token_ends_its_sessions(console: Console) -> None:
    token = _token(console.db, "viewer")
    b = Browserless(console.port)
    assert b.sign_in("viewer", token).status == 303
    assert b.get("/ui/vms").status == 200
    assert run(console.db, "token", "revoke", token.split("_")[1]).code == 0
    assert b.get("/ui/vms").status == 303


# ------------------------------------------------------------------ who sees and does what


def test_a_viewer_sees_no_buttons_and_a_forged_post_is_403_and_audited(
        console: Console) -> None:
    b = console.browser("viewer")
    page = b.get("/ui/vms")
    assert page.status == 200 and "web01" in page.text
    assert "hx-post=" not in page.text and "data-verb" not in page.text
    assert "#snapshot-form" not in page.text and "#migrate-form" not in page.text
    detail = b.get("/ui/vms/web01?host=hv-web")
    assert detail.status == 200 and "data-verb" not in detail.text
    before = len(console.audit())
    got = b.post("/ui/vms/web01/destroy?host=hv-web", headers={"X-CSRF-Token": page.csrf()})
    assert got.status == 403 and "vm.lifecycle" in got.text
    assert console.state("web01") == "running"
    [entry] = _ui_entries(console, before)
    assert (entry["actor"], entry["action"], entry["result"], entry["status"]) == (
        "viewer", "vm.destroy", "denied", 403)


def test_an_operator_of_web_sees_and_acts_on_web_vms_only(console: Console) -> None:
    b = console.browser("webop")
    page = b.get("/ui/vms?size=500")
    rows = {m.group(1): m.group(2) for m in re.finditer(
        r'<tr data-vm="([^"]+)">(.*?)</tr>', page.text, re.S)}
    assert "data-verb" in rows["hv-web/web01"]
    # snapshot and migrate: links from the row to the forms on the VM's page
    assert 'href="/ui/vms/web01?host=hv-web#snapshot-form"' in rows["hv-web/web01"]
    assert 'href="/ui/vms/web01?host=hv-web#migrate-form"' in rows["hv-web/web01"]
    assert not [k for k in rows if k.startswith("hv-db/")]  # its grant is on group web only

    def shown(row: str) -> set[str]:
        buttons = re.findall(r'<button[^>]*>', rows[row])
        return {verb for b in buttons if not re.search(r'"\s+hidden', b)
                for verb in re.findall(r'data-verb="(\w+)"', b)}

    # each button in the states its verb applies to
    assert shown("hv-web/web01") == {"shutdown", "reboot", "destroy"}  # running
    assert shown("hv-web/web02") == {"start"}  # shut off
    before = len(console.audit())
    got = b.post("/ui/vms/db01/destroy?host=hv-db", headers={"X-CSRF-Token": page.csrf()})
    assert got.status == 403 and "vm:db01" in got.text
    assert console.state("db01") == "running"
    [entry] = _ui_entries(console, before)
    assert entry["target"] == "vm:db01" and entry["result"] == "denied"


def test_a_templates_row_offers_its_clone_and_no_power_buttons(console: Console) -> None:
    """Regression: the table could not tell a template from a VM, so a template's row showed
    `start` (which the service refuses) and links to snapshot and migrate forms its page has
    not; clone, a template's one action, was on its page only."""
    listed = Api("127.0.0.1", console.port, console.tokens["root"]).get("/api/v1/vms").body
    assert {v["name"] for v in listed["items"] if v["template"]} == {"db02"}
    b = console.browser("root")
    page = b.get("/ui/vms?size=500")
    rows = {m.group(1): m.group(2) for m in re.finditer(
        r'<tr data-vm="([^"]+)">(.*?)</tr>', page.text, re.S)}
    tpl, vm = rows["hv-db/db02"], rows["hv-web/web02"]  # both shut off
    assert '<span class="tag">template</span>' in tpl and "template</span>" not in vm
    assert "data-verb" not in tpl and 'data-verb="start"' in vm
    assert "#snapshot-form" not in tpl and "#migrate-form" not in tpl
    assert 'href="/ui/vms/db02?host=hv-db#clone-form"' in tpl and "#clone-form" not in vm
    assert 'id="clone-form"' in b.get("/ui/vms/db02?host=hv-db").text
    # a viewer may not clone: no link
    viewer = console.browser("viewer").get("/ui/vms?size=500&q=db02").text
    assert "template</span>" in viewer and "#clone-form" not in viewer


def test_a_forged_csrf_token_is_refused_and_nothing_happens(console: Console) -> None:
    b = console.browser("webop")
    csrf = b.get("/ui/vms").csrf()
    before = len(console.audit())
    for headers in ({}, {"X-CSRF-Token": "forged"}, {"X-CSRF-Token": csrf + "x"},
                    {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}):
        got = b.post("/ui/vms/web02/start?host=hv-web", headers=headers)
        assert got.status == 403 and "CSRF" in got.text, headers
    # a form field is no way around it for actions either: a cross-site form carries only
    # what the attacker knows
    got = b.post("/ui/vms/web02/start?host=hv-web", {"csrf": "forged"})
    assert got.status == 403
    assert console.state("web02") == "shut off"
    entries = _ui_entries(console, before)
    assert len(entries) == 5 and {e["result"] for e in entries} == {"denied"}


def test_an_operator_starts_a_vm_through_the_same_service_and_it_is_audited(
        console: Console) -> None:
    b = console.browser("webop")
    csrf = b.get("/ui/vms").csrf()
    before = len(console.audit())
    got = b.post("/ui/vms/web02/start?host=hv-web", headers={"X-CSRF-Token": csrf})
    assert got.status == 200 and "web02 on hv-web: started" in got.text, got.text
    assert console.state("web02") == "running"
    got = b.post("/ui/vms/web02/start?host=hv-web", headers={"X-CSRF-Token": csrf})
    assert got.status == 409 or got.status >= 400  # already running: the service says why
    got = b.post("/ui/vms/web02/destroy?host=hv-web", headers={"X-CSRF-Token": csrf})
    assert got.status == 200 and console.state("web02") == "shut off"
    entries = _ui_entries(console, before)
    assert [(e["actor"], e["action"], e["target"], e["result"]) for e in entries] == [
        ("webop", "vm.start", "vm:web02", "ok"), ("webop", "vm.start", "vm:web02", "failed"),
        ("webop", "vm.destroy", "vm:web02", "ok")]


def test_an_unknown_action_is_404(console: Console) -> None:
    b = console.browser("root")
    csrf = b.get("/ui/vms").csrf()
    got = b.post("/ui/vms/web01/undefine?host=hv-web", headers={"X-CSRF-Token": csrf})
    assert got.status == 404
    assert console.state("web01") == "running"


# ------------------------------------------------------------------ what pages show


def test_a_vm_named_like_a_script_is_text(console: Console) -> None:
    b = console.browser("root")
    page = b.get("/ui/vms?q=script")
    assert page.status == 200
    assert "&lt;script&gt;alert(1)" in page.text
    assert "<script>alert" not in page.text
    assert ">1 VM, 1–1<" in page.text  # one VM, not "1 VMs"


def test_the_vm_table_filters_sorts_and_pages_on_the_server(console: Console) -> None:
    b = console.browser("root")
    got = b.get("/ui/vms?state=running&sort=name&desc=1")
    names = re.findall(r'<tr data-vm="[^/]+/([^"]+)">', got.text)
    assert names == sorted(names, reverse=True) and "web01" in names and "db01" in names
    assert "db02" not in names  # shut off
    got = b.get("/ui/vms?q=web*&size=50")
    assert set(re.findall(r'<tr data-vm="[^/]+/([^"]+)">', got.text)) == {"web01", "web02"}
    # htmx asks for the table alone
    part = b.get("/ui/vms?q=db", headers={"HX-Request": "true"})
    assert part.text.startswith('<div id="vmtable">') and "<html" not in part.text


@pytest.mark.parametrize("query, field", [("size=7", "size"), ("sort=uuid", "sort"),
                                          ("page=0", "page"), ("page=x", "page"),
                                          ("state=dancing", "state"), ("stat=running", "stat")])
def test_a_bad_table_query_is_400_naming_the_field(console: Console, query: str,
                                                    field: str) -> None:
    got = console.browser("root").get(f"/ui/vms?{query}")
    assert got.status == 400 and field in got.text, got.text


def test_the_estate_map_has_a_cell_per_hypervisor(console: Console) -> None:
    got = console.browser("viewer").get("/ui/estate")
    assert got.status == 200
    cells = re.findall(r'<a class="h h-(\w+)" href="/ui/vms\?host=([\w-]+)"', got.text)
    assert sorted(cells) == [("ok", "hv-db"), ("ok", "hv-web")]


def test_the_vm_page_shows_facts_and_a_viewer_cannot_read_what_it_lacks(
        console: Console) -> None:
    got = console.browser("root").get("/ui/vms/web01?host=hv-web")
    assert got.status == 200 and 'id="vm-name">web01<' in got.text and "uuid" in got.text
    assert console.browser("root").get("/ui/vms/nosuch").status == 404


def test_the_audit_page_is_for_admins(console: Console) -> None:
    assert console.browser("root").get("/ui/audit").status == 200
    got = console.browser("viewer").get("/ui/audit")
    assert got.status == 403 and "audit.read" in got.text


def test_pages_forbid_framing_and_foreign_scripts(console: Console) -> None:
    got = console.browser("root").get("/ui/estate")
    csp = got.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert got.headers["x-frame-options"] == "DENY"


def test_static_files_are_the_vendored_ones_and_nothing_else(console: Console) -> None:
    b = Browserless(console.port)
    got = b.get("/ui/static/htmx.min.js")
    assert got.status == 200 and got.headers["content-type"].startswith("text/javascript")
    assert hashlib.sha256(got.text.encode()).hexdigest() == HTMX_SHA256
    got = b.get("/ui/static/xterm.js")
    assert got.status == 200 and hashlib.sha256(got.text.encode()).hexdigest() == XTERM_SHA256
    for name in ("README.md", "..%2F__init__.py", "htmx.LICENSE", "xterm.LICENSE",
                 "../pages.py"):
        assert b.get(f"/ui/static/{name}").status == 404, name


def test_a_static_file_is_kept_a_year_only_under_its_builds_url(console: Console) -> None:
    """Pages link /ui/static/NAME?v=ETAG; screen.js is imported by vnc.js and spice.js
    without one, so a browser kept a year an old build's copy after an upgrade."""
    b = console.browser("webop")
    page = b.get("/ui/vms/web01/console/vnc?host=hv-web").text
    [linked] = re.findall(r'src="(/ui/static/vnc\.js\?v=[0-9a-f]+)"', page)
    assert "immutable" in b.get(linked).headers["cache-control"]
    for bare in ("/ui/static/screen.js", "/ui/static/vnc.js?v=old"):
        got = b.get(bare)
        assert got.status == 200 and got.headers["cache-control"] == "no-cache", bare
    assert 'from "./screen.js"' in b.get(linked).text


def test_only_the_serial_console_lets_xterm_make_its_styles(console: Console) -> None:
    b = console.browser("webop")
    serial = b.get("/ui/vms/web01/console/serial?host=hv-web")
    assert serial.status == 200 and "xterm.js" in serial.text
    csp = serial.headers["content-security-policy"]
    assert "style-src 'self' 'unsafe-inline'" in csp and "script-src 'self';" in csp
    for path in ("/ui/vms/web01/console/vnc?host=hv-web", "/ui/vms/web01?host=hv-web"):
        got = b.get(path)
        assert got.status == 200 and "'unsafe-inline'" not in got.headers[
            "content-security-policy"], path


def test_the_console_is_not_in_the_api_document() -> None:
    paths = document()["paths"]
    assert not [p for p in paths if p.startswith("/ui")]


def test_the_capacity_page_sums_headroom_per_pod(console: Console) -> None:
    b = console.browser("viewer")
    got = b.get("/ui/capacity?vcpus=2&memory=4G")
    assert got.status == 200, got.text
    assert re.search(r'id="fits">\d+ more VMs of 2 vCPUs and 4G fit', got.text)
    assert "<td>oregon</td><td>or-pod1</td>" in got.text
    for query, field in (("vcpus=0", "vcpus"), ("memory=lots", "memory"),
                         ("pod=a%20b", "pod"), ("cpus=2", "cpus")):
        bad = b.get(f"/ui/capacity?{query}")
        assert bad.status == 400 and field in bad.text, (query, bad.text)


def _bars(html: str, chart: str) -> dict[str, tuple[int, str]]:
    """A capacity chart's bars: label -> (how many fit, what runs out first)."""
    m = re.search(rf'<svg class="bars" id="chart-{chart}"(.*?)</svg>', html, re.S)
    assert m, html
    return {label: (int(fits), first) for label, fits, first in re.findall(
        r'<g data-bar="([^"]+)">.*?<text class="fits"[^>]*>(\d+) · ([\w ]+) first',
        m.group(1), re.S)}


def test_the_capacity_page_charts_what_fits_per_pod_and_per_group(console: Console) -> None:
    """One headroom answer, as the API's, drawn per pod and per group at once."""
    got = console.browser("viewer").get("/ui/capacity?vcpus=2&memory=4G")
    assert got.status == 200, got.text
    api = Api("127.0.0.1", console.port, console.tokens["root"]).get(
        "/api/v1/plan/headroom?vcpus=2&memory=4G")
    assert api.status == 200, api.body
    per_host = {h["host"]: (h["fits"], h["bound_by"]) for h in api.body["hosts"]}
    total = int(re.findall(r'id="fits">(\d+) more VMs', got.text)[0])
    assert total == sum(f for f, _ in per_host.values()) > 0
    # one host per group: what runs out first there is what bounds that host
    assert _bars(got.text, "groups") == {"web": per_host["hv-web"], "db": per_host["hv-db"]}
    # the pod: the resource with fewer VMs' worth free over both hosts together
    cpu = sum(h["free_vcpus"] // 2 for h in api.body["hosts"])
    mem = sum(h["free_memory_mib"] // 4096 for h in api.body["hosts"])
    first = "cpu and memory" if cpu == mem else "cpu" if cpu < mem else "memory"
    assert _bars(got.text, "pods") == {"oregon/or-pod1": (total, first)}
    assert re.search(r'<rect class="b-[a-z-]+" x="150.0" y="\d+" width="[\d.]+" height="12"/>',
                     got.text)
    # the page's group filter narrows the charts to that group's hosts
    web = console.browser("viewer").get("/ui/capacity?vcpus=2&memory=4G&group=web")
    assert set(_bars(web.text, "groups")) == {"web"}


def test_capacity_charts_stack_each_bars_room_by_what_bounds_its_hosts() -> None:
    from virtfleet.controller.ui.capacity import LABEL_WIDTH, NO_GROUP, charts
    from virtfleet.placement.headroom import HostFit

    def fit(host: str, pod: str, groups: tuple[str, ...], fits: int, vcpus: int, mib: int,
            bound: str) -> HostFit:
        return HostFit(host, "s1", pod, groups, fits, vcpus, mib, bound)

    hosts = [fit("a", "p1", ("web",), 4, 8, 100 * 1024, "cpu"),  # 4 by CPU, 25 by memory
             fit("b", "p1", ("web", "db"), 2, 60, 8 * 1024, "memory"),  # 30 by CPU, 2
             fit("c", "p2", (), 3, 6, 12 * 1024, "cpu and memory"),
             fit("d", "p2", ("db",), 0, 64, 512 * 1024, "unavailable")]
    pods, groups = charts(hosts, 2, 4096)
    assert [(b.label, b.fits, b.hosts, b.unavailable) for b in pods.bars] == [
        ("s1/p1", 6, 2, 0), ("s1/p2", 3, 2, 1)]
    [p1, p2] = pods.bars
    assert [(s.bound, s.fits) for s in p1.segments] == [("cpu", 4), ("memory", 2)]
    # the widest bar spans the chart; the others in proportion, parts end to end
    span = pods.width - LABEL_WIDTH - (pods.width - pods.number_x + 6)
    assert p1.segments[0].x == LABEL_WIDTH
    assert sum(s.width for s in p1.segments) == pytest.approx(span, abs=0.2)
    assert p1.segments[1].x == pytest.approx(LABEL_WIDTH + p1.segments[0].width)
    assert p2.segments[0].width == pytest.approx(span / 2, abs=0.1)
    assert (p1.first, p2.first) == ("memory", "cpu and memory")  # 4+30 by CPU, 25+2 memory
    assert {b.label: b.fits for b in groups.bars} == {"web": 6, "db": 2, NO_GROUP: 3}
    assert "1 unavailable" in {b.label: b for b in groups.bars}["db"].title
    empty, _ = charts([], 2, 4096)
    assert empty.bars == () and empty.height == empty.row


def test_live_pages_stream_only_what_comes_after_them(console: Console) -> None:
    """A page's events stream starts after the last event the page was rendered after: the
    ring's backlog (thousands of host events on a large estate) is not replayed onto it."""
    b = console.browser("root")
    for path in ("/ui/estate", "/ui/vms", "/ui/vms/web01?host=hv-web"):
        m = re.search(r'data-events="/ui/events\?since=([0-9a-f]{8}-\d+)"', b.get(path).text)
        assert m, path
        got = b.get(f"/ui/events?since={m.group(1)}&follow=false")
        assert got.status == 200 and "event: host.up" not in got.text
    assert "event: host.up" in b.get("/ui/events?follow=false").text  # the ring has them
    assert "data-events" in b.get("/ui/audit").text and "live.js" not in b.get("/ui/audit").text


def _samples(b: Browserless, path: str, at_least: int) -> Page:
    """The sparklines fragment once it holds `at_least` stats passes (one a second)."""
    deadline = time.monotonic() + 120
    while True:
        got = b.get(path)
        assert got.status == 200, got.text
        m = re.search(r'data-samples="(\d+)"', got.text)
        assert m, got.text
        if int(m.group(1)) >= at_least or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def test_the_vm_page_draws_sparklines_of_its_last_stats_passes(console: Console) -> None:
    b = console.browser("viewer")
    got = _samples(b, "/ui/vms/web01/metrics?host=hv-web", 3)
    assert int(re.findall(r'data-samples="(\d+)"', got.text)[0]) >= 3, got.text
    # htmx polls the fragment every stats pass
    assert 'hx-get="/ui/vms/web01/metrics?host=hv-web" hx-trigger="every 1s"' in got.text
    # the test driver reports a domain's state only: the running strip has a point per
    # pass, the figures say they were not read
    charts = dict(re.findall(r'<tr data-chart="(\w+)">(.*?)</tr>', got.text, re.S))
    [points] = re.findall(r'<polyline class="l-up" points="([^"]+)"', charts["up"])
    assert len(points.split()) >= 3 and points.split()[-1].endswith(",1.0"), points
    for key in ("cpu", "memory", "disk", "net"):
        assert "<svg" not in charts[key] and "not read by its hypervisor" in charts[key]
    # a shut-off VM's strip ends at the bottom (earlier tests may have started it a while)
    off = _samples(b, "/ui/vms/web02/metrics?host=hv-web", 3)
    [points] = re.findall(r'<polyline class="l-up" points="([^"]+)"', off.text)
    assert points.split()[-1].endswith(",27.0"), points
    # the page carries the same fragment
    page = b.get("/ui/vms/web01?host=hv-web")
    assert '<div id="metrics"' in page.text and '<svg class="spark"' in page.text


def test_sparklines_need_vm_read_on_the_vm(console: Console) -> None:
    """Refusals are one line in the box (which then stops polling); an ended session sends
    the polling page to sign-in rather than drawing the sign-in form inside the box."""
    webop = console.browser("webop")
    got = webop.get("/ui/vms/db01/metrics?host=hv-db")
    assert got.status == 403 and 'id="metrics-error">' in got.text and "vm:db01" in got.text
    assert "hx-trigger" not in got.text and "<svg" not in got.text
    got = webop.get("/ui/vms/nosuch/metrics")
    assert got.status == 404 and 'id="metrics-error">' in got.text
    stranger = console.browser()
    assert stranger.get("/ui/vms/web01/metrics?host=hv-web").status == 303
    got = stranger.get("/ui/vms/web01/metrics?host=hv-web", headers={"HX-Request": "true"})
    assert got.status == 204
    assert got.headers["hx-redirect"] == (
        "/ui/login?next=/ui/vms/web01%3Fhost%3Dhv-web")


# ------------------------------------------------------------------ console tickets


def _ticket(b: Browserless, vm: str = "web01", csrf: str | None = None,
            host: str = "hv-web") -> Page:
    token = csrf if csrf is not None else b.get("/ui/vms").csrf()
    return b.post(f"/ui/vms/{vm}/console/serial?host={host}", headers={"X-CSRF-Token": token})


def _connect(c: Console, b: Browserless, ticket: str, vm: str = "web01",
             kind: str = "serial") -> int:
    """The websocket handshake's answer: 101 accepted, else the HTTP status refusing it."""
    import websocket

    cookie = "; ".join(f"{k}={v}" for k, v in b.cookies.items())
    try:
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{c.port}/ui/vms/{vm}/console/{kind}/ws?ticket={ticket}",
            cookie=cookie, timeout=60)
    except websocket.WebSocketBadStatusException as exc:
        return int(exc.status_code)
    ws.close()
    return 101


def test_an_operator_gets_a_one_time_console_ticket_and_it_is_audited(
        console: Console) -> None:
    b = console.browser("webop")
    page = b.get("/ui/vms/web01?host=hv-web")
    assert 'id="serial-console"' in page.text
    before = len(console.audit())
    got = _ticket(b)
    assert got.status == 200, got.text
    body = json.loads(got.text)
    assert body["url"] == "/ui/vms/web01/console/serial/ws" and len(body["ticket"]) >= 40
    [entry] = _ui_entries(console, before)
    assert (entry["actor"], entry["action"], entry["target"], entry["result"]) == (
        "webop", "vm.console.serial", "vm:web01@hv-web", "ok")
    assert body["ticket"] not in json.dumps(entry)  # the secret is not on the audit log
    # redeemed once by the websocket connect (the test driver has no console to open, so
    # the relay then closes; the ticket is gone all the same), refused the second time
    assert _connect(console, b, body["ticket"]) == 101
    assert _connect(console, b, body["ticket"]) == 403


def test_a_console_ticket_is_refused_to_a_viewer_a_forged_csrf_and_an_outsider(
        console: Console) -> None:
    viewer = console.browser("viewer")
    assert 'id="serial-console"' not in viewer.get("/ui/vms/web01?host=hv-web").text
    before = len(console.audit())
    got = _ticket(viewer)
    assert got.status == 403 and "vm.lifecycle" in got.text
    [entry] = _ui_entries(console, before)
    assert (entry["actor"], entry["action"], entry["result"]) == (
        "viewer", "vm.console.serial", "denied")
    webop = console.browser("webop")
    assert _ticket(webop, csrf="forged").status == 403
    assert _ticket(webop, vm="db01", host="hv-db").status == 403  # webop has group web only
    assert _ticket(webop, vm="nosuchvm").status == 404


def test_the_console_websocket_wants_this_sessions_fresh_ticket(console: Console) -> None:
    webop = console.browser("webop")
    other = console.browser("root")
    assert _connect(console, webop, "made-up") == 403
    assert _connect(console, webop, "") == 403
    stolen = json.loads(_ticket(webop).text)["ticket"]
    assert _connect(console, other, stolen) == 403  # another session's cookie
    assert _connect(console, webop, stolen) == 403  # and the misdirected try used it up
    mine = json.loads(_ticket(webop).text)["ticket"]
    assert _connect(console, webop, mine, vm="web02") == 403  # another VM's
    anon = Browserless(console.port)
    fresh = json.loads(_ticket(webop).text)["ticket"]
    before = len(console.audit())
    assert _connect(console, anon, fresh) == 403  # no session at all
    [entry] = _ui_entries(console, before)
    assert entry["status"] == 403  # as the browser was answered, not the 401 of its reason


def test_the_vnc_page_asks_for_its_own_ticket_and_serves_only_novnc_modules(
        console: Console) -> None:
    webop = console.browser("webop")
    page = webop.get("/ui/vms/web01/console/vnc?host=hv-web")
    assert page.status == 200 and 'id="screen"' in page.text and "vnc.js" in page.text
    token = page.csrf()
    got = webop.post("/ui/vms/web01/console/vnc?host=hv-web", headers={"X-CSRF-Token": token})
    assert got.status == 200 and json.loads(got.text)["url"] == "/ui/vms/web01/console/vnc/ws"
    vnc = json.loads(got.text)["ticket"]
    assert _connect(console, webop, vnc, kind="serial") == 403  # a vnc ticket is not serial's
    assert webop.post("/ui/vms/web01/console/rdp?host=hv-web",
                      headers={"X-CSRF-Token": token}).status == 404
    assert webop.get("/ui/vms/web01/console/nope?host=hv-web").status == 404
    # a VM without that kind of display: its one line on the page, no ticket, audited as such
    before = len(console.audit())
    got = webop.post("/ui/vms/web02/console/vnc?host=hv-web", headers={"X-CSRF-Token": token})
    assert got.status == 404 and json.loads(got.text)["error"] == (
        "hv-web/web02 has no VNC display (no <graphics type='vnc'>)")
    [entry] = _ui_entries(console, before)
    assert (entry["action"], entry["status"]) == ("vm.console.vnc", 404)
    rfb = webop.get("/ui/novnc/core/rfb.js")
    assert rfb.status == 200 and rfb.headers["content-type"].startswith("text/javascript")
    for path in ("/ui/novnc/vnc.html", "/ui/novnc/../../../etc/passwd",
                 "/ui/novnc/core/../../../../etc/passwd", "/ui/novnc/%2e%2e/%2e%2e/etc/passwd",
                 "/ui/novnc/vendor/pako/README.md", "/ui/novnc/"):
        assert webop.get(path).status == 404, path


def test_the_spice_page_opens_each_channel_with_its_ticket_and_serves_only_spice_html5(
        console: Console) -> None:
    """spice-html5 opens a websocket per SPICE channel, each with the page's ticket and the
    'binary' subprotocol (a browser drops a connection whose answer names none)."""
    import websocket

    webop = console.browser("webop")
    page = webop.get("/ui/vms/web01/console/spice?host=hv-web")
    assert page.status == 200 and 'id="screen"' in page.text and "spice.js" in page.text
    got = webop.post("/ui/vms/web01/console/spice?host=hv-web",
                     headers={"X-CSRF-Token": page.csrf()})
    assert got.status == 200 and json.loads(got.text)["url"] == "/ui/vms/web01/console/spice/ws"
    ticket = json.loads(got.text)["ticket"]
    cookie = "; ".join(f"{k}={v}" for k, v in webop.cookies.items())
    url = f"ws://127.0.0.1:{console.port}/ui/vms/web01/console/spice/ws?ticket={ticket}"
    for _channel in range(8):  # main, display, inputs, cursor, playback, ...: CONNECTS
        ws = websocket.create_connection(url, cookie=cookie, subprotocols=["binary"],
                                         timeout=60)
        assert ws.getsubprotocol() == "binary"
        ws.close()
    assert _connect(console, webop, ticket, kind="spice") == 403  # its connects are used up
    main = webop.get("/ui/spice-html5/main.js")
    assert main.status == 200 and main.headers["content-type"].startswith("text/javascript")
    assert "SpiceMainConn" in main.text
    assert webop.get("/ui/spice-html5/thirdparty/jsbn.js").status == 200
    for path in ("/ui/spice-html5/spice.html", "/ui/spice-html5/../../../etc/passwd",
                 "/ui/spice-html5/%2e%2e/%2e%2e/etc/passwd", "/ui/spice-html5/spice.css",
                 "/ui/spice-html5/thirdparty/browser-es-module-loader/dist/"
                 "browser-es-module-loader.js", "/ui/spice-html5/", "/ui/vnc/main.js"):
        assert webop.get(path).status == 404, path
    # a viewer gets no ticket for it either
    viewer = console.browser("viewer")
    assert viewer.post("/ui/vms/web01/console/spice?host=hv-web",
                       headers={"X-CSRF-Token": viewer.get("/ui/vms").csrf()}).status == 403

def test_a_browser_leaving_a_screen_is_no_error_in_the_log(console: Console) -> None:
    """Regression: each websocket a browser dropped (a closed SPICE page drops one per
    channel) logged a 78-line 'Exception in ASGI application' (ClientDisconnected)."""
    import socket
    import threading

    import websocket

    display = socket.create_server(("127.0.0.1", 5977))  # web01's VNC port in the fixture
    accepted: list[socket.socket] = []

    def serve() -> None:
        conn, _ = display.accept()
        accepted.append(conn)
        conn.sendall(b"RFB 003.008\n")  # a display that answers, then waits

    threading.Thread(target=serve, daemon=True).start()
    try:
        webop = console.browser("webop")
        page = webop.get("/ui/vms/web01/console/vnc?host=hv-web")
        got = webop.post("/ui/vms/web01/console/vnc?host=hv-web",
                         headers={"X-CSRF-Token": page.csrf()})
        ticket = json.loads(got.text)["ticket"]
        cookie = "; ".join(f"{k}={v}" for k, v in webop.cookies.items())
        logged = serve_log(console.db).stat().st_size
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{console.port}/ui/vms/web01/console/vnc/ws?ticket={ticket}",
            cookie=cookie, timeout=60)
        assert ws.recv() == b"RFB 003.008\n"  # relayed from the display
        ws.sock.shutdown(socket.SHUT_RDWR)  # the browser goes: no close frame
        ws.sock.close()
        deadline = time.monotonic() + 30
        while accepted and accepted[0].recv(1) != b"" and time.monotonic() < deadline:
            pass  # until the relay has closed its side to the display
        time.sleep(1)
        with serve_log(console.db).open() as log:
            log.seek(logged)
            tail = log.read()
        assert "Traceback" not in tail and "Exception in ASGI" not in tail, tail
    finally:
        display.close()
        for conn in accepted:
            conn.close()


# ------------------------------------------------------------------ snapshot, clone, migrate


@pytest.mark.parametrize("action, form, message", [
    ("snapshot", {"name": SCRIPT_VM}, "name: '<script>alert(1)' is not a valid name"),
    ("snapshot", {"name": "a" * 300}, "name: must be at most"),
    ("snapshot", {"name": "ok", "description": "x" * 1001},
     "description: must be at most 1000 characters long"),
    ("snapshot", {"name": "ok", "host": "hv-db"}, "host: unknown field"),
    ("clone", {"count": "2"}, "name: missing: this field is required"),
    ("clone", {"name": "web", "count": "0"}, "count: must be at least 1"),
    ("clone", {"name": "web", "count": "two"}, "count: must be a whole number"),
    ("clone", {"name": "web", "count": "10001"}, "count: must be at most 10000"),
    ("clone", {"name": "web/../x"}, "name: 'web/../x' is not a valid name"),
    ("migrate", {"mode": "sideways"}, "mode: must be 'auto', 'live' or 'offline'"),
    ("migrate", {"to": "hv web"}, "to: 'hv web' is not a valid name"),
])
def test_a_bad_action_form_is_one_line_naming_the_field(action: str, form: dict[str, str],
                                                        message: str) -> None:
    from virtfleet.controller.ui.vmacts import parse_form
    from virtfleet.errors import InvalidInput

    with pytest.raises(InvalidInput) as err:
        parse_form(action, {"csrf": "x", **form})
    assert err.value.message.startswith(message), err.value.message
    assert "\n" not in err.value.message


def test_an_action_form_reads_as_the_apis_body() -> None:
    from virtfleet.controller.rest.templates import CloneBody
    from virtfleet.controller.rest.vms import MigrateBody, SnapshotBody
    from virtfleet.controller.ui.vmacts import parse_form

    # blank fields are the API's defaults, as keys left out of its JSON body
    assert parse_form("snapshot", {"csrf": "x", "name": " ", "description": ""}) == \
        SnapshotBody()
    assert parse_form("clone", {"name": "web", "count": "3"}) == CloneBody(name="web", count=3)
    assert parse_form("migrate", {"to": "", "mode": "auto"}) == MigrateBody()
    assert parse_form("migrate", {"to": "hv2", "mode": "live"}) == MigrateBody(to="hv2",
                                                                              mode="live")


def _snapshots(c: Console, vm: str) -> list[str]:
    got = Api("127.0.0.1", c.port, c.tokens["root"]).get(f"/api/v1/vms/{vm}/snapshots")
    assert got.status == 200, got.body
    return [s["name"] for s in got.body]


def test_an_operator_takes_a_snapshot_from_the_vm_page(console: Console) -> None:
    b = console.browser("webop")
    page = b.get("/ui/vms/web02?host=hv-web")
    assert 'id="snapshot-form"' in page.text and 'id="migrate-form"' in page.text
    assert 'id="clone-form"' not in page.text  # web02 is a VM, not a template
    before = len(console.audit())
    got = b.post("/ui/vms/web02/snapshot?host=hv-web",
                 {"name": "before-deploy", "description": "release 41"},
                 headers={"X-CSRF-Token": page.csrf()})
    assert got.status == 200 and "snapshot before-deploy of web02 taken" in got.text, got.text
    # the page's snapshot table comes along, for htmx to put in place of the old one
    assert 'id="snapshots" hx-swap-oob="true"' in got.text
    assert 'data-snapshot="before-deploy"' in got.text
    # its creation time as a time, not libvirt's seconds since the epoch
    [row] = [r for r in etree.HTML(got.text).xpath('//tr[@data-snapshot="before-deploy"]')]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row.xpath("string(td[2])")), \
        row.xpath("string(td[2])")
    assert _snapshots(console, "web02") == ["before-deploy"]
    assert 'data-snapshot="before-deploy"' in b.get("/ui/vms/web02?host=hv-web").text
    [entry] = _ui_entries(console, before)
    assert (entry["actor"], entry["action"], entry["target"], entry["result"]) == (
        "webop", "snapshot.create", "vm:web02", "ok")


def test_a_script_snapshot_name_is_refused_as_text_and_nothing_is_made(
        console: Console) -> None:
    b = console.browser("root")
    csrf = b.get("/ui/vms").csrf()
    got = b.post("/ui/vms/db02/snapshot?host=hv-db", {"name": "<script>alert(2)"},
                 headers={"X-CSRF-Token": csrf})
    assert got.status == 400, got.text
    assert "name: &#39;&lt;script&gt;alert(2)&#39; is not a valid name" in got.text
    assert "<script>alert" not in got.text
    assert _snapshots(console, "db02") == []


def test_a_viewer_sees_no_action_forms_and_each_forged_post_is_403(console: Console) -> None:
    b = console.browser("viewer")
    page = b.get("/ui/vms/web01?host=hv-web")
    assert page.status == 200
    for form in ("snapshot-form", "migrate-form", "clone-form"):
        assert f'id="{form}"' not in page.text
    ops_before = Api("127.0.0.1", console.port, console.tokens["root"]).get(
        "/api/v1/operations").body["operations"]
    before = len(console.audit())
    for action, form, permission in (("snapshot", {"name": "x"}, "vm.snapshot"),
                                     ("migrate", {}, "vm.migrate"),
                                     ("clone", {"name": "x"}, "vm.create")):
        got = b.post(f"/ui/vms/web01/{action}?host=hv-web", form,
                     headers={"X-CSRF-Token": page.csrf()})
        assert got.status == 403 and permission in got.text, (action, got.text)
    assert _snapshots(console, "web01") == []
    assert Api("127.0.0.1", console.port, console.tokens["root"]).get(
        "/api/v1/operations").body["operations"] == ops_before
    entries = _ui_entries(console, before)
    assert [(e["actor"], e["action"], e["result"], e["status"]) for e in entries] == [
        ("viewer", "snapshot.create", "denied", 403), ("viewer", "vm.migrate", "denied", 403),
        ("viewer", "vm.clone", "denied", 403)]


def _current(c: Console, vm: str) -> str:
    got = Api("127.0.0.1", c.port, c.tokens["root"]).get(f"/api/v1/vms/{vm}/snapshots")
    [current] = [s["name"] for s in got.body if s["current"]]
    return str(current)


def _snapshot_buttons(html: str) -> dict[str, set[str]]:
    """Each snapshot row's buttons: snapshot -> {revert, delete, delete-children}."""
    return {name: set(re.findall(r'data-snapshot-act="([\w-]+)"', row)) for name, row in
            re.findall(r'<tr data-snapshot="([^"]+)">(.*?)</tr>', html, re.S)}


def test_an_admin_reverts_to_and_deletes_a_snapshot_from_the_vm_page(
        console: Console) -> None:
    b = console.browser("root")
    csrf = b.get("/ui/vms").csrf()
    for name in ("first", "second"):
        got = b.post("/ui/vms/db03/snapshot?host=hv-db", {"name": name},
                     headers={"X-CSRF-Token": csrf})
        assert got.status == 200, got.text
    # the table that came back with the last one has the buttons already; second is first's
    # child, so first may also go with it
    assert _snapshot_buttons(got.text) == {"first": {"revert", "delete", "delete-children"},
                                           "second": {"revert", "delete"}}
    page = b.get("/ui/vms/db03?host=hv-db")
    assert _snapshot_buttons(page.text)["first"] == {"revert", "delete", "delete-children"}
    # each asks first, saying what is lost
    assert 'hx-post="/ui/vms/db03/snapshots/revert?host=hv-db"' in page.text
    assert 'hx-confirm="Revert db03 to snapshot first? What the VM holds now' in page.text
    assert 'hx-confirm="Delete snapshot first of db03? The snapshot is lost' in page.text
    assert 'hx-confirm="Delete snapshot first of db03 and the 1 snapshot below it?' in page.text
    assert _current(console, "db03") == "second"
    before = len(console.audit())
    got = b.post("/ui/vms/db03/snapshots/revert?host=hv-db", {"snapshot": "first"},
                 headers={"X-CSRF-Token": csrf})
    assert got.status == 200 and "db03 reverted to snapshot first" in got.text, got.text
    assert 'id="snapshots" hx-swap-oob="true"' in got.text
    assert _current(console, "db03") == "first"  # was second, the last taken
    got = b.post("/ui/vms/db03/snapshots/delete?host=hv-db", {"snapshot": "second"},
                 headers={"X-CSRF-Token": csrf})
    assert got.status == 200 and "snapshot second of db03 deleted" in got.text, got.text
    assert _snapshot_buttons(got.text) == {"first": {"revert", "delete"}}
    assert _snapshots(console, "db03") == ["first"]
    entries = _ui_entries(console, before)
    assert [(e["actor"], e["action"], e["target"], e["result"]) for e in entries] == [
        ("root", "snapshot.revert", "vm:db03", "ok"), ("root", "snapshot.delete", "vm:db03", "ok")]
    assert entries[0]["params"]["form"] == {"snapshot": "first"}
    # bad input: one line, as text, and nothing changes
    for form, status, message in (
            ({"snapshot": "nosuch"}, 404, "no snapshot &#39;nosuch&#39;"),
            ({"snapshot": "<script>alert(4)"}, 404,
             "no snapshot &#39;&lt;script&gt;alert(4)&#39;"),
            ({}, 400, "snapshot: missing: this field is required"),
            ({"snapshot": "first", "children": "1"}, 400, "children: unknown field"),
            ({"snapshot": "first", "children": "maybe"}, 400, "children: must be true or false")):
        for verb in ("revert", "delete"):
            if "children" in form and (verb == "revert") != ("unknown" in message):
                continue  # children: a field of delete only
            got = b.post(f"/ui/vms/db03/snapshots/{verb}?host=hv-db", form,
                         headers={"X-CSRF-Token": csrf})
            assert got.status == status and message in got.text, (verb, form, got.text)
            assert "<script>alert" not in got.text
            [line] = re.findall(r'<p class="error" id="flash-msg">([^<]*)</p>', got.text)
    assert _snapshots(console, "db03") == ["first"]
    assert b.post("/ui/vms/db03/snapshots/delete?host=hv-db", {"snapshot": "first"},
                  headers={"X-CSRF-Token": csrf}).status == 200
    assert _snapshots(console, "db03") == []


def test_a_snapshot_is_deleted_with_the_snapshots_below_it(console: Console) -> None:
    b = console.browser("root")
    csrf = b.get("/ui/vms").csrf()
    for name in ("s1", "s2", "s3"):  # each taken while the one before is current: a chain
        got = b.post("/ui/vms/db03/snapshot?host=hv-db", {"name": name},
                     headers={"X-CSRF-Token": csrf})
        assert got.status == 200, got.text
    page = b.get("/ui/vms/db03?host=hv-db")
    assert _snapshot_buttons(page.text) == {"s1": {"revert", "delete", "delete-children"},
                                            "s2": {"revert", "delete", "delete-children"},
                                            "s3": {"revert", "delete"}}
    assert ">delete with 2 below</button>" in page.text
    [s2] = etree.HTML(page.text).xpath('//tr[@data-snapshot="s2"]')
    assert s2.xpath("string(td[4])") == "s1"  # its parent
    before = len(console.audit())
    got = b.post("/ui/vms/db03/snapshots/delete?host=hv-db",
                 {"snapshot": "s2", "children": "true"}, headers={"X-CSRF-Token": csrf})
    assert got.status == 200, got.text
    assert "snapshot s2 and the snapshots below it of db03 deleted" in got.text
    assert _snapshot_buttons(got.text) == {"s1": {"revert", "delete"}}
    assert _snapshots(console, "db03") == ["s1"]
    [entry] = _ui_entries(console, before)
    assert entry["action"] == "snapshot.delete" and entry["params"]["form"] == {
        "snapshot": "s2", "children": True}
    assert b.post("/ui/vms/db03/snapshots/delete?host=hv-db", {"snapshot": "s1"},
                  headers={"X-CSRF-Token": csrf}).status == 200
    assert _snapshots(console, "db03") == []


def test_snapshot_revert_and_delete_need_vm_snapshot_there(console: Console) -> None:
    root = console.browser("root")
    got = root.post("/ui/vms/db01/snapshot?host=hv-db", {"name": "keep"},
                    headers={"X-CSRF-Token": root.get("/ui/vms").csrf()})
    assert got.status == 200, got.text
    viewer = console.browser("viewer")
    page = viewer.get("/ui/vms/db01?host=hv-db")
    assert _snapshot_buttons(page.text) == {"keep": set()}  # listed, no buttons
    webop = console.browser("webop")
    before = len(console.audit())
    for verb in ("revert", "delete"):
        got = viewer.post(f"/ui/vms/db01/snapshots/{verb}?host=hv-db", {"snapshot": "keep"},
                          headers={"X-CSRF-Token": page.csrf()})
        assert got.status == 403 and "vm.snapshot" in got.text, got.text
        # an operator of group web, on a db VM: refused there
        got = webop.post(f"/ui/vms/db01/snapshots/{verb}?host=hv-db", {"snapshot": "keep"},
                         headers={"X-CSRF-Token": webop.get("/ui/vms").csrf()})
        assert got.status == 403 and "vm:db01" in got.text, got.text
        # and without the CSRF token, nobody
        got = root.post(f"/ui/vms/db01/snapshots/{verb}?host=hv-db", {"snapshot": "keep"})
        assert got.status == 403 and "CSRF" in got.text
    assert _snapshots(console, "db01") == ["keep"]
    entries = _ui_entries(console, before)
    assert [(e["actor"], e["action"], e["result"], e["status"]) for e in entries] == [
        ("viewer", "snapshot.revert", "denied", 403), ("webop", "snapshot.revert", "denied", 403),
        ("root", "snapshot.revert", "denied", 403),
        ("viewer", "snapshot.delete", "denied", 403), ("webop", "snapshot.delete", "denied", 403),
        ("root", "snapshot.delete", "denied", 403)]
    assert root.post("/ui/vms/db01/snapshots/delete?host=hv-db", {"snapshot": "keep"},
                     headers={"X-CSRF-Token": root.get("/ui/vms").csrf()}).status == 200


def test_an_action_without_the_csrf_token_is_refused(console: Console) -> None:
    b = console.browser("webop")
    for action in ("snapshot", "migrate", "clone"):
        got = b.post(f"/ui/vms/web01/{action}?host=hv-web", {"name": "x"})
        assert got.status == 403 and "CSRF" in got.text, action
    assert _snapshots(console, "web01") == []


def test_an_operator_of_web_may_not_migrate_to_a_db_host(console: Console) -> None:
    b = console.browser("webop")
    csrf = b.get("/ui/vms").csrf()
    got = b.post("/ui/vms/web01/migrate?host=hv-web", {"to": "hv-db"},
                 headers={"X-CSRF-Token": csrf})
    assert got.status == 403 and "vm.migrate" in got.text and "hv-db" in got.text, got.text


def test_a_clone_of_a_vm_that_is_no_template_is_refused_naming_it(console: Console) -> None:
    b = console.browser("root")
    csrf = b.get("/ui/vms").csrf()
    got = b.post("/ui/vms/web01/clone?host=hv-web", {"name": "webx", "count": "2"},
                 headers={"X-CSRF-Token": csrf})
    assert got.status == 400 and "template: &#39;web01&#39; is a VM, not a template" in \
        got.text, got.text


def test_a_migration_from_the_page_is_an_operation_on_the_operations_page(
        console: Console) -> None:
    """The same operation the API starts (here the test driver cannot migrate, so it fails:
    what counts is that it is an operation with an id, shown with its outcome)."""
    b = console.browser("root")
    csrf = b.get("/ui/vms").csrf()
    got = b.post("/ui/vms/db01/migrate?host=hv-db", {"to": "hv-web", "mode": "live"},
                 headers={"X-CSRF-Token": csrf})
    assert got.status == 202, got.text
    m = re.search(r'data-op="([0-9a-f]{32})"', got.text)
    assert m, got.text
    op = m.group(1)
    api = Api("127.0.0.1", console.port, console.tokens["root"])
    assert api.get(f"/api/v1/operations/{op}").body["kind"] == "vm.migrate"
    ops = b.get("/ui/operations")
    assert ops.status == 200 and f'id="op-{op}"' in ops.text
    # htmx (live.js, on an operation event) asks for the tables alone
    part = b.get("/ui/operations", headers={"HX-Request": "true"})
    assert part.text.startswith('<div id="ops">') and f'data-op="{op}"' in part.text
    # a viewer may read operations too, on the same terms as the API's
    assert f'id="op-{op}"' in console.browser("viewer").get("/ui/operations").text
    # the audit's entry of the request says what was answered: accepted, 202
    accepted = [e for e in console.audit() if e["detail"] == f"operation {op} accepted"]
    assert [(e["via"], e["action"], e["status"]) for e in accepted] == [
        ("ui", "vm.migrate", 202)], accepted
