"""Fencing a lab hypervisor through its simulated BMC, with the production fence agent.

Each lab hypervisor gets an OpenIPMI ipmi_sim BMC (virtfleet.lab.bmc); ha/fence.py drives it
with fence_ipmilan. Truth comes from the machine: the QEMU processes with a guest's -uuid in
`ps`, the libvirtd pid, the processes in the hypervisor's network namespace, its veth's flags.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.unit.cli import run
from virtfleet.config import Timeouts
from virtfleet.errors import LabError
from virtfleet.ha.fence import FenceDevice, Power, power_off, power_on, power_status
from virtfleet.inventory.fleetfile import Hypervisor, load_fleet
from virtfleet.lab import bmc as labbmc
from virtfleet.lab import guest, procs
from virtfleet.lab.bmc import LabBmc, LabBmcs
from virtfleet.lab.guests import outer_log
from virtfleet.lab.state import LabHost
from virtfleet.virt.host import Host

from .conftest import LabFixture
from .ticking import wait_answering

pytestmark = pytest.mark.integration


@dataclass
class Fenced:
    lab: LabFixture
    bmcs: dict[str, LabBmc]
    fleet_text: str  # the lab's fleet file before any BMC

    def hypervisor(self, name: str) -> Hypervisor:
        for _, _, hv in load_fleet(self.lab.fleet_file).hypervisors():
            if hv.name == name:
                return hv
        raise AssertionError(f"{name} is not in the lab's fleet file")

    def device(self, name: str) -> FenceDevice:
        return FenceDevice.of(self.hypervisor(name))

    def refresh(self, name: str) -> LabHost:
        """The lab's record of `name` after something else (a BMC) restarted it."""
        st = self.lab.lab.require_state()
        fresh = st.host(name)
        for i, h in enumerate(self.lab.state.hosts):
            if h.name == name:
                self.lab.state.hosts[i] = fresh
        return fresh


@pytest.fixture(scope="module")
def fenced(lab: LabFixture) -> Iterator[Fenced]:
    bmcs = LabBmcs(lab.lab)
    before = lab.fleet_file.read_text()
    started = bmcs.start()
    try:
        yield Fenced(lab, {b.host: b for b in started}, before)
    finally:
        bmcs.stop()


def ps_args() -> list[str]:
    """Every process's command line, from `ps` itself."""
    out = subprocess.run(["ps", "-e", "-ww", "-o", "args="], capture_output=True, text=True,
                         check=True).stdout
    return out.splitlines()


def qemu_with_uuid(uuid: str) -> list[str]:
    return [a for a in ps_args() if "qemu-system" in a and f"-uuid {uuid}" in a]


def netns_pids(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                         check=False).stdout
    return [int(p) for p in out.split() if p.isdigit() and procs.alive(int(p))]


def link_up(veth: str) -> bool:
    out = subprocess.run(["ip", "-j", "link", "show", "dev", veth], capture_output=True,
                         text=True, check=True).stdout
    return "UP" in json.loads(out)[0]["flags"]


def start_tiny_guest(host: LabHost, name: str) -> str:
    """A tiny guest on `host`, booted; returns its UUID."""
    images = guest.ensure_images()
    log = outer_log(host, name)
    with Host.open(host.uri, Timeouts(connect=10.0), label=host.name) as h:
        if h.has_domain(name):
            if name in {d.name for d in h.list_domains() if d.state == "running"}:
                h.destroy_domain(name)
            h.undefine_domain(name)
        h.define_domain(guest.domain_xml(name, images))
        log.unlink(missing_ok=True)
        h.start_domain(name)
        uuid = next(d.uuid for d in h.list_domains() if d.name == name)
    deadline = time.monotonic() + 120
    while not guest.seen_marker(log):
        assert time.monotonic() < deadline, f"{name} did not boot; see {log}"
        time.sleep(0.2)
    return uuid


# -- the BMC answers, and nothing shows the password -----------------------------------------


class ArgvWatch:
    """Reads every process's command line from /proc, as fast as it can, in a thread."""

    def __init__(self, needles: list[str], marker: list[str]) -> None:
        self.needles = [n.encode() for n in needles]
        self.marker = b"\0".join(m.encode() for m in marker)  # arguments are NUL-separated
        self.hits: list[str] = []
        self.seen_marker = 0
        self.rounds = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            for entry in os.listdir("/proc"):
                if not entry.isdigit() or int(entry) == me:
                    continue
                try:
                    cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
                except OSError:
                    continue
                if self.marker in cmd:
                    self.seen_marker += 1
                if any(n in cmd for n in self.needles):
                    self.hits.append(cmd.replace(b"\0", b" ").decode(errors="replace"))
            self.rounds += 1

    def __enter__(self) -> ArgvWatch:
        self._t.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._t.join()


def test_status_is_on_and_the_password_never_reaches_a_command_line(fenced: Fenced) -> None:
    h1 = fenced.lab.hosts[0]
    b1 = fenced.bmcs[h1.name]
    password = Path(b1.password_file).read_text().strip()
    assert (Path(b1.password_file).stat().st_mode & 0o777) == 0o600
    dev = fenced.device(h1.name)
    # ipmitool's command line carries the BMC's address: seeing it proves the watch sees the
    # agent's child processes, where fence_ipmilan alone would have put the password.
    with ArgvWatch([password], marker=["-H", b1.address]) as watch:
        results = [power_status(dev) for _ in range(10)]
        ps_seen = [a for a in ps_args() if password in a]
    for r in results:
        assert r.power is Power.ON and r.confirmed, r.message
        assert r.host == h1.name and r.agent == "fence_ipmilan"
    assert watch.seen_marker > 0, "the watch never saw an ipmitool run"
    assert watch.hits == [] and ps_seen == []


def test_power_off_kills_the_hypervisor_and_on_brings_it_back(fenced: Fenced) -> None:
    lab = fenced.lab
    h1, h2 = lab.hosts[0], lab.hosts[1]
    name = f"fence-{h1.name}"
    uuid = start_tiny_guest(h1, name)
    assert len(qemu_with_uuid(uuid)) == 1
    old_libvirtd, old_virtlogd = h1.libvirtd_pid, h1.virtlogd_pid
    assert old_libvirtd and procs.alive(old_libvirtd)
    neighbour = h2.libvirtd_pid
    assert neighbour and procs.alive(neighbour)
    dev = fenced.device(h1.name)
    try:
        off = power_off(dev)
        assert off.power is Power.OFF and off.confirmed, off.message
        # Ground truth: the guest's QEMU, libvirtd, virtlogd and everything else of the host
        # are gone, and its link is down. Its neighbour was not touched.
        assert qemu_with_uuid(uuid) == []
        assert not procs.alive(old_libvirtd)
        assert old_virtlogd is None or not procs.alive(old_virtlogd)
        assert netns_pids(h1.netns) == []
        assert not link_up(h1.veth)
        assert procs.alive(neighbour)
        status = power_status(dev)
        assert status.power is Power.OFF, status.message

        on = power_on(dev)
        assert on.power is Power.ON and on.confirmed, on.message
        assert link_up(h1.veth)
        wait_answering(h1)
        fresh = fenced.refresh(h1.name)
        assert fresh.libvirtd_pid and fresh.libvirtd_pid != old_libvirtd
        assert procs.alive(fresh.libvirtd_pid)
        # A power loss does not restart the guest: it is defined, shut off, not running twice.
        with Host.open(fresh.uri, Timeouts(connect=10.0), label=fresh.name) as h:
            states = {d.name: d.state for d in h.list_domains()}
        assert states.get(name) == "shut off"
        assert qemu_with_uuid(uuid) == []
    finally:
        if power_status(dev).power is not Power.ON:
            power_on(dev)
        wait_answering(lab.host(h1.name))
        fenced.refresh(h1.name)
        with Host.open(h1.uri, Timeouts(connect=10.0), label=h1.name) as h:
            if h.has_domain(name):
                if any(d.name == name and d.state == "running" for d in h.list_domains()):
                    h.destroy_domain(name)
                h.undefine_domain(name)


def test_an_operator_powers_a_fenced_host_back_on_from_the_cli(fenced: Fenced,
                                                             tmp_path: Path) -> None:
    """`virtfleet ha power HOST [--on]` (docs/ha.md), through the BMC the fleet file names:
    the way back for a fenced lab host, so HA can be tried end to end on the demo lab."""
    lab = fenced.lab
    h1 = lab.hosts[0]
    db = tmp_path / "s.db"
    assert run(db, "apply", "-f", str(lab.fleet_file)).code == 0
    old = h1.libvirtd_pid
    dev = fenced.device(h1.name)
    try:
        assert power_off(dev).power is Power.OFF
        assert netns_pids(h1.netns) == []
        r = run(db, "ha", "power", h1.name)
        assert r.code == 0 and r.out.startswith(f"{h1.name}: power off (fence_ipmilan"), r.err
        r = run(db, "ha", "power", h1.name, "--on", "--json")
        assert r.code == 0, r.err
        assert (r.json()["power"], r.json()["confirmed"]) == ("on", True)
        assert link_up(h1.veth)
        wait_answering(h1)
        fresh = fenced.refresh(h1.name)
        assert fresh.libvirtd_pid and fresh.libvirtd_pid != old
        assert procs.alive(fresh.libvirtd_pid)  # ground truth: a new libvirtd runs there
        r = run(db, "ha", "power", h1.name, "--on")
        assert r.code == 0 and r.out.startswith(f"{h1.name}: power on (powered on)"), r.out
    finally:
        if power_status(dev).power is not Power.ON:
            power_on(dev)
        wait_answering(lab.host(h1.name))
        fenced.refresh(h1.name)


def test_power_on_of_a_running_host_changes_nothing(fenced: Fenced) -> None:
    h2 = fenced.lab.hosts[1]
    pid = h2.libvirtd_pid
    r = power_on(fenced.device(h2.name))
    assert r.power is Power.ON and r.confirmed
    assert "Already ON" in r.message
    assert pid is not None and procs.alive(pid)


# -- refusals ------------------------------------------------------------------------------------


def test_bad_credentials_give_a_clear_error(fenced: Fenced,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    h1, h2 = fenced.lab.hosts[0], fenced.lab.hosts[1]
    hv = fenced.hypervisor(h1.name)
    assert hv.bmc is not None
    monkeypatch.setenv("VF_TEST_WRONG_BMC_PW", "not-the-password")
    wrong = hv.model_copy(update={"bmc": hv.bmc.model_copy(
        update={"password_file": None, "password_env": "VF_TEST_WRONG_BMC_PW"})})
    r = power_off(FenceDevice.of(wrong))
    assert r.power is Power.ERROR and not r.confirmed
    assert r.host == h1.name
    assert "the BMC refused the session: check the user name, password" in r.message
    assert "not-the-password" not in r.message
    assert procs.alive(h1.libvirtd_pid or 0), "a refused off must not power anything off"
    # hv1's password is not hv2's.
    other = fenced.hypervisor(h2.name)
    assert other.bmc is not None
    swapped = other.model_copy(update={"bmc": other.bmc.model_copy(
        update={"password_file": hv.bmc.password_file})})
    assert power_status(FenceDevice.of(swapped)).power is Power.ERROR


def control(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "virtfleet.lab.bmc", str(conf), *args],
                          capture_output=True, text=True, check=False, timeout=60)


def test_a_bmc_control_acts_only_on_its_own_hypervisor(fenced: Fenced, tmp_path: Path) -> None:
    h1, h2 = fenced.lab.hosts[0], fenced.lab.hosts[1]
    conf = Path(fenced.bmcs[h1.name].dir) / "control.json"
    ok = control(conf, "0x20", "get", "power")
    assert ok.returncode == 0 and ok.stdout.strip() == "power:1"
    # A config that names hv1 with hv2's index, or sits outside hv1's BMC directory, is refused
    # before anything is touched.
    data = json.loads(conf.read_text())
    forged = tmp_path / "control.json"
    forged.write_text(json.dumps({**data, "index": h2.index}))
    moved = tmp_path / "moved.json"
    moved.write_text(conf.read_text())
    for bad, words in ((forged, "is not hypervisor"), (moved, "is not in")):
        r = control(bad, "0x20", "set", "power", "0")
        assert r.returncode == 1 and words in r.stderr, r.stderr
    for args in (["0x20", "set", "reset", "1"], ["0x21", "set", "power", "0"],
                 ["0x20", "set", "power", "2"]):
        r = control(conf, *args)
        assert r.returncode == 1, args
    for h in (h1, h2):
        assert h.libvirtd_pid and procs.alive(h.libvirtd_pid)
        assert link_up(h.veth)


# -- starting, stopping, leftovers ---------------------------------------------------------------


def lab_bmc_processes(lab: LabFixture) -> list[int]:
    root = str(lab.lab.state_dir / "bmc") + "/"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"ipmi_sim") and any(a.startswith(root.encode())
                                                          for a in args):
            found.append(int(entry.name))
    return [p for p in found if procs.alive(p)]


def test_leftovers_of_a_killed_run_are_cleared_and_stop_leaves_nothing(
        fenced: Fenced) -> None:
    lab = fenced.lab
    bmcs = LabBmcs(lab.lab)
    before = lab_bmc_processes(lab)
    assert len(before) == len(lab.hosts)
    # A run killed after starting its BMCs leaves them running with no record of them.
    (lab.lab.state_dir / "bmc" / "bmcs.json").unlink()
    again = bmcs.start()
    after = lab_bmc_processes(lab)
    assert len(after) == len(lab.hosts) and not set(before) & set(after)
    assert sorted(b.pid for b in again if b.pid) == sorted(after)
    fenced.bmcs = {b.host: b for b in again}
    for h in lab.hosts:
        assert power_status(fenced.device(h.name)).power is Power.ON
    bmcs.stop()
    assert lab_bmc_processes(lab) == []
    assert not (lab.lab.state_dir / "bmc").exists()
    assert lab.fleet_file.read_text() == fenced.fleet_text
    with pytest.raises(LabError):
        LabBmcs(lab.lab).start(hosts=["no-such-host"])
    fenced.bmcs = {b.host: b for b in bmcs.start()}
    assert len(lab_bmc_processes(lab)) == len(lab.hosts)


def test_a_taken_bmc_address_is_refused(fenced: Fenced) -> None:
    import socket

    lab = fenced.lab
    LabBmcs(lab.lab).stop()
    addr = labbmc.bmc_address(lab.lab.names, lab.hosts[0].index)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind((addr, labbmc.BMC_PORT))
        with pytest.raises(LabError, match="already taken"):
            LabBmcs(lab.lab).start()
        assert lab_bmc_processes(lab) == []  # nothing half-made
    fenced.bmcs = {b.host: b for b in LabBmcs(lab.lab).start()}


def test_a_namespace_bound_to_the_machines_own_is_never_powered_off(fenced: Fenced) -> None:
    # If a hypervisor's namespace file were the machine's own namespace, "every process of
    # the hypervisor" would be every process here. The control refuses instead of killing.
    ns = f"vf-{fenced.lab.name}-guard"
    path = Path("/run/netns") / ns
    path.touch()
    try:
        subprocess.run(["mount", "--bind", "/proc/self/ns/net", str(path)], check=True)
        with pytest.raises(LabError, match="BMC's own network namespace"):
            labbmc._netns_pids(ns)
    finally:
        subprocess.run(["umount", str(path)], check=False)
        path.unlink()
