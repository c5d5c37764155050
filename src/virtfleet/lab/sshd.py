"""A lab hypervisor's own sshd, for qemu+ssh: its host key, its config, key logins only.

It runs inside the hypervisor's network and mount namespaces (started by nsboot beside
libvirtd), listening on the hypervisor's address only. A login runs what libvirt's ssh
transport sends, `sh -c 'virt-ssh-helper qemu:///system || nc -U /var/run/libvirt/libvirt-sock'`,
and since the session shares the namespace, that reaches this hypervisor's own libvirtd
through its private /run/libvirt.

Everything lives in the host's directory (STATE/hosts/hN/ssh/): sshd_config, the ED25519 host
key, authorized_keys (the lab client's public key), sshd.pid; its log is log/sshd.log.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

from virtfleet.errors import LabError
from virtfleet.lab.run import run
from virtfleet.transport.hostkeys import HostKey

SSHD = "/usr/sbin/sshd"  # sshd refuses to start (re-exec) unless run by its absolute path
SSH_PORT = 22
PRIVSEP_DIR = Path("/run/sshd")  # sshd's empty privilege-separation directory (Debian's path)
_VALUE_RE = re.compile(r"^[A-Za-z0-9._/:=@+,-]+$")  # no quotes, spaces, '%' tokens or '#'


def ssh_dir(host_dir: Path) -> Path:
    return host_dir / "ssh"


def config_path(host_dir: Path) -> Path:
    return ssh_dir(host_dir) / "sshd_config"


def host_key_path(host_dir: Path) -> Path:
    return ssh_dir(host_dir) / "ssh_host_ed25519_key"


def pid_path(host_dir: Path) -> Path:
    return ssh_dir(host_dir) / "sshd.pid"


def sshd_config(host_dir: Path, address: str) -> str:
    """Key logins for root only, on the hypervisor's address; nothing forwarded, no TTY."""
    ipaddress.ip_address(address)
    d = ssh_dir(host_dir)
    opts = [
        ("ListenAddress", f"{address}:{SSH_PORT}"),
        ("HostKey", str(host_key_path(host_dir))),
        ("PidFile", str(pid_path(host_dir))),
        ("AuthorizedKeysFile", str(d / "authorized_keys")),
        ("AllowUsers", "root"),
        ("PermitRootLogin", "prohibit-password"),
        ("PubkeyAuthentication", "yes"),
        ("PasswordAuthentication", "no"),
        ("KbdInteractiveAuthentication", "no"),
        ("HostbasedAuthentication", "no"),
        ("UsePAM", "no"),
        ("PermitEmptyPasswords", "no"),
        ("PermitUserEnvironment", "no"),
        ("PermitUserRC", "no"),
        ("PermitTTY", "no"),
        ("X11Forwarding", "no"),
        ("AllowTcpForwarding", "no"),
        ("AllowAgentForwarding", "no"),
        ("AllowStreamLocalForwarding", "no"),
        ("PermitTunnel", "no"),
        ("MaxStartups", "100:30:200"),  # a fleet-wide query opens many sessions at once
        ("LogLevel", "VERBOSE"),  # the key fingerprint of every login, in log/sshd.log
        # This machine's root has its own dotfiles (a shell init that takes a fifth of a second
        # and may print); a hypervisor's root would not. sshd sets HOME before this applies.
        ("SetEnv", f"HOME={host_dir / 'home'}"),
    ]
    for _key, value in opts:
        if not _VALUE_RE.match(value):
            raise LabError(f"sshd_config: {value!r} holds characters sshd_config reads specially")
    return "# Written by virtfleet lab; this hypervisor's private sshd.\n" + "".join(
        f"{k} {v}\n" for k, v in opts)


def prepare(host_dir: Path, address: str, name: str, authorized: str) -> None:
    """The hypervisor's ssh directory: a fresh host key, the client's key, the config, checked
    by sshd itself (`sshd -t`)."""
    d = ssh_dir(host_dir)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    (host_dir / "home").mkdir(mode=0o700, exist_ok=True)
    key = host_key_path(host_dir)
    for old in (key, key.with_suffix(".pub")):
        old.unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}", "-f", str(key)],
        f"{name}: making its ssh host key")
    auth = d / "authorized_keys"
    auth.write_text(authorized.strip() + "\n")
    os.chmod(auth, 0o600)
    cfg = config_path(host_dir)
    cfg.write_text(sshd_config(host_dir, address))
    os.chmod(cfg, 0o600)
    ensure_privsep_dir()
    run([SSHD, "-t", "-f", str(cfg)], f"{name}: checking its sshd_config")


def ensure_privsep_dir() -> None:
    # sshd (even `sshd -t`) wants it; Debian's own ssh service makes it the same way.
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)


def argv(host_dir: Path) -> list[str]:
    return [SSHD, "-f", str(config_path(host_dir)), "-E", str(host_dir / "log" / "sshd.log")]


def host_key(host_dir: Path) -> HostKey:
    """The public host key sshd presents (ground truth for what `apply` should show)."""
    parts = host_key_path(host_dir).with_suffix(".pub").read_text().split()
    return HostKey.parse(parts[0], parts[1])


def prepare_root_ssh(directory: Path, name: str) -> None:
    """The hypervisor root's own ~/.ssh (bind-mounted over /root/.ssh in its namespace): the key
    its libvirtd logs in to its peers with, strict checking against the peers' keys only."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = directory / "id_ed25519"
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}", "-f",
             str(key)], f"{name}: making its root's ssh key")
    (directory / "known_hosts").touch(mode=0o600)
    config = directory / "config"
    config.write_text("".join(f"{k} {v}\n" for k, v in (
        ("StrictHostKeyChecking", "yes"), ("BatchMode", "yes"),
        ("GlobalKnownHostsFile", "/dev/null"), ("UpdateHostKeys", "no"),
        ("IdentitiesOnly", "yes"), ("IdentityFile", "/root/.ssh/id_ed25519"))))
    os.chmod(config, 0o600)


def client_key(directory: Path) -> str:
    """The lab client's ED25519 key in `directory` (made if missing); its public line."""
    key = directory / "id_ed25519"
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "virtfleet-lab-client",
             "-f", str(key)], "making the lab's ssh client key")
    return key.with_suffix(".pub").read_text().strip()
