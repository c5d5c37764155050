"""Where the controller listens: a Unix socket in a directory only its own user can enter.

Why not a loopback TCP port: once a controller dies, any local user can bind its old port and
collect the bearer token of the next CLI that asks (issue 12's attack). Nobody but the owner
(and root) can create a file in a 0700 directory, so a socket there cannot be squatted, and the
CLI also checks who listens on it (controller/client.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
from pathlib import Path

from virtfleet.controller.client import SOCKET_SCHEME
from virtfleet.errors import InvalidInput
from virtfleet.pids import pid_alive

RUN_DIR_ENV = "VIRTFLEET_RUN_DIR"
_SOCKET_NAME = re.compile(r"controller-(\d+)\.sock")
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes with its NUL


def default_run_dir() -> Path:
    """$VIRTFLEET_RUN_DIR; else /run/virtfleet for root, $XDG_RUNTIME_DIR/virtfleet for a user
    with one, /tmp/virtfleet-UID otherwise (checked like the others before use)."""
    if env := os.environ.get(RUN_DIR_ENV):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/run/virtfleet")
    if xdg := os.environ.get("XDG_RUNTIME_DIR"):
        return Path(xdg) / "virtfleet"
    return Path(f"/tmp/virtfleet-{os.geteuid()}")


def private_dir(path: Path, option: str) -> Path:
    """Make `path` (mode 0700), or check an existing one is ours, a real directory, and closed
    to everyone else: a directory someone else made first is refused, never adopted."""
    path = path.absolute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
        st = os.lstat(path)
    except OSError as exc:
        raise InvalidInput(option, f"cannot make {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidInput(option, f"{path} is not a directory")
    if st.st_uid != os.geteuid():
        raise InvalidInput(option, f"{path} belongs to uid {st.st_uid}, not to this user "
                           f"(uid {os.geteuid()}); the controller's socket must be in a "
                           "directory only it can write")
    if st.st_mode & 0o077:
        raise InvalidInput(option, f"{path} has mode {stat.S_IMODE(st.st_mode):04o}; it must "
                           "be 0700 (others must not reach the controller's socket)")
    return path


def clear_stale(directory: Path) -> None:
    """Remove sockets left by controllers whose process is gone (kill -9, a crash)."""
    for entry in directory.iterdir():
        m = _SOCKET_NAME.fullmatch(entry.name)
        if m and not pid_alive(int(m.group(1))):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()


def listen(directory: Path, option: str) -> tuple[socket.socket, Path, str]:
    """A listening socket for this process in `directory`; its path and registration URL."""
    path = directory / f"controller-{os.getpid()}.sock"
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise InvalidInput(option, f"{path} is longer than a Unix socket path may be "
                           f"({_SUN_PATH_MAX} bytes)")
    clear_stale(directory)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a pid reused after a crash: the old socket is ours to replace
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        path.chmod(0o600)
        sock.listen(1024)  # before registering, so a CLI that finds us can connect at once
    except OSError as exc:
        sock.close()
        raise InvalidInput(option, f"cannot listen on {path}: {exc.strerror}") from None
    return sock, path, f"{SOCKET_SCHEME}{path}"
