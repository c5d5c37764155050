"""Headless Chromium for the web console's browser tests and bench/ui: Debian's `chromium` and
`chromium-driver`, driven by Selenium. Nothing is downloaded: the driver and the browser are
named by path, so Selenium Manager is never asked.

`with headless_chromium() as driver:` quits the browser after, and kills whatever of the
chromedriver's process tree is still alive then (a crashed renderer, a hung browser), by pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def browser_missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            return f"{path} is not installed (Debian: chromium, chromium-driver)"
    return None


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("PPid:"):
                out.setdefault(int(line.split()[1]), []).append(int(entry.name))
                break
    return out


def descendants(pid: int) -> list[int]:
    tree = _children()
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@contextlib.contextmanager
def headless_chromium(width: int = 1600, height: int = 1000) -> Iterator[webdriver.Chrome]:
    profile = tempfile.mkdtemp(prefix="vf-chromium-")
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", f"--user-data-dir={profile}",
                "--no-first-run", "--disable-extensions", "--disable-background-networking",
                "--disable-sync", "--disable-component-update", "--metrics-recording-only"):
        opts.add_argument(arg)
    service = Service(executable_path=CHROMEDRIVER, log_output=os.devnull)
    driver = webdriver.Chrome(service=service, options=opts)
    root = service.process.pid if service.process is not None else None
    try:
        yield driver
    finally:
        tree = descendants(root) if root is not None else []
        with contextlib.suppress(WebDriverException, OSError):  # a dead browser is still reaped
            driver.quit()
        for pid in [*tree, *([root] if root is not None else [])]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(profile, ignore_errors=True)
