"""The web console in a real browser (Debian's headless Chromium through Selenium) against a real
controller on the lab's libvirtd hypervisors with real QEMU guests.

Ground truth is the machine's, as in test_api.py: a guest that was shut down has no QEMU process
left; one a viewer or a forged request tried to touch still has the same one. Screenshots of each
page go to $VIRTFLEET_UI_SHOTS when it is set (docs/img/ is made that way).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from lxml import etree
from lxml.builder import E
from selenium.common.exceptions import (
    NoAlertPresentException,
    StaleElementReferenceException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.integration.browser import browser_missing, headless_chromium
from tests.integration.conftest import LabFixture
from tests.integration.test_api import qemu_pids
from tests.integration.test_snapshots import disk_domain
from tests.unit.apiclient import Api
from tests.unit.cli import run, running_controller
from tests.unit.nodes import refused_port
from tests.unit.uiclient import Browserless
from virtfleet.inventory.records import InstallPlan
from virtfleet.inventory.store import Store

pytestmark = pytest.mark.integration

SCRIPT_VM = "<script>alert(1)"  # libvirt refuses '/' in a name: no closing tag
WAIT = 120.0  # seconds a page may take to show what a step expects (a guest's ACPI shutdown)


@dataclass
class LabUI:
    db: Path
    port: int
    tokens: dict[str, str]
    web: str  # a running guest on a hypervisor of group web
    web_host: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def uuid(self, vm: str) -> str:
        got = Api("127.0.0.1", self.port, self.tokens["root"]).get(f"/api/v1/vms/{vm}")
        assert got.status == 200, got.body
        return str(got.body["uuid"])

    def audit(self) -> list[dict[str, Any]]:
        got = Api("127.0.0.1", self.port, self.tokens["root"]).get("/api/v1/audit")
        assert got.status == 200, got.body
        return list(got.body)


def _token(db: Path, user: str) -> str:
    r = run(db, "token", "create", user)
    assert r.code == 0, r.err
    return r.out.strip()


def _define_script_vm(uri: str, tmp: Path) -> None:
    """A shut-off VM whose name is markup, defined with virsh (never started)."""
    dom = E.domain(E.name(SCRIPT_VM), E.memory("65536", unit="KiB"), E.vcpu("1"),
                   E.os(E.type("hvm")), type="qemu")
    path = tmp / "script-vm.xml"
    path.write_bytes(etree.tostring(dom))
    subprocess.run(["virsh", "-c", uri, "define", str(path)], check=True,
                   capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def lab_ui(lab: LabFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabUI]:
    missing = browser_missing()
    if missing:
        pytest.skip(missing)
    tmp = tmp_path_factory.mktemp("lab-ui")
    web_host, db_host, _other = lab.hosts
    fleet = yaml.safe_load(lab.fleet_file.read_text())
    for pod in fleet["sites"][0]["pods"]:
        for hv in pod["hypervisors"]:
            hv["groups"] = ["db"] if hv["name"] == db_host.name else ["web"]
    (tmp / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    db = tmp / "store.db"
    assert run(db, "apply", "-f", str(tmp / "fleet.yaml")).code == 0
    guests = {g.host: g.name for g in lab.lab.guests(1, timeout=180)}
    _define_script_vm(web_host.uri, tmp)
    for user, role, scope in (("root", "admin", "all"), ("viewer", "viewer", "all"),
                              ("webop", "operator", "group:web")):
        assert run(db, "user", "add", user).code == 0
        assert run(db, "grant", "add", user, role, "--scope", scope).code == 0
    tokens = {u: _token(db, u) for u in ("root", "viewer", "webop")}
    port = refused_port()
    try:
        # The lab's hosts have 2 threads each and already run guests: the clone form's
        # clones need the overcommit an operator of such a pod would set.
        # A stats pass every 2 s: the VM page's sparklines have points within seconds.
        with running_controller(db, "--listen", f"127.0.0.1:{port}", "--cpu-ratio", "8",
                                "--stats-interval", "2"):
            yield LabUI(db, port, tokens, guests[web_host.name], web_host.name)
    finally:
        subprocess.run(["virsh", "-c", web_host.uri, "undefine", SCRIPT_VM],
                       capture_output=True, check=False, timeout=60)
        lab.lab.guests(0)


@pytest.fixture
def driver() -> Iterator[WebDriver]:
    with headless_chromium() as d:
        yield d


def _shot(driver: WebDriver, name: str) -> None:
    where = os.environ.get("VIRTFLEET_UI_SHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(where) / f"ui-{name}.png"))


def _sign_in(driver: WebDriver, ui: LabUI, user: str, shot: bool = False) -> None:
    driver.get(f"{ui.base}/ui/vms")
    WebDriverWait(driver, WAIT).until(ec.presence_of_element_located((By.ID, "token")))
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "token").send_keys(ui.tokens[user])
    if shot:
        _shot(driver, "login")
    driver.find_element(By.ID, "signin").click()
    WebDriverWait(driver, WAIT).until(ec.presence_of_element_located((By.ID, "vmtable")))
    # live.js has the events stream open: the badge says so
    WebDriverWait(driver, WAIT).until(
        lambda d: "on" in d.find_element(By.ID, "live").get_attribute("class"))


_ROWS = ("return Array.from(document.querySelectorAll('#vmtable tbody tr'))"
         ".map(r => r.getAttribute('data-vm'));")


def _wait(driver: WebDriver) -> WebDriverWait:
    """A wait that reads again when htmx swapped what it was reading."""
    return WebDriverWait(driver, WAIT, ignored_exceptions=(StaleElementReferenceException,))


def _search(driver: WebDriver, text: str) -> None:
    box = driver.find_element(By.ID, "q")
    box.clear()
    box.send_keys(text)
    _wait(driver).until(lambda d: [k.split("/", 1)[1] for k in d.execute_script(_ROWS)]
                        == [text])


def _row(driver: WebDriver, host: str, vm: str) -> Any:
    return next(r for r in driver.find_elements(By.CSS_SELECTOR, "#vmtable tbody tr")
                if r.get_attribute("data-vm") == f"{host}/{vm}")


def _post_from_page(driver: WebDriver, path: str, csrf: str | None) -> int:
    """A POST sent by script from the signed-in page (its cookie goes along): the status."""
    script = ("const [path, token, done] = arguments;"
              "const h = token === null ? {} : {'X-CSRF-Token': token};"
              "fetch(path, {method: 'POST', headers: h}).then(r => done(r.status));")
    status = driver.execute_async_script(script, path, csrf)
    return int(status)


def _csrf(driver: WebDriver) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, "form.logout input[name=csrf]")
               .get_attribute("value"))


def test_sign_in_find_a_vm_shut_it_down_and_see_it_by_event(lab_ui: LabUI,
                                                            driver: WebDriver) -> None:
    vm, host = lab_ui.web, lab_ui.web_host
    uuid = lab_ui.uuid(vm)
    [pid] = qemu_pids(uuid)
    _sign_in(driver, lab_ui, "webop", shot=True)
    _search(driver, vm)
    _shot(driver, "vms")
    cell = _row(driver, host, vm).find_element(By.CSS_SELECTOR, "[data-state]")
    assert cell.text == "running"
    driver.execute_script("window.vfNoReload = 1;")  # gone if the page were reloaded
    _row(driver, host, vm).find_element(By.CSS_SELECTOR, "button[data-verb=shutdown]").click()
    # The state cell changes by the events stream: its data-event is the event's id.
    _wait(driver).until(lambda d: _row(d, host, vm).find_element(
        By.CSS_SELECTOR, "[data-state]").text == "shut off")
    cell = _row(driver, host, vm).find_element(By.CSS_SELECTOR, "[data-state]")
    assert (cell.get_attribute("data-event") or "").count("-") == 1
    assert driver.execute_script("return window.vfNoReload;") == 1
    _wait(driver).until(lambda d: "shut off" in d.find_element(
        By.ID, "flash").text or "shut down" in d.find_element(By.ID, "flash").text)
    assert qemu_pids(uuid) == []  # the machine agrees: no QEMU left for it
    assert pid not in qemu_pids(uuid)

    # and back: start from the VM's own page, where the state follows the stream too
    driver.get(f"{lab_ui.base}/ui/vms/{vm}?host={host}")
    WebDriverWait(driver, WAIT).until(ec.presence_of_element_located((By.ID, "vm-state")))
    assert driver.find_element(By.ID, "vm-state").text == "shut off"
    driver.find_element(By.CSS_SELECTOR, "button[data-verb=start]").click()
    WebDriverWait(driver, WAIT).until(
        lambda d: d.find_element(By.ID, "vm-state").text == "running")
    assert len(qemu_pids(uuid)) == 1
    _shot(driver, "vm")
    actions = [(e["actor"], e["via"], e["action"], e["result"]) for e in lab_ui.audit()
               if e["target"] == f"vm:{vm}"]
    assert actions[-2:] == [("webop", "ui", "vm.shutdown", "ok"),
                            ("webop", "ui", "vm.start", "ok")]


def test_a_viewer_sees_no_buttons_and_a_forged_post_is_403(lab_ui: LabUI,
                                                          driver: WebDriver) -> None:
    vm, host = lab_ui.web, lab_ui.web_host
    uuid = lab_ui.uuid(vm)
    [pid] = qemu_pids(uuid)
    _sign_in(driver, lab_ui, "viewer")
    _search(driver, vm)
    assert driver.find_elements(By.CSS_SELECTOR, "button.act") == []
    assert _post_from_page(driver, f"/ui/vms/{vm}/destroy?host={host}", _csrf(driver)) == 403
    assert qemu_pids(uuid) == [pid]  # the same QEMU, untouched
    [entry] = [e for e in lab_ui.audit() if e["actor"] == "viewer" and e["via"] == "ui"
               and e["action"] == "vm.destroy"]
    assert entry["result"] == "denied" and entry["status"] == 403


def test_a_vm_named_like_a_script_is_shown_as_text(lab_ui: LabUI, driver: WebDriver) -> None:
    _sign_in(driver, lab_ui, "root")
    _search(driver, SCRIPT_VM)
    link = _row(driver, lab_ui.web_host, SCRIPT_VM).find_element(By.CSS_SELECTOR, "td.name a")
    assert link.text == SCRIPT_VM
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - reading it is the check
    # the rest of the page is still there: an unclosed <script> would have swallowed it
    assert driver.find_element(By.ID, "logout").is_displayed()


class _Attacker(BaseHTTPRequestHandler):
    """Another site (localhost, not 127.0.0.1): a page whose form posts to the console."""

    target = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        form = E.form(E.button("win a prize", id="go", type="submit"), method="post",
                      action=self.target)
        body = etree.tostring(E.html(E.body(form)), method="html")
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


def test_forged_requests_are_refused(lab_ui: LabUI, driver: WebDriver) -> None:
    vm, host = lab_ui.web, lab_ui.web_host
    uuid = lab_ui.uuid(vm)
    [pid] = qemu_pids(uuid)
    _sign_in(driver, lab_ui, "webop")
    path = f"/ui/vms/{vm}/destroy?host={host}"
    # from the console's own page, but without the session's token or with a wrong one
    assert _post_from_page(driver, path, None) == 403
    assert _post_from_page(driver, path, "forged") == 403
    # from another site, in the same signed-in browser: the Strict cookie is not even sent
    _Attacker.target = f"{lab_ui.base}{path}"
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        driver.get(f"http://localhost:{server.server_address[1]}/")
        driver.find_element(By.ID, "go").click()
        WebDriverWait(driver, WAIT).until(lambda d: "/ui/" in d.current_url)
        # refused as a stranger's: SameSite=Strict kept the session cookie home
        assert "not signed in" in driver.page_source
    finally:
        server.shutdown()
        server.server_close()
    time.sleep(1)  # a destroy, had it happened, is immediate
    assert qemu_pids(uuid) == [pid]


def test_a_cookie_is_refused_after_sign_out(lab_ui: LabUI, driver: WebDriver) -> None:
    _sign_in(driver, lab_ui, "viewer")
    cookie = driver.get_cookie("vf_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert driver.execute_script("return document.cookie;") == ""  # HttpOnly: not to scripts
    driver.find_element(By.ID, "logout").click()
    WebDriverWait(driver, WAIT).until(ec.presence_of_element_located((By.ID, "token")))
    thief = Browserless(lab_ui.port, cookies={"vf_session": cookie["value"]})
    assert thief.get("/ui/vms").status == 303
    assert thief.get("/ui/events").status == 401


def test_every_page_renders(lab_ui: LabUI, driver: WebDriver) -> None:
    """Estate, capacity, installs and audit as an admin sees them (and their screenshots)."""
    _sign_in(driver, lab_ui, "root")
    for name, marker in (("estate", "estate"), ("capacity?vcpus=1&memory=64M", "pods"),
                         ("installs", "installs"), ("audit", "audit")):
        driver.get(f"{lab_ui.base}/ui/{name}")
        WebDriverWait(driver, WAIT).until(ec.presence_of_element_located((By.ID, marker)))
        _shot(driver, name.split("?")[0])
    driver.get(f"{lab_ui.base}/ui/estate")
    cells = driver.find_elements(By.CSS_SELECTOR, "#estate a.h")
    assert len(cells) == 3 and all("h-ok" in c.get_attribute("class") for c in cells)
    # the capacity charts: the lab's pods, and its two groups (web on two hosts, db on one)
    driver.get(f"{lab_ui.base}/ui/capacity?vcpus=1&memory=64M")
    WebDriverWait(driver, WAIT).until(ec.presence_of_element_located((By.ID, "chart-groups")))
    groups = {g.get_attribute("data-bar") for g in driver.find_elements(
        By.CSS_SELECTOR, "#chart-groups g[data-bar]")}
    assert groups == {"web", "db"}
    assert driver.find_elements(By.CSS_SELECTOR, "#chart-pods g[data-bar] rect")


def test_the_installs_table_follows_the_store_without_a_reload(lab_ui: LabUI,
                                                                driver: WebDriver) -> None:
    """boot serve records installs in the store: a new one shows up in an open page."""
    _sign_in(driver, lab_ui, "root")
    driver.get(f"{lab_ui.base}/ui/installs")
    WebDriverWait(driver, WAIT).until(ec.presence_of_element_located((By.ID, "installs")))
    driver.execute_script("document.body.dataset.vfMark = 'same page';")
    with Store(f"sqlite:///{lab_ui.db}") as store:
        [rec] = store.hypervisors(host=lab_ui.web_host)
        store.plan_installs([InstallPlan(rec.name, "52:54:00:0f:0f:01", rec.site, rec.pod,
                                         "rocky9")], datetime.now(UTC))
    WebDriverWait(driver, 30).until(
        lambda d: "52:54:00:0f:0f:01" in d.find_element(By.ID, "installs").text)
    assert driver.execute_script("return document.body.dataset.vfMark;") == "same page"
    _shot(driver, "installs")  # with the install in it (test_every_page_renders': empty)


def test_a_running_guests_page_draws_its_figures_and_follows_them(
        lab_ui: LabUI, driver: WebDriver) -> None:
    """Real QEMU figures (CPU time, RSS, balloon) become sparklines, and htmx brings the next
    passes in without a reload."""
    _sign_in(driver, lab_ui, "viewer")
    driver.get(f"{lab_ui.base}/ui/vms/{lab_ui.web}?host={lab_ui.web_host}")
    WebDriverWait(driver, WAIT).until(ec.presence_of_element_located((By.ID, "metrics")))
    driver.execute_script("window.vfNoReload = 1;")
    first = int(driver.find_element(By.ID, "metrics").get_attribute("data-samples") or 0)

    def points(chart: str, line: str) -> int:
        found = driver.find_elements(
            By.CSS_SELECTOR, f"#metrics tr[data-chart={chart}] polyline.l-{line}")
        return max((len((p.get_attribute("points") or "").split()) for p in found), default=0)

    _wait(driver).until(lambda d: int(d.find_element(By.ID, "metrics").get_attribute(
        "data-samples") or 0) >= first + 3 and points("cpu", "cpu") >= 2)
    assert driver.execute_script("return window.vfNoReload;") == 1
    assert points("memory", "rss") >= 2 and points("memory", "balloon") >= 2
    assert points("up", "up") >= 3
    latest = driver.find_element(By.CSS_SELECTOR, "#metrics tr[data-chart=cpu] td.num").text
    assert latest.endswith(" %"), latest
    _shot(driver, "vm-metrics")


# ------------------------------------------------------------------ the VM's console


def _running(ui: LabUI, vm: str, host: str) -> None:
    """The guest is running (an earlier test shut it down and may have left it so)."""
    api = Api("127.0.0.1", ui.port, ui.tokens["root"])
    if api.get(f"/api/v1/vms/{vm}").body["state"] != "running":
        got = api.post(f"/api/v1/vms/{vm}/start?host={host}")
        assert got.status == 200, got.body


def _serial_text(driver: WebDriver) -> str:
    """What the terminal shows now: xterm.js draws its rows as text in `.xterm-rows`."""
    return str(driver.find_element(By.CSS_SELECTOR, "#serial .xterm-rows").text)


def test_the_serial_console_shows_the_guest_and_takes_keys(lab_ui: LabUI,
                                                           driver: WebDriver) -> None:
    """Through the controller only: keys typed in the page reach the guest's shell on ttyS0,
    and a reboot typed there shows the guest's boot output in the page."""
    vm, host = lab_ui.web, lab_ui.web_host
    _running(lab_ui, vm, host)
    _sign_in(driver, lab_ui, "webop")
    driver.get(f"{lab_ui.base}/ui/vms/{vm}?host={host}")
    driver.find_element(By.ID, "serial-console").click()
    WebDriverWait(driver, WAIT).until(
        lambda d: d.find_element(By.ID, "console-state").text == "connected")
    # xterm.js takes keys through its hidden textarea
    term = driver.find_element(By.CSS_SELECTOR, "#serial textarea.xterm-helper-textarea")
    # the shell computes 42: what comes back is the guest's answer, not the keys echoed
    term.send_keys("\necho vf-$((6*7))-ok\n")
    WebDriverWait(driver, WAIT).until(lambda d: "vf-42-ok" in _serial_text(d))
    term.send_keys("reboot -f\n")
    WebDriverWait(driver, WAIT * 2).until(lambda d: "virtfleet-tiny-guest up" in
                                          _serial_text(d))
    _shot(driver, "console-serial")
    [issued] = [e for e in lab_ui.audit() if e["actor"] == "webop"
                and e["action"] == "vm.console.serial"]
    assert (issued["via"], issued["result"], issued["target"]) == ("ui", "ok",
                                                                   f"vm:{vm}@{host}")


_OPEN_WS = ("const [url, done] = arguments;"
            "const ws = new WebSocket('ws://' + location.host + url);"
            "ws.onopen = () => { ws.close(); done('open'); };"
            "ws.onclose = e => done('closed ' + e.code);")


def test_an_expired_console_ticket_is_refused(lab_ui: LabUI, driver: WebDriver) -> None:
    vm, host = lab_ui.web, lab_ui.web_host
    _sign_in(driver, lab_ui, "webop")
    path = f"/ui/vms/{vm}/console/serial?host={host}"
    ask = ("const [path, token, done] = arguments;"
           "fetch(path, {method: 'POST', headers: {'X-CSRF-Token': token}})"
           ".then(r => r.json()).then(b => done(b.url + '?ticket=' + b.ticket));")
    csrf = _csrf(driver)
    driver.set_script_timeout(WAIT)
    stale = driver.execute_async_script(ask, path, csrf)
    time.sleep(31)  # past the ticket's 30 s life (controller/ui/tickets.py)
    assert driver.execute_async_script(_OPEN_WS, stale).startswith("closed")
    # a fresh ticket from the same page opens (and this one is then used up)
    fresh = driver.execute_async_script(ask, path, csrf)
    assert driver.execute_async_script(_OPEN_WS, fresh) == "open"
    assert driver.execute_async_script(_OPEN_WS, fresh).startswith("closed")


SCREEN_VMS = {"vnc": "vnc-console", "spice": "spice-console"}  # tiny guests with a display,
# made from the lab guest's XML

_VARIANCE = ("const c = document.querySelector('#screen canvas');"
             "if (!c || !c.width || !c.height) { return 0; }"
             "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
             "let n = 0, s = 0, s2 = 0;"
             "for (let i = 0; i < d.length; i += 4) {"
             "  const y = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];"
             "  n++; s += y; s2 += y * y; }"
             "return s2 / n - (s / n) * (s / n);")


def _screen_guest(ui: LabUI, lab: LabFixture, tmp: Path, kind: str) -> str:
    """The web guest's definition with a new name, its own console log and a VNC or SPICE
    display listening on its hypervisor's lab address (not 0.0.0.0), started there. SPICE
    with QEMU's default image compression, as `vm create --graphics spice` leaves it."""
    vm = SCREEN_VMS[kind]
    host = next(h for h in lab.hosts if h.name == ui.web_host)
    xml = subprocess.run(["virsh", "-c", host.uri, "dumpxml", "--inactive", ui.web],
                         check=True, capture_output=True, timeout=60).stdout
    dom = etree.fromstring(xml)
    name, devices = dom.find("name"), dom.find("devices")
    assert name is not None and devices is not None
    name.text = vm
    for gone in dom.findall("uuid"):
        dom.remove(gone)
    for log in dom.iterfind("devices/serial/log"):
        log.set("file", f"/var/log/libvirt/qemu/{vm}.console.log")
    devices.append(E.graphics(E.listen(type="address", address=host.address),
                              type=kind, autoport="yes", listen=host.address))
    devices.append(E.video(E.model(type="vga")))
    path = tmp / f"{vm}.xml"
    path.write_bytes(etree.tostring(dom))
    for argv in (["define", str(path)], ["start", vm]):
        subprocess.run(["virsh", "-c", host.uri, *argv], check=True, capture_output=True,
                       timeout=120)
    return host.uri


@pytest.mark.parametrize("kind", ["vnc", "spice"])
def test_the_screen_is_shown_through_the_controller(
        lab_ui: LabUI, lab: LabFixture, driver: WebDriver,
        tmp_path: Path, kind: str) -> None:
    vm = SCREEN_VMS[kind]
    uri = _screen_guest(lab_ui, lab, tmp_path, kind)
    try:
        live = subprocess.run(["virsh", "-c", uri, "dumpxml", vm], check=True,
                              capture_output=True, timeout=60).stdout
        graphics = etree.fromstring(live).find("devices/graphics")
        port = graphics.get("port") if graphics is not None else None
        assert port and int(port) >= 5900
        _sign_in(driver, lab_ui, "webop")
        # the VM page's screen link names the display's kind
        driver.get(f"{lab_ui.base}/ui/vms/{vm}?host={lab_ui.web_host}")
        link = WebDriverWait(driver, WAIT).until(
            ec.presence_of_element_located((By.ID, "vnc-console")))
        assert link.text == f"screen ({kind.upper()})"
        link.click()
        WebDriverWait(driver, WAIT).until(
            lambda d: d.find_element(By.ID, "console-state").text == "connected")
        # the guest's screen (SeaBIOS, then the kernel) drawn on the client's canvas (noVNC's
        # or spice-html5's): not one colour
        WebDriverWait(driver, WAIT).until(lambda d: float(d.execute_script(_VARIANCE)) > 50)
        _shot(driver, f"console-{kind}")
        # the page and everything it loaded came from the controller; the display's port
        # appears nowhere in what the browser was given
        assert f":{port}" not in driver.page_source
        loaded = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name);")
        assert loaded and all(u.startswith(lab_ui.base) for u in loaded)
    finally:
        for argv in (["destroy", vm], ["undefine", vm]):
            subprocess.run(["virsh", "-c", uri, *argv], capture_output=True, check=False,
                           timeout=60)


# ------------------------------------------------------------------ snapshot, clone, operations

TEMPLATE = "uitpl"  # a template (role=template in virtfleet's metadata) on a qcow2 volume
SNAP_VM = "uisnap"  # a shut-off VM with a qcow2 disk, to snapshot
CLONE = "uiclone"
IMAGE_POOL = "vfuiimg"


@dataclass
class Images:
    uri: str
    directory: Path
    template_image: Path


@pytest.fixture(scope="module")
def images(lab_ui: LabUI, lab: LabFixture) -> Iterator[Images]:
    """On the web guest's hypervisor: a transient dir pool in its pod's shared directory
    holding a template's image and a VM's, the template and the VM defined (never started).
    Everything made, clones included, is removed after."""
    import contextlib

    import libvirt

    from virtfleet.errors import VirtfleetError
    from virtfleet.virt.guest import Guest, Removal
    from virtfleet.virt.host import Host
    from virtfleet.xml.storage import Pool

    host = next(h for h in lab.hosts if h.name == lab_ui.web_host)
    directory = Path(lab.state.pods[host.pod]) / f"ui-images-{os.getpid()}"
    directory.mkdir()
    for vm in (TEMPLATE, SNAP_VM):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2",
                        str(directory / f"{vm}.qcow2"), "16M"], check=True, timeout=60)
    p = Pool()
    p.type, p.name, p.target_path = "dir", IMAGE_POOL, str(directory)
    with Host.open(host.uri) as c:
        c.conn.storagePoolCreateXML(p.to_xml(), 0)
        c.define_domain(disk_domain(TEMPLATE, directory / f"{TEMPLATE}.qcow2", True))
        c.define_domain(disk_domain(SNAP_VM, directory / f"{SNAP_VM}.qcow2", False))
    try:
        yield Images(host.uri, directory, directory / f"{TEMPLATE}.qcow2")
    finally:
        with Host.open(host.uri) as c:
            for d in c.list_domains():
                g = Guest.lookup(c, d.name)
                if any(src.startswith(str(directory)) for src in g.disk_sources()):
                    with contextlib.suppress(VirtfleetError):
                        if g.is_active():
                            g.destroy()
                        g.undefine(Removal(snapshots=True))
            with contextlib.suppress(libvirt.libvirtError):
                c.conn.storagePoolLookupByName(IMAGE_POOL).destroy()
        shutil.rmtree(directory, ignore_errors=True)


def _vm_page(driver: WebDriver, ui: LabUI, vm: str) -> None:
    driver.get(f"{ui.base}/ui/vms/{vm}?host={ui.web_host}")
    WebDriverWait(driver, WAIT).until(ec.presence_of_element_located((By.ID, "vm-name")))


def _flash(driver: WebDriver) -> str:
    return str(driver.find_element(By.ID, "flash").text)


def test_a_snapshot_taken_from_the_page_is_listed(lab_ui: LabUI, images: Images,
                                                  driver: WebDriver) -> None:
    _sign_in(driver, lab_ui, "webop")
    _vm_page(driver, lab_ui, SNAP_VM)
    assert "none" in driver.find_element(By.ID, "snapshots").text
    driver.execute_script("window.vfNoReload = 1;")
    driver.find_element(By.ID, "snapshot-name").send_keys("before-deploy")
    driver.find_element(By.ID, "snapshot-description").send_keys("release 41")
    driver.find_element(By.ID, "snapshot-take").click()
    _wait(driver).until(lambda d: "snapshot before-deploy of uisnap taken" in _flash(d))
    # the table was replaced in place (htmx's out-of-band swap), not by a reload
    _wait(driver).until(lambda d: d.find_elements(
        By.CSS_SELECTOR, "#snapshots tr[data-snapshot='before-deploy']"))
    assert driver.execute_script("return window.vfNoReload;") == 1
    _shot(driver, "vm-snapshot")
    # the machine agrees: qemu-img lists the internal snapshot in the image
    listed = subprocess.run(["qemu-img", "snapshot", "-U", "-l",
                             str(images.directory / f"{SNAP_VM}.qcow2")],
                            capture_output=True, text=True, check=True, timeout=60).stdout
    assert "before-deploy" in listed

    # a name that is markup: refused in one line naming the field, shown as text
    box = driver.find_element(By.ID, "snapshot-name")
    box.clear()
    box.send_keys("<script>alert(3)")
    driver.find_element(By.ID, "snapshot-take").click()
    _wait(driver).until(lambda d: "is not a valid name" in _flash(d))
    assert _flash(driver) == ("name: '<script>alert(3)' is not a valid name: use letters, "
                              "digits, '-', '_' and '.', starting and ending with a letter "
                              "or digit")
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - reading it is the check
    got = Api("127.0.0.1", lab_ui.port, lab_ui.tokens["root"]).get(
        f"/api/v1/vms/{SNAP_VM}/snapshots")
    assert [s["name"] for s in got.body] == ["before-deploy"]  # nothing half-made


def test_a_snapshot_is_reverted_to_and_deleted_from_the_page(lab_ui: LabUI, images: Images,
                                                             driver: WebDriver) -> None:
    """Each button asks first; a dismissed question changes nothing; the image agrees."""
    api = Api("127.0.0.1", lab_ui.port, lab_ui.tokens["root"])
    for name in ("rev-a", "rev-b"):
        got = api.post(f"/api/v1/vms/{SNAP_VM}/snapshots?host={lab_ui.web_host}",
                       {"name": name})
        assert got.status == 201, got.body

    def current() -> list[str]:
        got = api.get(f"/api/v1/vms/{SNAP_VM}/snapshots")
        return [s["name"] for s in got.body if s["current"]]

    def in_image() -> str:
        return subprocess.run(["qemu-img", "snapshot", "-U", "-l",
                               str(images.directory / f"{SNAP_VM}.qcow2")],
                              capture_output=True, text=True, check=True, timeout=60).stdout

    def button(snapshot: str, act: str) -> Any:
        return driver.find_element(
            By.CSS_SELECTOR, f"#snapshots tr[data-snapshot='{snapshot}'] "
                             f"button[data-snapshot-act={act}]")

    assert current() == ["rev-b"]
    _sign_in(driver, lab_ui, "webop")
    _vm_page(driver, lab_ui, SNAP_VM)
    driver.execute_script("window.vfNoReload = 1;")
    button("rev-b", "delete").click()
    alert = _wait(driver).until(ec.alert_is_present())
    assert "The snapshot is lost" in alert.text
    alert.dismiss()
    button("rev-a", "revert").click()
    alert = _wait(driver).until(ec.alert_is_present())
    assert alert.text.startswith(f"Revert {SNAP_VM} to snapshot rev-a?")
    alert.accept()
    _wait(driver).until(lambda d: f"{SNAP_VM} reverted to snapshot rev-a" in _flash(d))
    assert current() == ["rev-a"] and "rev-b" in in_image()  # the dismissed delete did nothing
    button("rev-b", "delete").click()
    _wait(driver).until(ec.alert_is_present()).accept()
    _wait(driver).until(lambda d: f"snapshot rev-b of {SNAP_VM} deleted" in _flash(d))
    _wait(driver).until(lambda d: not d.find_elements(
        By.CSS_SELECTOR, "#snapshots tr[data-snapshot='rev-b']"))
    assert driver.execute_script("return window.vfNoReload;") == 1
    _shot(driver, "vm-snapshot-revert")
    assert "rev-b" not in in_image() and "rev-a" in in_image()
    done = [(e["action"], e["result"]) for e in lab_ui.audit()
            if e["actor"] == "webop" and e["via"] == "ui" and e["action"].startswith(
                "snapshot.") and e["action"] != "snapshot.create"]
    assert done[-2:] == [("snapshot.revert", "ok"), ("snapshot.delete", "ok")]
    assert api.call("DELETE", f"/api/v1/vms/{SNAP_VM}/snapshots/rev-a?host={lab_ui.web_host}"
                      ).status == 200


def test_a_clone_from_the_page_is_an_operation_and_appears_in_the_table(
        lab_ui: LabUI, images: Images, driver: WebDriver) -> None:
    _sign_in(driver, lab_ui, "webop")
    # the table marks the template, gives it no power buttons and links to its clone form
    _search(driver, TEMPLATE)
    row = _row(driver, lab_ui.web_host, TEMPLATE)
    assert row.find_element(By.CSS_SELECTOR, "td.name .tag").text == "template"
    assert row.find_elements(By.CSS_SELECTOR, "button[data-verb]") == []
    row.find_element(By.LINK_TEXT, "clone…").click()
    WebDriverWait(driver, WAIT).until(ec.presence_of_element_located((By.ID, "clone-name")))
    # its page: no power buttons either, a clone form
    assert driver.find_elements(By.CSS_SELECTOR, "button[data-verb]") == []
    driver.find_element(By.ID, "clone-name").send_keys(CLONE)
    driver.find_element(By.ID, "clone-go").click()
    _wait(driver).until(lambda d: d.find_elements(By.ID, "flash-op"))
    op = driver.find_element(By.ID, "flash-op").get_attribute("data-op")
    assert op

    # the Operations page: the clone's operation, followed by events until it ends
    driver.find_element(By.LINK_TEXT, "Operations").click()
    WebDriverWait(driver, WAIT).until(ec.presence_of_element_located((By.ID, "ops")))
    WebDriverWait(driver, WAIT).until(
        lambda d: "on" in d.find_element(By.ID, "live").get_attribute("class"))
    driver.execute_script("window.vfNoReload = 1;")
    row = f"#op-{op}"
    _wait(driver).until(lambda d: d.find_element(By.CSS_SELECTOR, f"{row} .op-state").text
                        in ("succeeded", "failed"))
    assert driver.find_element(By.CSS_SELECTOR, f"{row} .op-state").text == "succeeded", \
        driver.find_element(By.CSS_SELECTOR, row).text
    cells = driver.find_element(By.CSS_SELECTOR, row).text
    assert "vm.clone" in cells and "webop" in cells and CLONE in cells
    _shot(driver, "operations")

    # the clone in the VM table, and its page shows its disk's backing chain: the template's
    driver.get(f"{lab_ui.base}/ui/vms")
    WebDriverWait(driver, WAIT).until(ec.presence_of_element_located((By.ID, "vmtable")))
    _search(driver, CLONE)
    _vm_page(driver, lab_ui, CLONE)
    layers = driver.find_elements(By.CSS_SELECTOR, "#disks tr[data-disk=vda] ol.chain li")
    assert [x.text for x in layers] == [f"{images.template_image} (qcow2)"]
    _shot(driver, "vm-chain")
    def clones() -> list[tuple[str, str, str, str]]:
        return [(e["actor"], e["via"], e["action"], e["result"]) for e in lab_ui.audit()
                if e["action"] == "vm.clone"]

    # accepted, then done (recorded as the operation ends, a moment after its last event)
    WebDriverWait(driver, WAIT).until(lambda _d: len(clones()) >= 2)
    assert clones()[-2:] == [("webop", "ui", "vm.clone", "ok")] * 2


def test_the_operations_page_updates_by_event(lab_ui: LabUI, images: Images,
                                              driver: WebDriver) -> None:
    """An operation started elsewhere (the API) while the page is open arrives without a
    reload: the tables are fetched again on the operation's events."""
    _sign_in(driver, lab_ui, "root")
    driver.get(f"{lab_ui.base}/ui/operations")
    WebDriverWait(driver, WAIT).until(
        lambda d: "on" in d.find_element(By.ID, "live").get_attribute("class"))
    driver.execute_script("window.vfNoReload = 1;")
    api = Api("127.0.0.1", lab_ui.port, lab_ui.tokens["root"])
    got = api.post(f"/api/v1/templates/{TEMPLATE}/clone", {"name": "uiapiclone"})
    assert got.status == 202, got.body
    op = got.body["id"]
    _wait(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#op-{op}"))
    _wait(driver).until(lambda d: d.find_element(By.CSS_SELECTOR, f"#op-{op} .op-state").text
                        == "succeeded")
    assert driver.execute_script("return window.vfNoReload;") == 1
    assert (driver.find_element(By.ID, "ops").get_attribute("data-event") or "").count("-") == 1


def test_a_viewers_forged_posts_to_the_new_actions_are_403(lab_ui: LabUI, images: Images,
                                                           driver: WebDriver) -> None:
    _sign_in(driver, lab_ui, "viewer")
    _vm_page(driver, lab_ui, TEMPLATE)
    assert driver.find_elements(By.CSS_SELECTOR, "form.act-form") == []
    csrf = _csrf(driver)
    before = {o["id"] for o in Api("127.0.0.1", lab_ui.port, lab_ui.tokens["root"]).get(
        "/api/v1/operations").body["operations"]}
    for path in (f"/ui/vms/{SNAP_VM}/snapshot?host={lab_ui.web_host}",
                 f"/ui/vms/{SNAP_VM}/snapshots/revert?host={lab_ui.web_host}",
                 f"/ui/vms/{SNAP_VM}/snapshots/delete?host={lab_ui.web_host}",
                 f"/ui/vms/{TEMPLATE}/clone?host={lab_ui.web_host}",
                 f"/ui/vms/{lab_ui.web}/migrate?host={lab_ui.web_host}"):
        assert _post_from_page(driver, path, csrf) == 403, path
    after = {o["id"] for o in Api("127.0.0.1", lab_ui.port, lab_ui.tokens["root"]).get(
        "/api/v1/operations").body["operations"]}
    assert after == before  # nothing was started
    denied = [e["action"] for e in lab_ui.audit() if e["actor"] == "viewer"
              and e["via"] == "ui" and e["result"] == "denied"]
    assert {"snapshot.create", "snapshot.revert", "snapshot.delete", "vm.clone",
            "vm.migrate"} <= set(denied)
