"""One lab hypervisor's daemons: their private configuration, starting them, waiting for them.

Each hypervisor gets its own /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt and
/var/cache/libvirt (directories under the lab's state dir, bind-mounted inside its namespaces),
so it has its own domains, networks and pools exactly as a separate machine would.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path

from virtfleet.config import Timeouts
from virtfleet.errors import HostUnavailable, LabError, OperationTimeout
from virtfleet.lab import netns, procs, sshd, transports
from virtfleet.lab.names import PRIVATE_DIRS, LabNames
from virtfleet.lab.run import daemon_env, last_line, run
from virtfleet.lab.state import LabHost

READY_TIMEOUT = 30.0

ConfValue = str | int | list[str]


def _render_conf(settings: dict[str, ConfValue]) -> str:
    """libvirt's config syntax: `key = "string"`, `key = 12`, `key = [ "a", "b" ]`."""

    def quote(s: str) -> str:
        if any(ch in s for ch in '"\\\n'):
            raise LabError(f"config value {s!r} contains a quote, backslash or newline")
        return f'"{s}"'

    lines = []
    for key, value in settings.items():
        if isinstance(value, bool):
            raise LabError(f"config value for {key} must be int or str, not bool")
        if isinstance(value, int):
            text = str(value)
        elif isinstance(value, list):
            text = "[ " + ", ".join(quote(v) for v in value) + " ]"
        else:
            text = quote(value)
        lines.append(f"{key} = {text}")
    return "# Written by virtfleet lab; this hypervisor's private copy.\n" + "\n".join(lines) + "\n"


def libvirtd_conf(address: str, listen: dict[str, ConfValue] | None = None) -> str:
    """`listen`: the listeners (transports.listen_settings); qemu+tcp without auth by default."""
    return _render_conf({
        **(listen if listen is not None else transports.listen_settings(None, address)),
        "host_uuid": str(uuid.uuid4()),
        # Room for a fleet-scale client: 2,000+ connections to one daemon.
        "max_clients": 5000,
        "max_anonymous_clients": 5000,
        "max_queued_clients": 5000,
        "min_workers": 4,
        "max_workers": 64,
        "prio_workers": 8,
        "max_client_requests": 16,
        "log_outputs": "3:file:/var/log/libvirt/libvirtd.log",
    })


def virtlogd_conf() -> str:
    return _render_conf({"log_outputs": "3:file:/var/log/libvirt/virtlogd.log"})


def qemu_conf(leases: bool = False) -> str:
    return _render_conf({
        # The lab's daemons are root in throwaway namespaces; QEMU runs as root with no
        # relabelling so it can read the shared guest kernel and the pods' directories.
        "user": "root",
        "group": "root",
        "dynamic_ownership": 0,
        "remember_owner": 0,
        "security_driver": "none",
        # No cgroups (they are machine-wide, and two lab hosts may run a domain of the same name
        # during a migration) and no per-domain /dev namespace (a restarted libvirtd joins the
        # mount namespace of a surviving QEMU).
        "cgroup_controllers": [],
        "namespaces": [],
        # Disk leases (HA's second guard, never a substitute for fencing): virtlockd, started
        # before libvirtd, holds a lease per disk in the pod's lockspace (qemu-lockd.conf).
        **({"lock_manager": "lockd"} if leases else {}),
    })


def qemu_lockd_conf(lockspace: str) -> str:
    """Every disk gets a lease (a hash of its path) in `lockspace`, a directory all the pod's
    hypervisors share; a disk whose lease another host holds does not start."""
    return _render_conf({"auto_disk_leases": 1, "require_lease_for_disks": 1,
                         "file_lockspace_dir": lockspace})


def use_leases(host_dir: Path, lockspace: Path) -> None:
    """Turn on libvirt's lock manager for a prepared hypervisor (nsboot then starts virtlockd)."""
    lockspace.mkdir(parents=True, exist_ok=True)
    etc = host_dir / "etc"
    (etc / "qemu.conf").write_text(qemu_conf(leases=True))
    (etc / "qemu-lockd.conf").write_text(qemu_lockd_conf(str(lockspace)))
    (etc / "virtlockd.conf").write_text(_render_conf(
        {"log_outputs": "3:file:/var/log/libvirt/virtlockd.log"}))


def prepare_dirs(names: LabNames, index: int,
                 client: transports.ClientSide | None = None) -> Path:
    """Fresh private directories and configuration for hypervisor `index`, reached over
    `client`'s transport (qemu+tcp if None)."""
    host_dir = names.host_dir(index)
    for sub in PRIVATE_DIRS:
        (host_dir / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("lib/qemu", "lib/images", "lib/dnsmasq", "log/qemu", "cache/qemu",
                "etc/qemu/networks/autostart", "etc/storage/autostart", "etc/nwfilter"):
        (host_dir / sub).mkdir(parents=True, exist_ok=True)
    etc = host_dir / "etc"
    if client is not None:
        transports.prepare_host(client, names, index, names.host_name(index))
    (etc / "libvirtd.conf").write_text(
        libvirtd_conf(names.address(index),
                      transports.listen_settings(client, names.address(index), host_dir)))
    (etc / "virtlogd.conf").write_text(virtlogd_conf())
    (etc / "qemu.conf").write_text(qemu_conf())
    # No network or pool is written here: the lab's fleet file declares them, and `apply` and
    # `pool apply-pod` make them, as on a real estate.
    return host_dir




def _boot_argv(host_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "virtfleet.lab.nsboot", str(host_dir), *extra]


def start(host: LabHost) -> None:
    """Start a hypervisor's daemons in its namespace, in a fresh private mount namespace."""
    argv = ["ip", "netns", "exec", host.netns, "unshare", "--mount", "--propagation", "private",
            *_boot_argv(Path(host.dir))]
    _run_boot(argv, host)


def restart(host: LabHost) -> None:
    """Start whichever of a hypervisor's daemons is not running, keeping what still runs.

    A surviving process (virtlogd, a QEMU) still holds the hypervisor's mount namespace, so the
    new libvirtd joins it and finds the same private directories and the running guests.
    """
    survivors = [p for p in netns.netns_pids(host.netns) if procs.alive(p)]
    if not survivors:
        start(host)
        return
    argv = ["nsenter", "-t", str(survivors[0]), "--mount", "--net", "--",
            *_boot_argv(Path(host.dir), "--no-mount")]
    _run_boot(argv, host)


def _run_boot(argv: list[str], host: LabHost) -> None:
    try:
        run(argv, f"{host.name}: starting libvirtd", timeout=90, env=daemon_env())
    except LabError as exc:
        tail = _log_tail(host)  # libvirtd's own reason is in its log, not on stderr
        raise LabError(exc.message + (f" [libvirtd.log: {tail}]" if tail else "")) from None
    run_dir = Path(host.dir) / "run"
    host.libvirtd_pid = procs.read_pid(run_dir / "libvirtd.pid")
    host.virtlogd_pid = procs.read_pid(run_dir / "virtlogd.pid")


def _log_tail(host: LabHost) -> str:
    try:
        return last_line((host.log_dir / "libvirtd.log").read_text(errors="replace"))
    except OSError:
        return ""


def _sshd_answers(host: LabHost) -> bool:
    """Its sshd has written its pid file (after binding) and takes a TCP connection."""
    pid = procs.read_pid(sshd.pid_path(Path(host.dir)))
    if pid is None or not procs.alive(pid):
        return False
    try:
        with socket.create_connection((host.address, sshd.SSH_PORT), timeout=1.0):
            return True
    except OSError:
        return False


def wait_ready(host: LabHost, timeout: float = READY_TIMEOUT) -> float:
    """Wait until the daemon answers an RPC (and a qemu+ssh host's sshd a connection); return
    how long that took (seconds)."""
    from virtfleet.virt.host import Host  # the only way in to libvirt

    t0 = time.monotonic()
    deadline = t0 + timeout
    last = ""
    with_sshd = sshd.config_path(Path(host.dir)).exists()
    while True:
        pid = host.libvirtd_pid
        if pid is None or not procs.alive(pid):
            tail = _log_tail(host)
            raise LabError(f"{host.name}: libvirtd exited during start"
                           + (f" ({tail})" if tail else f"; see {host.log_dir}/libvirtd.log"))
        try:
            Host.open(host.admin_uri, Timeouts(connect=2.0), label=host.name).close()
            if not with_sshd or _sshd_answers(host):
                return time.monotonic() - t0
            last = f"its sshd does not answer at {host.address}:{sshd.SSH_PORT}"
        except (HostUnavailable, OperationTimeout) as exc:
            last = exc.message
        if time.monotonic() >= deadline:
            raise LabError(f"{host.name}: libvirtd at {host.uri} did not answer within "
                           f"{timeout:g}s ({last})")
        time.sleep(0.1)


def check_tools(transport: str = "tcp") -> None:
    """The programs a lab needs, named in one error rather than failing halfway."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"])
    missing = [t for t in ("ip", "unshare", "nsenter", "mount", "libvirtd", "virtlogd")
               if shutil.which(t, path=search) is None]
    if missing:
        raise LabError(f"lab needs {', '.join(missing)}: install iproute2, util-linux and "
                       "libvirt-daemon-system")
    extra = {"ssh": [("sshd", "openssh-server"), ("ssh-keygen", "openssh-client"),
                     ("ssh-keyscan", "openssh-client"), ("ssh", "openssh-client")],
             "tls": [("certtool", "gnutls-bin")]}.get(transport, [])
    absent = [f"{t} ({pkg})" for t, pkg in extra if shutil.which(t, path=search) is None]
    if absent:
        raise LabError(f"a qemu+{transport} lab needs {', '.join(absent)}")
    if os.geteuid() != 0:
        raise LabError("lab needs root: it creates network namespaces and starts libvirtd")
