"""Runs inside a lab hypervisor's namespaces: bind its private directories, start its daemons.

Invoked as `ip netns exec NS unshare -m --propagation private python -m virtfleet.lab.nsboot DIR`
for a fresh hypervisor, or through `nsenter` into a surviving process's namespaces with
`--no-mount` to restart a daemon that died. It returns once both daemons have forked into the
background; the daemons keep the mount namespace (and its bind mounts) alive, and the mounts
vanish with the last of them, so they can never leak onto the host.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
from pathlib import Path

from virtfleet.lab import procs, sshd, transports
from virtfleet.lab.names import PRIVATE_DIRS


class BootError(Exception):
    """One line for the caller (daemon.py turns it into a LabError)."""


def _alive(pidfile: Path) -> bool:
    # A killed daemon may linger as a zombie until init reaps it; that one is gone too.
    pid = procs.read_pid(pidfile)
    return pid is not None and procs.alive(pid)


def _start(argv: list[str]) -> None:
    # Daemons get /dev/null for stdio so they never hold our caller's pipes open.
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, check=False, timeout=60)
    if proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
        raise BootError(f"{argv[0]} exited with status {proc.returncode}: {detail}")


def boot(host_dir: Path, mount: bool) -> None:
    if mount:
        for sub, target in PRIVATE_DIRS.items():
            Path(target).mkdir(parents=True, exist_ok=True)
            proc = subprocess.run(["mount", "--bind", str(host_dir / sub), target],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise BootError(f"bind mount over {target} failed: {proc.stderr.strip()}")
        # qemu+ssh/tls labs: root's own ~/.ssh and /etc/pki, for migrating to its peers.
        for sub, target in transports.PEER_DIRS.items():
            if (host_dir / sub).is_dir():
                Path(target).mkdir(mode=0o700 if target.endswith(".ssh") else 0o755,
                                   parents=True, exist_ok=True)
                proc = subprocess.run(["mount", "--bind", str(host_dir / sub), target],
                                      capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    raise BootError(f"bind mount over {target} failed: {proc.stderr.strip()}")
    # One daemon may hold thousands of client connections; each is a file descriptor.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    run, etc = host_dir / "run", host_dir / "etc"
    # The lock manager's daemon first: libvirtd's lockd plugin talks to it at every start.
    if (etc / "virtlockd.conf").exists() and not _alive(run / "virtlockd.pid"):
        _start(["virtlockd", "-d", "-f", str(etc / "virtlockd.conf"),
                "-p", str(run / "virtlockd.pid")])
    if not _alive(run / "virtlogd.pid"):
        _start(["virtlogd", "-d", "-f", str(etc / "virtlogd.conf"),
                "-p", str(run / "virtlogd.pid")])
    if not _alive(run / "libvirtd.pid"):
        _start(["libvirtd", "-d", "--listen", "-f", str(etc / "libvirtd.conf"),
                "-p", str(run / "libvirtd.pid")])
    # A qemu+ssh hypervisor's sshd: its logins share these namespaces, so they reach this
    # libvirtd through its private /run/libvirt.
    if sshd.config_path(host_dir).exists() and not _alive(sshd.pid_path(host_dir)):
        sshd.ensure_privsep_dir()
        _start(sshd.argv(host_dir))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="virtfleet.lab.nsboot")
    parser.add_argument("host_dir", type=Path)
    parser.add_argument("--no-mount", action="store_true")
    args = parser.parse_args(argv)
    try:
        boot(args.host_dir, mount=not args.no_mount)
    except BootError as exc:
        sys.stderr.write(f"{exc}\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
