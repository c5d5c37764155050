"""The shared lab: three real libvirtd hypervisors in network namespaces, for the whole session.

    def test_something(lab: LabFixture) -> None:
        h1 = lab.hosts[0]                 # .name .address .uri .libvirtd_pid .netns .pod
        lab.fleet_file                    # a fleet file for the three (2 pods)
        lab.kill_daemon(h1)               # SIGKILL its libvirtd (a host that died)
        lab.stop_daemon(h1)               # SIGSTOP (a host that hangs) ... lab.cont_daemon(h1)
        lab.restart_daemon(h1)            # start its libvirtd again

After each test that used it, hosts a test stopped are continued and dead daemons restarted,
so one test's damage never leaks into the next. The lab is named "vftest" (or
$VIRTFLEET_TEST_LAB) so it never collides with a demo lab ("lab"). Integration tests are
skipped when not root or without `ip netns`, unless VIRTFLEET_REQUIRE_LAB=1 (CI), where that
is a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtfleet.lab import procs
from virtfleet.lab.lab import Lab
from virtfleet.lab.state import LabHost, LabState

# VIRTFLEET_TEST_LAB lets two checkouts run their integration tests at once on one machine.
LAB_NAME = os.environ.get("VIRTFLEET_TEST_LAB", "vftest")
REQUIRE_ENV = "VIRTFLEET_REQUIRE_LAB"


def lab_unavailable() -> str | None:
    """Why this machine cannot run a lab, or None if it can."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, libvirtd)"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"`ip netns` is unavailable: {probe.stderr.strip()}"
    for tool in ("libvirtd", "virtlogd", "unshare", "nsenter"):
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
            return f"{tool} is not installed"
    return None


def require_lab() -> None:
    """Skip (or, with VIRTFLEET_REQUIRE_LAB=1, fail) when the lab cannot run here."""
    reason = lab_unavailable()
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


class LabFixture:
    """The session's lab, and ways to make its hosts misbehave."""

    def __init__(self, lab: Lab, state: LabState) -> None:
        self.lab = lab
        self.state = state

    @property
    def name(self) -> str:
        return self.lab.name

    @property
    def hosts(self) -> list[LabHost]:
        return self.state.hosts

    @property
    def fleet_file(self) -> Path:
        assert self.state.fleet_file is not None
        return Path(self.state.fleet_file)

    def host(self, name: str) -> LabHost:
        return self.state.host(name)

    def _pid(self, host: LabHost | str) -> int:
        h = self.host(host) if isinstance(host, str) else host
        assert h.libvirtd_pid is not None, f"{h.name} has no libvirtd pid"
        return h.libvirtd_pid

    def kill_daemon(self, host: LabHost | str) -> None:
        pid = self._pid(host)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while procs.alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop_daemon(self, host: LabHost | str) -> None:
        os.kill(self._pid(host), signal.SIGSTOP)

    def cont_daemon(self, host: LabHost | str) -> None:
        os.kill(self._pid(host), signal.SIGCONT)

    def restart_daemon(self, host: LabHost | str) -> LabHost:
        name = host if isinstance(host, str) else host.name
        fresh = self.lab.restart_host(name)
        for i, h in enumerate(self.state.hosts):
            if h.name == name:
                self.state.hosts[i] = fresh
        return fresh

    def heal(self) -> None:
        """Continue stopped daemons and restart dead ones."""
        for h in list(self.state.hosts):
            pid = h.libvirtd_pid
            if pid is not None and procs.stopped(pid):
                os.kill(pid, signal.SIGCONT)
            if pid is None or not procs.alive(pid):
                self.restart_daemon(h)


@pytest.fixture(scope="session")
def lab() -> Iterator[LabFixture]:
    require_lab()
    the_lab = Lab(LAB_NAME)
    try:
        state = the_lab.up(hosts=3, pods=2)
        yield LabFixture(the_lab, state)
    finally:
        the_lab.down()


@pytest.fixture(autouse=True)
def _heal_lab(request: pytest.FixtureRequest) -> Iterator[None]:
    fixture = request.getfixturevalue("lab") if "lab" in request.fixturenames else None
    yield
    if isinstance(fixture, LabFixture):
        fixture.heal()
