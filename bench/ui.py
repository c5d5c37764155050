"""bench/ui: the web console over the simulated reference fleet (1,500 hypervisors x 10 VMs),
measured in the browser: headless Chromium (Debian's, through Selenium) loads the estate map
and the VM table, and the page's own Performance API says when it painted.

For each page, several loads in one signed-in browser: the navigation's response end (the
controller rendering the page, over loopback), first contentful paint, largest contentful paint
(the estate's cells or the table: the "meaningful" paint) and the load event. Then the VM
table's filter: from htmx sending the request to the table swapped and settled, over 15,000
rows. The baseline in the same run is what an operator waits for without the console: a cold
`virtfleet list` (no controller: every hypervisor asked).

Needs root (the lab daemons live in network namespaces). Usage:
    .venv/bin/python bench/ui.py [--quick] [--shots DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# bench/common.py and bench/record.py: the script's own directory is on sys.path
from common import VF, bench_token, free_port, lab_down, simulate, stop_controller, timed
from record import report, stamp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
from tests.integration.browser import headless_chromium  # noqa: E402
from tests.unit.apiclient import Api  # noqa: E402

LAB = "ui-bench"

# The page's paint timings, read once the largest contentful paint is known.
PAINTS = """
const done = arguments[arguments.length - 1];
const nav = performance.getEntriesByType('navigation')[0];
let fcp = null, lcp = null;
function finish() {
  if (fcp !== null && lcp !== null) {
    const server = nav.serverTiming.find((t) => t.name === 'page');
    done({response: nav.responseEnd, fcp: fcp, lcp: lcp, load: nav.loadEventEnd,
          bytes: nav.transferSize, request: nav.requestStart, first_byte: nav.responseStart,
          server: server ? server.duration : -1});
  }
}
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    if (e.name === 'first-contentful-paint') { fcp = e.startTime; finish(); }
  }
}).observe({type: 'paint', buffered: true});
new PerformanceObserver((list) => {
  const all = list.getEntries();
  lcp = all[all.length - 1].startTime;
  finish();
}).observe({type: 'largest-contentful-paint', buffered: true});
"""
WATCH = """
window.vfT = null;
document.body.addEventListener('htmx:beforeRequest', () => { window.vfT0 = performance.now(); });
document.body.addEventListener('htmx:afterSettle', () => {
  window.vfT = performance.now() - window.vfT0; });
"""


def load(driver: WebDriver, url: str, ready: str) -> dict[str, Any]:
    driver.get(url)
    WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.ID, ready))
    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script("return document.readyState") == "complete")
    got: dict[str, Any] = driver.execute_async_script(PAINTS)
    print(f"  {url}: " + ", ".join(f"{k} {v:.0f}" for k, v in got.items()), flush=True)
    return got


def filter_once(driver: WebDriver, text: str) -> float:
    box = driver.find_element(By.ID, "q")
    driver.execute_script("arguments[0].value = '';", box)  # no input event: no request
    driver.execute_script(WATCH)
    box.send_keys(text)
    WebDriverWait(driver, 60).until(lambda d: d.execute_script("return window.vfT") is not None)
    return float(driver.execute_script("return window.vfT"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true",
                    help="150 hypervisors instead of 1,500 (a smoke run; not recorded)")
    ap.add_argument("--loads", type=int, default=5, help="loads of each page")
    ap.add_argument("--shots", type=Path, help="save a screenshot of each page here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/ui needs root: the lab daemons run in namespaces")

    work = Path(tempfile.mkdtemp(prefix="vf-bench-ui-"))
    db = work / "bench.db"
    env = {"VIRTFLEET_DB": str(db), "VIRTFLEET_RUN_DIR": str(work / "run")}
    fleet_file = simulate(LAB, work, args.quick, env)
    controller: subprocess.Popen[bytes] | None = None
    try:
        timed([VF, "apply", "-f", str(fleet_file)], env)
        token = bench_token(env, "operator")
        print("baseline: virtfleet list, cold (no controller) ...", flush=True)
        cold = timed([VF, "list", "--json"], env)[0]

        port = free_port()
        controller = subprocess.Popen([VF, "serve", "--listen", f"127.0.0.1:{port}"],
                                      env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE)
        api = Api("127.0.0.1", port, token, timeout=300)
        deadline = time.monotonic() + 600
        total = 0
        while True:  # up once its view holds a full pass over the fleet
            try:
                if api.get("/api/v1/health").body.get("healthy"):
                    total = int(api.get("/api/v1/vms?limit=1").body["total"])
                    if total > 0:
                        break
            except (OSError, AttributeError, KeyError):
                pass
            if controller.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("controller did not come up: " + (
                    controller.stderr.read().decode()[-2000:] if controller.stderr else ""))
            time.sleep(1)
        hosts = len(api.get("/api/v1/hosts?limit=5000").body["items"])
        sample = api.get(f"/api/v1/vms?limit=1&offset={total // 2}").body["items"][0]["name"]
        time.sleep(20)  # one stats pass: the estate's bars have capacities to draw against
        base = f"http://127.0.0.1:{port}"
        figures: dict[str, list[dict[str, Any]]] = {"estate": [], "vms": []}
        filters: list[float] = []
        with headless_chromium(1600, 1000) as driver:
            driver.get(f"{base}/ui/login")
            driver.find_element(By.ID, "user").send_keys("bench")
            driver.find_element(By.ID, "token").send_keys(token)
            driver.find_element(By.ID, "signin").click()
            WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.ID, "estate"))
            for _ in range(args.loads):
                figures["estate"].append(load(driver, f"{base}/ui/estate", "estate"))
                figures["vms"].append(load(driver, f"{base}/ui/vms", "vmtable"))
            if args.shots:
                args.shots.mkdir(parents=True, exist_ok=True)
                load(driver, f"{base}/ui/estate", "estate")
                driver.save_screenshot(str(args.shots / "ui-estate-1500.png"))
                load(driver, f"{base}/ui/vms", "vmtable")
                driver.save_screenshot(str(args.shots / "ui-vms-15000.png"))
            load(driver, f"{base}/ui/vms", "vmtable")
            for text in (sample, sample[:-1], "*-01", sample[:6], sample):
                filters.append(filter_once(driver, text))
        load_avg = os.getloadavg()[0]
    finally:
        stop_controller(controller)
        lab_down(LAB)

    def med(page: str, key: str) -> float:
        return float(statistics.median(f[key] for f in figures[page])) / 1000

    table = ["| what | median s | max s |", "| --- | ---: | ---: |",
             f"| baseline: `virtfleet list --json`, cold (no controller) | {cold:.3f} | - |"]
    for page, label in (("estate", f"estate map, {hosts} hypervisor cells"),
                        ("vms", f"VM table, first page of 100 of {total}")):
        for key, what in (("response", "response end"), ("fcp", "first contentful paint"),
                          ("lcp", "largest contentful paint"), ("load", "load event")):
            worst = max(f[key] for f in figures[page]) / 1000
            table.append(f"| {label}: {what} | {med(page, key):.3f} | {worst:.3f} |")
        size = figures[page][0]["bytes"]
        table.append(f"| {label}: bytes over the wire | {size} | - |")
    table.append(f"| VM table filter over {total} VMs, request to settled table "
                 f"({len(filters)} filters) | {statistics.median(filters) / 1000:.3f} | "
                 f"{max(filters) / 1000:.3f} |")
    lcp_e, lcp_v = med("estate", "lcp"), med("vms", "lcp")
    verdict = [
        f"- estate under 1.5 s to its largest paint: {'yes' if lcp_e < 1.5 else 'NO'} "
        f"({lcp_e * 1000:.0f} ms); VM table: {'yes' if lcp_v < 1.5 else 'NO'} "
        f"({lcp_v * 1000:.0f} ms)",
        f"- a filter under 200 ms: {'yes' if statistics.median(filters) < 200 else 'NO'} "
        f"({statistics.median(filters):.0f} ms median)",
        f"- load average (1 min) at the end: {load_avg:.1f} on {os.cpu_count()} cores, "
        "shared with other work on this machine: figures are noisy",
    ]
    text = "\n".join(table + [""] + verdict)
    report("ui", f"`bench/ui.py`, {stamp()}, {os.cpu_count()} cores, Python "
           f"{platform.python_version()}, Chromium headless (Debian) through Selenium on the "
           f"same machine as the controller; {hosts} simulated hypervisors, {total} VMs (test "
           f"driver over test+tcp through lab daemons); {args.loads} loads of each page in one "
           "signed-in browser, timings from the page's Performance API.", text,
           quick=args.quick)


if __name__ == "__main__":
    main()
