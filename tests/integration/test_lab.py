"""The lab: real libvirtd hypervisors in namespaces, tiny guests, simulated fleets over RPC.

The first few tests need no root: they check the lab's naming and generated configuration.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lxml import etree

from tests.unit.cli import run
from virtfleet.errors import InvalidInput, LabError, OperationTimeout
from virtfleet.inventory.fleetfile import load_fleet
from virtfleet.lab import guest, netns, procs
from virtfleet.lab.daemon import libvirtd_conf, qemu_conf
from virtfleet.lab.lab import Lab
from virtfleet.lab.names import MAX_HOSTS, MAX_SIMS, LabNames, sim_index
from virtfleet.lab.simulate import SimSpec
from virtfleet.virt.host import Host

from .conftest import LAB_NAME, LabFixture, require_lab

# -- no root needed ---------------------------------------------------------------------------


def test_names_are_short_anchored_and_stable(tmp_path: Path) -> None:
    a = LabNames.for_lab("lab", tmp_path)
    b = LabNames.for_lab("lab-h1", tmp_path)
    assert a.octet == LabNames.for_lab("lab", tmp_path).octet
    assert 1 <= a.octet <= 254
    assert str(a.subnet) == f"10.250.{a.octet}.0/24"
    assert a.address(1) == f"10.250.{a.octet}.11"
    for index in (1, MAX_HOSTS, sim_index(1), sim_index(MAX_SIMS)):
        assert len(a.veth(index)) <= 15
    assert len(a.bridge) <= 15
    assert a.address(sim_index(MAX_SIMS)).endswith(".250")
    # lab "lab" never claims the namespaces of lab "lab-h1", nor the other way round
    assert a.netns_pattern().match(a.netns(3))
    assert not a.netns_pattern().match(b.netns(1))
    assert not b.netns_pattern().match(a.netns(1))


def test_bad_lab_names_and_hidden_state_dirs_are_refused(tmp_path: Path) -> None:
    for bad in ("", "Lab", "a b", "x" * 30, "-x", "x-", "../x"):
        with pytest.raises(InvalidInput):
            LabNames.for_lab(bad, tmp_path)
    with pytest.raises(InvalidInput, match="/var/lib/libvirt"):
        LabNames.for_lab("lab", Path("/var/lib/libvirt/labs"))


def test_daemon_config_has_what_a_lab_daemon_needs() -> None:
    conf = libvirtd_conf("10.250.3.11")
    for line in ('listen_tcp = 1', 'listen_tls = 0', 'listen_addr = "10.250.3.11"',
                 'auth_tcp = "none"', 'max_clients = 5000', 'max_anonymous_clients = 5000'):
        assert line in conf
    assert "host_uuid" in conf and libvirtd_conf("x") != libvirtd_conf("x")  # unique uuids
    assert 'user = "root"' in qemu_conf() and "cgroup_controllers = [  ]" in qemu_conf()
    with pytest.raises(LabError):
        libvirtd_conf('10.0.0.1"\nlisten_tcp = 0')


def test_tiny_guest_xml_is_valid_libvirt_xml(tmp_path: Path) -> None:
    images = guest.GuestImages(tmp_path / "vmlinuz", tmp_path / "initrd.img", "x")
    xml = guest.domain_xml("tiny-lab-hv1-1", images)
    dom = etree.fromstring(xml.encode())
    assert dom.get("type") == "qemu"
    assert dom.findtext("os/kernel") == str(tmp_path / "vmlinuz")
    log = dom.find("devices/serial/log")
    assert log is not None
    assert str(log.get("file")).endswith("tiny-lab-hv1-1.console.log")
    if os.path.exists("/usr/bin/virt-xml-validate"):
        path = tmp_path / "dom.xml"
        path.write_text(xml)
        check = subprocess.run(["virt-xml-validate", str(path), "domain"],
                               capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stderr
    with pytest.raises(InvalidInput):
        guest.domain_xml("bad name", images)


# -- the session lab --------------------------------------------------------------------------

def _virsh(uri: str, *args: str) -> str:
    out = subprocess.run(["virsh", "-q", "-c", uri, *args], capture_output=True, text=True,
                         check=True, timeout=30)
    return out.stdout


@pytest.mark.integration
def test_up_gives_three_reachable_daemons_on_distinct_addresses(lab: LabFixture) -> None:
    assert len(lab.hosts) == 3
    assert len({h.address for h in lab.hosts}) == 3
    assert len({h.libvirtd_pid for h in lab.hosts}) == 3
    uuids = set()
    for h in lab.hosts:
        assert h.libvirtd_pid is not None and procs.alive(h.libvirtd_pid)
        assert h.uri == f"qemu+tcp://{h.address}/system"
        with Host.open(h.uri) as conn:
            caps = etree.fromstring(conn.capabilities_xml().encode())
            uuids.add(caps.findtext("host/uuid"))
    assert len(uuids) == 3  # each its own host_uuid


@pytest.mark.integration
def test_hosts_keep_separate_state(lab: LabFixture, tmp_path: Path) -> None:
    h1, h2, h3 = lab.hosts
    images = guest.GuestImages(tmp_path / "k", tmp_path / "i", "x")
    with Host.open(h1.uri) as c1:
        c1.define_domain(guest.domain_xml("vftest-separate", images))
        try:
            assert "vftest-separate" in {d.name for d in c1.list_domains()}
            for other in (h2, h3):
                with Host.open(other.uri) as c:
                    assert "vftest-separate" not in {d.name for d in c.list_domains()}
        finally:
            c1.undefine_domain("vftest-separate")


def _netns_programs(ns: str) -> set[str]:
    out = set()
    for pid in netns.netns_pids(ns):
        with contextlib.suppress(OSError):
            out.add(Path(f"/proc/{pid}/comm").read_text().strip())
    return out


@pytest.mark.integration
def test_apply_starts_the_declared_network_inside_each_hosts_namespace(
        lab: LabFixture, tmp_path: Path) -> None:
    """The lab declares libvirt's `default` NAT network in its fleet file; `apply` makes it on
    every hypervisor, each inside its own namespace (bridge and dnsmasq), none on this host."""
    def host_bridges() -> set[str]:
        return {n for n in netns.link_names() if n.startswith("virbr")}

    before = host_bridges()
    r = run(tmp_path / "store.db", "apply", "-f", str(lab.fleet_file))
    assert r.code == 0, r.err
    for h in lab.hosts:
        info = _virsh(h.uri, "net-info", "default")
        assert "Active:         yes" in info and "Autostart:      yes" in info, info
        inner = subprocess.run(["ip", "-n", h.netns, "-br", "addr", "show", "virbr0"],
                               capture_output=True, text=True, check=True).stdout
        assert "192.168.122.1/24" in inner
        assert "dnsmasq" in _netns_programs(h.netns)
    assert host_bridges() == before  # nothing new on the real host


@pytest.mark.integration
def test_root_namespace_has_only_the_labs_bridge_and_veths(lab: LabFixture) -> None:
    names = lab.lab.names
    ours = set(netns.owned_links(names))
    assert ours == {names.bridge, *(h.veth for h in lab.hosts)}
    assert all(len(n) <= 15 for n in ours)
    assert set(netns.owned_namespaces(names)) == {h.netns for h in lab.hosts}


@pytest.mark.integration
def test_fleet_file_describes_the_lab(lab: LabFixture) -> None:
    fleet = load_fleet(lab.fleet_file)
    rows = list(fleet.hypervisors())
    assert [hv.uri for _, _, hv in rows] == [h.uri for h in lab.hosts]
    pods = {pod.name: pod for site in fleet.sites for pod in site.pods}
    assert len(pods) == 2
    for pod in pods.values():
        assert pod.storage is not None and pod.storage.type == "dir"
        assert Path(pod.storage.target).is_dir()
    [site] = fleet.sites
    assert [(n.name, n.mode, str(n.subnet)) for n in site.libvirt_networks] == [
        ("default", "nat", "192.168.122.0/24")]


@pytest.mark.integration
def test_status_reports_every_host(lab: LabFixture) -> None:
    rows = lab.lab.status()
    assert [r.name for r in rows] == [h.name for h in lab.hosts]
    assert all(r.alive and r.answering and r.domains is not None for r in rows)


@pytest.mark.integration
def test_a_tiny_guest_boots(lab: LabFixture) -> None:
    try:
        results = lab.lab.guests(1, timeout=180)
        assert len(results) == 3
        for r in results:
            assert r.boot_seconds is not None
            assert guest.MARKER in r.console_log.read_text()
        assert all(s.domains == 1 for s in lab.lab.status())
        again = lab.lab.guests(1)  # idempotent: already running, nothing started
        assert not any(r.started for r in again)
    finally:
        lab.lab.guests(0)
    assert all(s.domains == 0 for s in lab.lab.status())


@pytest.mark.integration
def test_killed_daemon_is_seen_dead_and_restarts(lab: LabFixture) -> None:
    h = lab.hosts[1]
    lab.kill_daemon(h)
    row = next(r for r in lab.lab.status() if r.name == h.name)
    assert not row.alive and not row.answering
    fresh = lab.restart_daemon(h)
    assert fresh.libvirtd_pid != h.libvirtd_pid
    with Host.open(fresh.uri) as c:
        c.list_domains()


@pytest.mark.integration
def test_stopped_daemon_times_out_then_recovers(lab: LabFixture) -> None:
    from virtfleet.config import Timeouts

    h = lab.hosts[2]
    lab.stop_daemon(h)
    try:
        with pytest.raises(OperationTimeout):
            Host.open(h.uri, Timeouts(connect=1.0))
        row = next(r for r in lab.lab.status() if r.name == h.name)
        assert row.stopped and not row.answering
    finally:
        lab.cont_daemon(h)
    with Host.open(h.uri) as c:
        c.list_domains()


@pytest.mark.integration
def test_simulated_fleet_is_served_over_tcp(lab: LabFixture, tmp_path: Path) -> None:
    sim, fleet_file = lab.lab.simulate(SimSpec.custom(5, 4), out=tmp_path / "sim", daemons=1)
    fleet = load_fleet(fleet_file)
    uris = [hv.uri for _, _, hv in fleet.hypervisors()]
    assert len(uris) == 5 and all(u.startswith("test+tcp://") for u in uris)
    with Host.open(uris[0]) as c:
        assert len(c.list_domains()) == 4
        assert c.node_info()[2] == 40
    listing = _virsh(uris[-1], "list", "--all", "--name").split()
    assert listing and all(name.startswith("sim-p1-hv005-vm") for name in listing)


# -- leftovers and teardown, on a lab of their own ---------------------------------------------

LEFT = f"{LAB_NAME[:19]}-left"  # beside the session lab, never colliding with it


def _nothing_left(lab: Lab) -> None:
    names = lab.names
    assert netns.owned_namespaces(names) == []
    assert netns.owned_links(names) == []
    assert not lab.state_dir.exists()
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(lab.state_dir) not in mounts


@pytest.mark.integration
def test_leftovers_of_a_killed_run_are_cleared_and_other_labs_untouched(
        lab: LabFixture) -> None:
    require_lab()
    left = Lab(LEFT)
    session_pids = [h.libvirtd_pid for h in lab.hosts]
    try:
        first = left.up(hosts=1)
        old_pids = {first.hosts[0].libvirtd_pid, first.hosts[0].virtlogd_pid}
        # The maker "dies" and its state file is lost: only discovery can find the pieces.
        left.names.state_file.unlink()
        second = left.up(hosts=1)
        assert all(p is not None and not procs.alive(p) for p in old_pids)
        assert second.hosts[0].libvirtd_pid not in old_pids
        with Host.open(second.hosts[0].uri) as c:
            c.list_domains()
        # An `up` killed at a random moment halfway, then another `up`.
        code = f"from virtfleet.lab.lab import Lab; Lab({LEFT!r}).up(hosts=2)"
        maker = subprocess.Popen([sys.executable, "-c", code], env=_env())
        time.sleep(0.4)
        maker.send_signal(signal.SIGKILL)
        maker.wait()
        third = left.up(hosts=1)
        assert len(third.hosts) == 1
        assert set(netns.owned_namespaces(left.names)) == {third.hosts[0].netns}
        # the session lab never noticed
        assert all(p is not None and procs.alive(p) for p in session_pids)
    finally:
        cleared = left.down()
    assert cleared.processes >= 2 and cleared.namespaces == 1
    _nothing_left(left)
    assert not left.down().anything  # idempotent


@pytest.mark.integration
def test_down_removes_processes_namespaces_interfaces_and_state(
        lab: LabFixture, tmp_path: Path) -> None:
    require_lab()
    left = Lab(LEFT)
    st = left.up(hosts=2)
    try:
        assert st.fleet_file is not None
        db = tmp_path / "store.db"
        # What the demo makes: the declared network and pod pool, a volume in it, a guest.
        assert run(db, "apply", "-f", st.fleet_file).code == 0
        assert run(db, "pool", "apply-pod", "--all").code == 0
        pod_dir = Path(next(iter(st.pods.values())))
        r = run(db, "vol", "create", "x.qcow2", "--host", st.hosts[0].name, "--pool",
                f"{st.hosts[0].pod}-shared", "--size", "16M")
        assert r.code == 0, r.err
        assert (pod_dir / "x.qcow2").is_file()
        left.guests(1, wait=False)
        pids = [p for h in st.hosts for p in netns.netns_pids(h.netns)]
        assert len(pids) >= 8  # virtlogd, libvirtd, dnsmasq, qemu per host
        assert all("dnsmasq" in _netns_programs(h.netns) for h in st.hosts)
    finally:
        left.down()
    assert not any(procs.alive(p) for p in pids)
    assert not pod_dir.exists()
    _nothing_left(left)
    with pytest.raises(LabError, match="not up"):
        left.status()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env
