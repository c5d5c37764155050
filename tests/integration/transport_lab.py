"""A lab reached over qemu+ssh or qemu+tls, for one test module, and the fleet flow run on it.

    @pytest.fixture(scope="module")
    def tl(tmp_path_factory): yield from transport_lab("ssh", tmp_path_factory)

    tl.cli("list")                 # the CLI with the lab's transport directory and its own store
    tl.copy_client(tmp_path)       # a copy of the client side to spoil (a key, a certificate)
    fleet_flow(tl)                 # apply, pools, a VM, a sealed template, clones: all over it

Each module gets its own two-hypervisor lab, named after VIRTFLEET_TEST_LAB so that helpers'
labs never meet, and takes it down at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.conftest import LAB_NAME, REQUIRE_ENV, require_lab
from tests.unit.cli import Result, run
from tests.unit.tools import require_tool
from virtfleet.lab import guest, procs
from virtfleet.lab.lab import Lab
from virtfleet.lab.state import LabHost, LabState


@dataclass
class TransportLab:
    lab: Lab
    state: LabState
    db: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def client_dir(self) -> Path:
        assert self.state.client_dir is not None
        return Path(self.state.client_dir)

    @property
    def hosts(self) -> list[LabHost]:
        return self.state.hosts

    @property
    def fleet_file(self) -> Path:
        assert self.state.fleet_file is not None
        return Path(self.state.fleet_file)

    def cli(self, *args: str, client: Path | None = None, db: Path | None = None,
            env: dict[str, str] | None = None, timeout: float = 600) -> Result:
        return run(db or self.db, *args, timeout=timeout, env={
            "VIRTFLEET_TRANSPORT_DIR": str(client or self.client_dir),
            "VIRTFLEET_VIRT_TYPE": "qemu", **self.env, **(env or {})})

    def copy_client(self, where: Path) -> Path:
        """A private copy of the lab's client side (keys, known_hosts, certificates)."""
        dest = where / "client"
        shutil.copytree(self.client_dir, dest, symlinks=False,
                        ignore=shutil.ignore_patterns("ssh", "ssh_config", ".*"))
        os.chmod(dest, 0o700)
        return dest

    def restart_libvirtd(self, host: LabHost) -> None:
        """Stop a hypervisor's libvirtd and start it again (it rereads its certificates)."""
        pid = host.libvirtd_pid
        assert pid is not None
        procs.terminate([pid])
        fresh = self.lab.restart_host(host.name)
        host.libvirtd_pid = fresh.libvirtd_pid


def transport_lab(transport: str,
                  factory: pytest.TempPathFactory) -> Iterator[TransportLab]:
    require_lab()
    if transport == "ssh":
        require_tool("/usr/sbin/sshd", "openssh-server", REQUIRE_ENV)
        require_tool("ssh-keyscan", "openssh-client", REQUIRE_ENV)
    else:
        require_tool("certtool", "gnutls-bin", REQUIRE_ENV)
    lab = Lab(f"{LAB_NAME}-{transport}"[:24])
    try:
        state = lab.up(hosts=2, pods=1, transport=transport)
        yield TransportLab(lab, state, factory.mktemp(f"store-{transport}") / "store.db")
    finally:
        lab.down()


def qemu_namespaces(uuid: str) -> list[str]:
    """The network namespace of each QEMU process running this domain, from this machine's
    process table (ground truth: every lab hypervisor's QEMU is visible here)."""
    out = subprocess.run(["ps", "-e", "-ww", "-o", "pid=,args="], capture_output=True,
                         text=True, check=True).stdout  # -ww: whole command lines
    spaces = []
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        if "qemu-system" in args and f"-uuid {uuid}" in args:
            spaces.append(subprocess.run(["ip", "netns", "identify", pid], capture_output=True,
                                         text=True, check=False).stdout.strip())
    return spaces


def fleet_flow(tl: TransportLab) -> None:
    """The main job of the README over this lab's transport: the inventory (host keys pinned
    for ssh), pod pools, a VM from the tiny root disk uploaded into the pod's pool, a template
    sealed from it, and two linked clones started across the pod."""
    pod = tl.hosts[0].pod
    first = tl.hosts[0].name
    r = tl.cli("apply", "-f", str(tl.fleet_file), "--accept-new")
    assert r.code == 0, r.err
    r = tl.cli("pool", "apply-pod", "--all")
    assert r.code == 0, r.out + r.err
    listed = tl.cli("list", "--json")
    assert listed.code == 0 and listed.json() == [], listed.err
    images = guest.ensure_images()
    disk = guest.root_disk()
    r = tl.cli("vol", "upload", str(disk), "flow-base.qcow2", "--host", first,
               "--pool", f"{pod}-shared")
    assert r.code == 0, r.err
    r = tl.cli("vm", "create", "flow-base", "--host", first, "--memory", "96M", "--vcpus", "1",
               "--disk", f"path={tl.state.pods[pod]}/flow-base.qcow2", "--kernel",
               str(images.kernel), "--initrd", str(images.initrd), "--cmdline",
               "console=ttyS0 quiet", "--network", "network=default", "--no-start")
    assert r.code == 0, r.err
    r = tl.cli("template", "create", "flow-tpl", "--from", "flow-base")
    assert r.code == 0, r.err
    r = tl.cli("vm", "clone", "flow-tpl", "flow", "--count", "2", "--pod", pod, "--start",
               "--cpu-ratio", "4")
    assert r.code == 0, r.out + r.err
    vms = {v["name"]: v for v in tl.cli("list", "--json").json()}
    assert {"flow-base", "flow-tpl", "flow-1", "flow-2"} <= set(vms)
    netns = {h.name: h.netns for h in tl.hosts}
    for name in ("flow-1", "flow-2"):
        assert vms[name]["state"] == "running", vms[name]
        # running, once, on the hypervisor the list says
        assert qemu_namespaces(vms[name]["uuid"]) == [netns[vms[name]["host"]]], name

    # vm migrate is peer to peer: the source hypervisor's libvirtd opens the target's URI
    # itself, over the same transport, with its own credentials (the lab gives each one root's
    # own ssh key and known_hosts, or a client certificate in its /etc/pki).
    source = vms["flow-1"]["host"]
    target = next(h.name for h in tl.hosts if h.name != source)
    r = tl.cli("vm", "migrate", "flow-1", "--to", target, "--cpu-ratio", "4", "--json")
    assert r.code == 0, r.out + r.err
    assert (r.json()["source"], r.json()["target"], r.json()["mode"]) == (source, target, "live")
    moved = {v["name"]: v for v in tl.cli("list", "--json").json()}["flow-1"]
    assert (moved["host"], moved["state"]) == (target, "running")
    assert qemu_namespaces(moved["uuid"]) == [netns[target]]


def skip_or_fail(why: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(why, pytrace=False)
    pytest.skip(why)
