"""The ssh client configuration virtfleet runs ssh with, and the wrapper libvirt runs.

libvirt's qemu+ssh transport runs `ssh [-p port] [-l user] -T -e none -- HOST sh -c '...'` with
a cleared environment, and has no parameter for a known_hosts file or a config file. So
virtfleet hands libvirt (`command=`) a wrapper that runs `ssh -F ssh_config "$@"`: with -F, ssh
reads this file and nothing else, so neither ~/.ssh/config nor /etc/ssh/ssh_config can turn
host-key checking off or add a ProxyCommand. The file pins trust to virtfleet's known_hosts,
with strict checking, public keys only, and no prompts.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from virtfleet.errors import InvalidInput
from virtfleet.transport.paths import TransportDir, safe_path, write_private

CONNECT_TIMEOUT = 10  # seconds for TCP connect + ssh handshake (libvirt's own deadline is longer)


def ssh_options(td: TransportDir, key: Path | None) -> list[tuple[str, str]]:
    """ssh_config options, in order. Never StrictHostKeyChecking no or accept-new: an unknown
    or changed host key is refused, and only `virtfleet hostkey pin --accept-new` (or `host add`
    / `apply` with --accept-new) adds one."""
    opts = [
        ("UserKnownHostsFile", str(safe_path(td.known_hosts, "known_hosts"))),
        ("GlobalKnownHostsFile", "/dev/null"),
        ("StrictHostKeyChecking", "yes"),
        ("CheckHostIP", "no"),
        ("UpdateHostKeys", "no"),
        ("HashKnownHosts", "no"),
        ("BatchMode", "yes"),
        ("PreferredAuthentications", "publickey"),
        ("PasswordAuthentication", "no"),
        ("KbdInteractiveAuthentication", "no"),
        ("ConnectTimeout", str(CONNECT_TIMEOUT)),
        ("ForwardAgent", "no"),
        ("ForwardX11", "no"),
        ("ClearAllForwardings", "yes"),
        ("ControlMaster", "no"),
        ("ControlPath", "none"),
        ("RequestTTY", "no"),
        ("LogLevel", "ERROR"),
    ]
    if key is not None:
        opts += [("IdentityFile", str(safe_path(key, "ssh key"))), ("IdentitiesOnly", "yes")]
    return opts


def render_config(td: TransportDir, key: Path | None) -> str:
    lines = ["# Written by virtfleet for its own ssh (ssh -F); rewritten when settings change.",
             "Host *"]
    lines += [f"  {k} {v}" for k, v in ssh_options(td, key)]
    return "\n".join(lines) + "\n"


def render_wrapper(ssh: Path, config: Path) -> str:
    # Both paths passed safe_path (no quotes, spaces or shell characters), so they stand as is.
    return f'#!/bin/sh\nexec {safe_path(ssh, "ssh")} -F {safe_path(config, "ssh_config")} "$@"\n'


def ssh_binary() -> Path:
    found = shutil.which("ssh")
    if found is None:
        raise InvalidInput("ssh", "is not installed (Debian package openssh-client); qemu+ssh "
                           "hypervisors need it")
    return Path(found).resolve()


_done: set[tuple[Path, Path | None]] = set()
_lock = threading.Lock()


def _refresh(path: Path, text: str, mode: int) -> None:
    try:
        if path.read_text() == text and (path.stat().st_mode & 0o777) == mode:
            return
    except OSError:
        pass
    write_private(path, text, mode)


def ensure_ssh_files(td: TransportDir) -> Path:
    """Write (or refresh) ssh_config and the wrapper once per process; return the wrapper."""
    key = td.ssh_key
    with _lock:
        if (td.root, key) in _done:
            return td.ssh_wrapper
        td.ensure()
        _refresh(td.ssh_config, render_config(td, key), 0o600)
        _refresh(td.ssh_wrapper, render_wrapper(ssh_binary(), td.ssh_config), 0o700)
        _done.add((td.root, key))
    return td.ssh_wrapper
