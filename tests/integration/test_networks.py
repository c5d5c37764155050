"""libvirt networks on real lab hypervisors: a NAT and an isolated network defined, started and
used by a tiny TCG guest on each of two hosts; apply of a fleet file's networks; preflight.

Every network and guest a test makes is removed again, whatever happens.
"""

from __future__ import annotations

import contextlib
import gzip
import ipaddress
import lzma
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import LabFixture
from tests.unit.cli import run
from tests.unit.cli import run as run_net
from virtfleet.design.policy import build_interface, random_mac
from virtfleet.design.spec import parse_network
from virtfleet.errors import VirtfleetError
from virtfleet.lab import guest
from virtfleet.lab.guests import outer_log
from virtfleet.lab.state import LabHost
from virtfleet.virt import networks
from virtfleet.virt.host import Host
from virtfleet.xml.domain import Domain

pytestmark = pytest.mark.integration

NAT, ISO = "itest-nat", "itest-iso"


@pytest.fixture
def db(lab: LabFixture, tmp_path: Path) -> Path:
    store = tmp_path / "store.db"
    assert run(store, "apply", "-f", str(lab.fleet_file)).code == 0
    return store


def _remove_networks(lab: LabFixture, names: list[str]) -> None:
    for h in lab.hosts:
        with Host.open(h.uri, keepalive=False) as conn:
            for name in names:
                with contextlib.suppress(VirtfleetError):
                    networks.destroy(conn, name)
                with contextlib.suppress(VirtfleetError):
                    networks.undefine(conn, name)


@pytest.fixture
def cleanup(lab: LabFixture) -> Iterator[list[str]]:
    """Networks named in the yielded list are destroyed and undefined on every lab host."""
    names: list[str] = []
    yield names
    _remove_networks(lab, names)


# The tiny guest has no NIC driver. For the DHCP check, a second cpio archive appended to its
# initramfs (the kernel unpacks both; later files win) brings virtio-net, in dependency order,
# and an /init that asks for a lease on each NIC before printing the usual marker.
NET_MODULES = ("drivers/virtio/virtio_ring.ko", "drivers/virtio/virtio.ko",
               "drivers/virtio/virtio_pci_modern_dev.ko", "drivers/virtio/virtio_pci_legacy_dev.ko",
               "drivers/virtio/virtio_pci.ko", "net/core/failover.ko",
               "drivers/net/net_failover.ko", "drivers/net/virtio_net.ko")
DHCP_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in @MODULES@; do insmod /lib/netmods/$m; done
for i in /sys/class/net/eth*; do
  i=${i##*/}; ip link set $i up
  udhcpc -i $i -n -q -t 20 -T 1 -s /bin/true -x hostname:@HOST@ && echo "dhcp $i ok"
done
echo "@MARKER@"
while :; do sleep 3600; done
"""


def _dhcp_initrd(work: Path, hostname: str) -> Path:
    """The cached tiny guest's initramfs plus virtio-net and a DHCP-asking /init."""
    images = guest.ensure_images()
    deb = work / "deb"
    deb.mkdir()
    os.chmod(deb, 0o777)  # apt-get download runs as _apt
    package = images.version.split()[0]  # VERSION: the package, then more lines
    subprocess.run(["apt-get", "download", "-q", package], cwd=deb, check=True,
                   capture_output=True, timeout=600)
    root = work / "root"
    subprocess.run(["dpkg-deb", "-x", str(next(deb.glob("*.deb"))), str(root)], check=True,
                   timeout=300)
    [moddir] = list((root / "lib/modules").glob("*"))
    tree = work / "overlay"
    (tree / "lib/netmods").mkdir(parents=True)
    for rel in NET_MODULES:
        src = moddir / "kernel" / rel
        data = src.read_bytes() if src.is_file() else lzma.decompress(
            src.with_suffix(".ko.xz").read_bytes())
        (tree / "lib/netmods" / Path(rel).name).write_bytes(data)
    init = DHCP_INIT.replace("@MODULES@", " ".join(Path(r).name for r in NET_MODULES))
    (tree / "init").write_text(init.replace("@MARKER@", guest.MARKER).replace("@HOST@",
                                                                              hostname))
    (tree / "init").chmod(0o755)
    members = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    cpio = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], cwd=tree,
                          input="\n".join(members).encode() + b"\n", capture_output=True,
                          check=True, timeout=60).stdout
    out = work / "initrd-dhcp.img"
    out.write_bytes(images.initrd.read_bytes() + gzip.compress(cpio))
    out.chmod(0o644)
    return out


def _guest_with_nics(name: str, nets: list[str], initrd: Path | None = None) -> str:
    images = guest.ensure_images()
    d = Domain.parse(guest.domain_xml(name, images))
    if initrd is not None:
        d.os.initrd = str(initrd)
    for net in nets:
        d.devices.interfaces.append(build_interface(parse_network(f"network={net}"),
                                                    random_mac(set())))
    return d.to_xml()


def test_nat_and_isolated_networks_used_by_guests_on_two_hosts(
        lab: LabFixture, db: Path, cleanup: list[str], tmp_path: Path) -> None:
    cleanup.extend([NAT, ISO])
    two = lab.hosts[:2]
    for h in two:
        r = run_net(db, "net", "define", NAT, "--nat", "10.123.0.0/24", "--dhcp-range",
                    "10.123.0.10,10.123.0.99", "--host", h.name, "--start", "--autostart")
        assert r.code == 0, r.err
        assert r.out == f"Network {NAT} defined, started, marked autostart on {h.name}\n"
    r = run_net(db, "net", "define", ISO, "--isolated", "10.124.0.0/24", "--dhcp-range",
                "10.124.0.10,10.124.0.99", "--pod", two[0].pod, "--start", "--json")
    assert r.code == 0, r.err
    assert {row["host"] for row in r.json()} == {h.name for h in lab.hosts
                                                  if h.pod == two[0].pod}
    if two[1].pod != two[0].pod:
        r = run_net(db, "net", "define", ISO, "--isolated", "10.124.0.0/24", "--dhcp-range",
                    "10.124.0.10,10.124.0.99", "--host", two[1].name, "--start")
        assert r.code == 0, r.err

    # What libvirt reports, fleet-wide: both active, each on a bridge libvirt made.
    r = run_net(db, "net", "list", "--json")
    assert r.code == 0, r.err
    rows = {(n["host"], n["name"]): n for n in r.json()}
    for h in two:
        nat, iso = rows[(h.name, NAT)], rows[(h.name, ISO)]
        assert nat["active"] and nat["autostart"] and nat["mode"] == "nat"
        assert nat["subnets"] == ["10.123.0.0/24"] and nat["bridge"]
        assert iso["active"] and iso["mode"] == "isolated" and iso["bridge"]

    # An overlapping network is refused everywhere, before anything is made.
    r = run_net(db, "net", "define", "itest-clash", "--routed", "10.123.0.0/16", "--all")
    assert r.code == 2 and "overlaps network 'itest-nat' (10.123.0.0/24)" in r.err
    assert all(n["name"] != "itest-clash" for n in run_net(db, "net", "list",
                                                           "--json").json())

    # A real tiny guest on each host, with a NIC on each network.
    vm = f"itest-net-{os.getpid()}"
    initrd = _dhcp_initrd(tmp_path, vm)
    made: list[tuple[Host, str]] = []
    try:
        for h in two:
            conn = Host.open(h.uri, keepalive=False)
            made.append((conn, vm))
            conn.define_domain(_guest_with_nics(vm, [NAT, ISO], initrd))
            conn.start_domain(vm)
        for (conn, _), h in zip(made, two, strict=True):
            live = Domain.parse(conn.domain_xml(vm))
            nics = list(live.devices.interfaces)
            assert [n.source_network for n in nics] == [NAT, ISO]
            for nic in nics:  # attached: QEMU's tap device sits on the network's bridge
                assert nic.element.find("target") is not None
                assert nic.element.find("source").get("bridge") == rows[  # type: ignore[union-attr]
                    (h.name, nic.source_network)]["bridge"]
            log = outer_log(h, vm)
            deadline = time.monotonic() + 120
            while not guest.seen_marker(log) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert guest.seen_marker(log), f"guest on {h.name} did not come up; see {log}"

        # Each guest got a lease on both networks from the host's own dnsmasq.
        for (conn, _), h in zip(made, two, strict=True):
            macs = {n.source_network: n.mac for n in Domain.parse(
                conn.domain_xml(vm)).devices.interfaces}
            for net, prefix in ((NAT, "10.123.0."), (ISO, "10.124.0.")):
                r = run_net(db, "net", "dhcp-leases", net, "--host", h.name, "--json")
                assert r.code == 0, r.err
                leases = [x for x in r.json() if x["mac"] == macs[net]]
                assert leases and leases[0]["ip"].startswith(prefix), (r.out, log_text(h, vm))

        # Preflight: the guests' networks are there and active.
        checks = {c["host"]: c for c in run(db, "host", "check", "--json").json()}
        for h in two:
            assert not [p for p in checks[h.name]["problems"] if "network" in p
                        or "bridge" in p], checks[h.name]
        # Destroying a network the guests need shows up in the preflight.
        r = run_net(db, "net", "destroy", ISO, "--host", two[0].name)
        assert r.code == 0, r.err
        [c] = run(db, "host", "check", "--json", two[0].name).json()
        assert f"network '{ISO}' is not active; needed by VM {vm}" in c["problems"]
    finally:
        for conn, name in made:
            with contextlib.suppress(VirtfleetError):
                conn.destroy_domain(name)
            with contextlib.suppress(VirtfleetError):
                conn.undefine_domain(name)
            conn.close()

    # The lifecycle verbs, fleet-wide, as cleanup.
    r = run_net(db, "net", "autostart", NAT, "--disable", "--all", "--json")
    assert {row["host"] for row in r.json() if row["ok"]} == {h.name for h in two}
    for name in (NAT, ISO):
        run_net(db, "net", "destroy", name, "--all")
        r = run_net(db, "net", "undefine", name, "--all", "--json")
        assert {row["host"] for row in r.json() if row["ok"]} >= {h.name for h in two}
    assert not [n for n in run_net(db, "net", "list", "--json").json()
                if n["name"] in (NAT, ISO)]


def log_text(h: object, vm: str) -> str:
    return outer_log(h, vm).read_text(errors="replace")  # type: ignore[arg-type]


def test_apply_puts_declared_networks_on_every_hypervisor(
        lab: LabFixture, tmp_path: Path, cleanup: list[str]) -> None:
    cleanup.extend(["itest-site", "itest-pod"])
    data = yaml.safe_load(lab.fleet_file.read_text())
    site = data["sites"][0]
    site["libvirt_networks"] = [{"name": "itest-site", "mode": "nat",
                                 "subnet": "10.125.0.0/24",
                                 "dhcp": [{"start": "10.125.0.10", "end": "10.125.0.50"}]}]
    site["pods"][0]["libvirt_networks"] = [{"name": "itest-pod", "mode": "isolated",
                                            "subnet": "10.126.0.0/24"}]
    f = tmp_path / "fleet.yaml"
    f.write_text(yaml.safe_dump(data))
    db = tmp_path / "store.db"
    r = run(db, "apply", "-f", str(f), "--dry-run")
    assert r.code == 0, r.err
    pod1 = [h for h in lab.hosts if h.pod == site["pods"][0]["name"]]
    wanted = len(lab.hosts) + len(pod1)
    assert f"Networks: would change {wanted} of {wanted}" in r.out
    with Host.open(lab.hosts[0].uri, keepalive=False) as h:
        assert not networks.has_network(h, "itest-site")  # a dry run makes nothing
    r = run(db, "apply", "-f", str(f))
    assert r.code == 0, r.out + r.err
    assert f"Networks: did change {wanted} of {wanted}" in r.out
    r = run(db, "apply", "-f", str(f))
    assert r.code == 0 and f"Networks: did change 0 of {wanted}" in r.out
    for h in lab.hosts:
        with Host.open(h.uri, keepalive=False) as conn:
            have = {n.name: n for n in networks.list_networks(conn)}
            assert have["itest-site"].active and have["itest-site"].autostart
            assert ("itest-pod" in have) == (h in pod1)


def test_preflight_names_a_missing_host_bridge(lab: LabFixture, db: Path,
                                               cleanup: list[str]) -> None:
    cleanup.append("itest-br")
    h = lab.hosts[2]
    r = run_net(db, "net", "define", "itest-br", "--bridge", "itbr0", "--host", h.name,
                "--start")
    assert r.code == 0, r.err
    [c] = run(db, "host", "check", "--json", h.name).json()
    assert ("network 'itest-br' uses bridge 'itbr0', which this host does not have"
            in c["problems"]), c


def _net_state(h: LabHost, name: str) -> tuple[bool, bool] | None:
    """(active, persistent) of `name` on `h` as libvirt itself says, or None if it has none."""
    with Host.open(h.uri, keepalive=False) as conn:
        found = [n for n in networks.list_networks(conn) if n.name == name]
    return None if not found else (found[0].active, found[0].persistent)


def test_undefine_of_an_active_network_is_refused_or_destroys_it(
        lab: LabFixture, db: Path, cleanup: list[str]) -> None:
    """Regression (issue 10, defect 5): `net undefine` of a running network said "undefined"
    on every host while libvirt kept it active, transient, holding its subnet."""
    cleanup.append("itest-undef")
    hosts = lab.hosts[:2]
    r = run_net(db, "net", "define", "itest-undef", "--isolated", "10.126.0.0/24", "--host",
                hosts[0].name, "--start")
    assert r.code == 0, r.err
    r = run_net(db, "net", "define", "itest-undef", "--isolated", "10.126.0.0/24", "--host",
                hosts[1].name)
    assert r.code == 0, r.err
    scope = ["--pod", hosts[0].pod] if hosts[0].pod == hosts[1].pod else ["--all"]
    r = run_net(db, "net", "undefine", "itest-undef", *scope, "--json")
    assert r.code == 1
    rows = {row["host"]: row for row in r.json()}
    assert not rows[hosts[0].name]["ok"] and "is active; destroy it first" in \
        rows[hosts[0].name]["result"]
    assert rows[hosts[1].name] == {"host": hosts[1].name, "network": "itest-undef",
                                   "ok": True, "result": "undefined"}
    assert _net_state(hosts[0], "itest-undef") == (True, True)  # untouched, still persistent
    assert _net_state(hosts[1], "itest-undef") is None  # it was not running: gone
    r = run_net(db, "net", "undefine", "itest-undef", "--host", hosts[0].name, "--destroy")
    assert r.code == 0 and r.out == \
        f"Network itest-undef destroyed and undefined on {hosts[0].name}\n", r.err
    assert _net_state(hosts[0], "itest-undef") is None  # not left running, transient


def test_define_start_that_fails_leaves_nothing_and_can_run_again(
        lab: LabFixture, db: Path, cleanup: list[str]) -> None:
    """Regression (issue 10, defect 6): `net define --start` whose start failed left the
    network defined, and the same command then failed with "already exists". A NAT network on
    the lab host's own subnet is defined by libvirt but refused at start (the route is
    taken)."""
    cleanup.append("itest-clash")
    h = lab.hosts[0]
    subnet = str(ipaddress.IPv4Interface(f"{h.address}/24").network)
    cmd = ["net", "define", "itest-clash", "--nat", subnet, "--host", h.name, "--start"]
    for _ in range(2):  # the second run fails the same way, not with "already exists"
        r = run_net(db, *cmd)
        assert r.code == 1 and r.out == "", r.err
        assert _net_state(h, "itest-clash") is None
        assert "already exists" not in r.err, r.err
        assert "itest-clash was undefined again, nothing was left behind" in r.err, r.err
    # Several hosts, one of which cannot start it (its route is taken there only): the
    # network is taken back on every other host too, and once the cause is gone the same
    # command does the job everywhere.
    blocked = lab.hosts[1]
    cmd = ["net", "define", "itest-clash", "--nat", "10.127.0.0/24", "--all", "--start",
           "--json"]
    ip = ["ip", "netns", "exec", str(blocked.netns), "ip"]
    subprocess.run([*ip, "link", "add", "vfclash0", "type", "veth", "peer", "name",
                    "vfclash1"], check=True)
    try:
        subprocess.run([*ip, "addr", "add", "10.127.0.1/24", "dev", "vfclash0"], check=True)
        for dev in ("vfclash0", "vfclash1"):
            subprocess.run([*ip, "link", "set", dev, "up"], check=True)
        r = run_net(db, *cmd)
    finally:
        subprocess.run([*ip, "link", "del", "vfclash0"], check=True)
    assert r.code == 1, r.err
    rows = {row["host"]: row for row in r.json()}
    assert not rows[blocked.name]["ok"] and "was undefined again" in \
        rows[blocked.name]["result"], rows
    for x in lab.hosts:
        if x.name != blocked.name:
            assert rows[x.name] == {"host": x.name, "network": "itest-clash", "ok": False,
                                    "result": f"undefined again ({blocked.name} failed)"}
        assert _net_state(x, "itest-clash") is None, x.name
    r = run_net(db, *cmd)
    assert r.code == 0, r.err
    assert all(_net_state(x, "itest-clash") == (True, True) for x in lab.hosts)
