"""qemu+ssh on the lab: each hypervisor runs its own sshd; virtfleet pins host keys only when
told to, runs the whole fleet flow over ssh, keeps one ssh process per host in the controller,
and says in one line why an ssh connection failed (unknown, changed or refused key)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.transport_lab import TransportLab, fleet_flow, transport_lab
from tests.unit.cli import Result, running_controller
from virtfleet.lab import sshd
from virtfleet.lab.state import LabHost

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TransportLab]:
    yield from transport_lab("ssh", tmp_path_factory)


@pytest.fixture(scope="module")
def inventory(tl: TransportLab) -> TransportLab:
    """The lab in the module's store, its host keys pinned in its client directory."""
    r = tl.cli("apply", "-f", str(tl.fleet_file), "--accept-new")
    assert r.code == 0, r.err
    return tl


def true_fingerprint(host: LabHost) -> str:
    """What the hypervisor's sshd really presents, read from its own key file."""
    return sshd.host_key(Path(host.dir)).fingerprint


def only_virtfleet_lines(r: Result) -> None:
    """One clear line per failure: no ssh banner, no libvirt log line on the terminal."""
    assert r.err and all(line.startswith("virtfleet: ") for line in r.err.splitlines()), r.err
    assert "@@@" not in r.err and "Connection reset by peer" not in r.err, r.err


def test_apply_shows_each_new_host_key_and_pins_it_only_when_accepted(
        tl: TransportLab, tmp_path: Path) -> None:
    client = tl.copy_client(tmp_path)
    (client / "known_hosts").write_text("")
    db = tmp_path / "store.db"
    r = tl.cli("apply", "-f", str(tl.fleet_file), client=client, db=db)
    assert r.code == 2, r.out + r.err
    assert "--accept-new" in r.err and "nothing was changed" in r.err
    assert r.out == ""
    for h in tl.hosts:  # the fingerprints to compare are the ones the hosts really have
        assert f"virtfleet: ssh host key of {h.name} ({h.address}): ED25519 " \
               f"{true_fingerprint(h)} NOT PINNED" in r.err, r.err
    assert (client / "known_hosts").read_text() == ""
    assert tl.cli("host", "list", "--json", client=client, db=db).json() == []

    r = tl.cli("apply", "-f", str(tl.fleet_file), "--accept-new", client=client, db=db)
    assert r.code == 0, r.err
    for h in tl.hosts:
        assert f"ED25519 {true_fingerprint(h)} pinned now" in r.out
    pinned = (client / "known_hosts").read_text().splitlines()
    assert sorted(line.split()[0] for line in pinned) == sorted(h.address for h in tl.hosts)
    assert stat.S_IMODE(os.stat(client / "known_hosts").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(client).st_mode) == 0o700
    config = (client / "ssh_config").read_text()
    assert "StrictHostKeyChecking yes" in config and "StrictHostKeyChecking no" not in config
    listed = tl.cli("hostkey", "list", "--json", client=client, db=db).json()["hosts"]
    assert {k["host"]: k["fingerprint"] for k in listed} == \
        {h.name: true_fingerprint(h) for h in tl.hosts}
    again = tl.cli("apply", "-f", str(tl.fleet_file), client=client, db=db)
    assert again.code == 0 and "pinned now" not in again.out, again.out + again.err
    assert (client / "known_hosts").read_text().splitlines() == pinned


def test_host_add_refuses_an_unknown_key_and_pins_it_on_accept_new(
        tl: TransportLab, tmp_path: Path) -> None:
    client = tl.copy_client(tmp_path)
    (client / "known_hosts").write_text("")
    db = tmp_path / "store.db"
    h = tl.hosts[0]
    args = ["host", "add", h.name, "--uri", h.uri, "--site", "s", "--pod", "p"]
    r = tl.cli(*args, client=client, db=db)
    assert r.code == 2 and "--accept-new" in r.err, r.err
    assert true_fingerprint(h) in r.err
    assert tl.cli("host", "list", "--json", client=client, db=db).json() == []
    r = tl.cli(*args, "--accept-new", client=client, db=db)
    assert r.code == 0, r.err
    assert f"ED25519 {true_fingerprint(h)} pinned now" in r.out
    assert tl.cli("host", "info", h.name, client=client, db=db).code == 0


def test_the_fleet_flow_runs_over_ssh(inventory: TransportLab) -> None:
    tl = inventory
    fleet_flow(tl)


def test_an_unknown_host_key_is_refused_in_one_line(inventory: TransportLab,
                                                    tmp_path: Path) -> None:
    tl = inventory
    client = tl.copy_client(tmp_path)
    (client / "known_hosts").write_text("")
    h = tl.hosts[0]
    r = tl.cli("host", "info", h.name, client=client)
    assert r.code == 1
    assert f"virtfleet: {h.name}: host-unavailable: ssh host key of {h.address} is not " \
           "pinned" in r.err, r.err
    only_virtfleet_lines(r)


def test_a_changed_host_key_is_refused_and_never_replaced(inventory: TransportLab,
                                                          tmp_path: Path) -> None:
    tl = inventory
    client = tl.copy_client(tmp_path)
    h = tl.hosts[0]
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                   check=True, timeout=30)
    kind, blob = other.with_suffix(".pub").read_text().split()[:2]
    lines = [f"{h.address} {kind} {blob}" if line.split()[0] == h.address else line
             for line in (client / "known_hosts").read_text().splitlines()]
    (client / "known_hosts").write_text("\n".join(lines) + "\n")
    r = tl.cli("host", "info", h.name, client=client)
    assert r.code == 1
    assert f"{h.name}: host-unavailable: ssh host key CHANGED since it was pinned; it now " \
           f"offers ED25519 {true_fingerprint(h)}" in r.err, r.err
    only_virtfleet_lines(r)
    # Pinning again refuses too (exit 4) and leaves the pinned key as it was.
    before = (client / "known_hosts").read_text()
    r = tl.cli("hostkey", "pin", h.name, "--accept-new", client=client)
    assert r.code == 4 and "CHANGED" in r.err, r.err
    assert (client / "known_hosts").read_text() == before
    # The operator's way out: forget it, then pin what the host has now.
    assert tl.cli("hostkey", "forget", h.name, client=client).code == 0
    r = tl.cli("hostkey", "pin", h.name, "--accept-new", client=client)
    assert r.code == 0 and true_fingerprint(h) in r.out, r.err
    assert tl.cli("host", "info", h.name, client=client).code == 0


def test_a_refused_client_key_is_said_in_one_line(inventory: TransportLab, tmp_path: Path) -> None:
    tl = inventory
    client = tl.copy_client(tmp_path)
    for f in ("id_ed25519", "id_ed25519.pub"):
        (client / f).unlink()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                    str(client / "id_ed25519")], check=True, timeout=30)
    h = tl.hosts[1]
    r = tl.cli("host", "info", h.name, client=client)
    assert r.code == 1
    assert f"{h.name}: host-unavailable: ssh refused our key as root (Permission denied " \
           "(publickey))" in r.err, r.err
    only_virtfleet_lines(r)
    # ... and the hypervisor's sshd saw exactly that: a key it does not know, no login.
    log = (Path(h.dir) / "log" / "sshd.log").read_text()
    assert "Failed publickey for root" in log or "Connection closed by authenticating user" \
        in log, log[-2000:]


def _ssh_children(pid: int) -> list[int]:
    """The ssh processes `pid` started (libvirt runs one per qemu+ssh connection)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            argv0 = (entry / "cmdline").read_bytes().split(b"\0")[0].decode()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and Path(argv0).name == "ssh":
            out.append(int(entry.name))
    return out


def _sessions(host: LabHost) -> int:
    """sshd sessions open on the hypervisor (in its namespace): ground truth on its side."""
    out = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True, text=True,
                         check=True).stdout.split()
    n = 0
    for pid in out:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        n += bool(re.match(r"sshd: root@notty", title))
    return n


def test_the_controller_keeps_one_ssh_process_per_host(inventory: TransportLab) -> None:
    tl = inventory
    with running_controller(tl.db, env={"VIRTFLEET_TRANSPORT_DIR": str(tl.client_dir)}) as serve:
        deadline = time.monotonic() + 60
        while len(_ssh_children(serve.pid)) < len(tl.hosts):
            assert time.monotonic() < deadline, "the controller never connected"
            time.sleep(0.2)
        first = sorted(_ssh_children(serve.pid))
        for _ in range(3):
            r = tl.cli("list")
            assert r.code == 0 and "from the controller" in r.err, r.err
            assert tl.cli("sync").code == 0
        assert sorted(_ssh_children(serve.pid)) == first  # the same processes, not new ones
        assert len(first) == len(tl.hosts)
        assert all(_sessions(h) == 1 for h in tl.hosts)
