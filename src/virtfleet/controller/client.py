"""How a CLI talks to a running controller: found through the store, asked over its Unix socket.

The bearer token goes only to the process that registered it, checked before a byte is sent:
- the registration must be this machine's, recent, and its pid alive here;
- the socket must sit in a directory only root or this user can enter (mode 0700), so no other
  user can bind a socket there once the controller is gone;
- the process listening on it (SO_PEERCRED) must be the registered pid, run by root or by us.
A registration naming anything else (a TCP address from an older version, say) is not asked.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import stat
import struct
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from virtfleet.errors import HostUnavailable, InvalidInput, NotFound
from virtfleet.inventory.records import ControllerRecord

# A controller heartbeats every 5 s; three missed beats and it is presumed gone.
STALE_AFTER = 15.0
SOCKET_SCHEME = "unix:"
# How long a CLI waits on a controller before asking the hypervisors itself.
DEFAULT_WAIT = 2.5
WAIT_ENV = "VIRTFLEET_CONTROLLER_TIMEOUT"


def controller_wait() -> float:
    """Seconds to wait on each step of a controller call ($VIRTFLEET_CONTROLLER_TIMEOUT)."""
    raw = os.environ.get(WAIT_ENV)
    if raw is None:
        return DEFAULT_WAIT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 600:
        raise InvalidInput(WAIT_ENV, "must be a number of seconds above 0 and at most 600")
    return value


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (a stopped one counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, but it exists
    return True


def is_dead(rec: ControllerRecord) -> bool:
    """Registered by this machine by a process that no longer exists: nobody to ask or wait for.

    A controller on another machine (a shared PostgreSQL store) cannot be judged from here.
    """
    return rec.hostname == socket.gethostname() and not pid_alive(rec.pid)


def heartbeat_fresh(rec: ControllerRecord, at: datetime | None = None) -> bool:
    """Whether the controller heart-beat within STALE_AFTER (wherever it runs)."""
    return ((at or datetime.now(UTC)) - rec.heartbeat_at).total_seconds() < STALE_AFTER


def is_live(rec: ControllerRecord | None, at: datetime | None = None) -> bool:
    """Registered by this machine, heart-beating, and its process still there.

    A controller registered by another machine is not ours to ask: its socket is not here.
    """
    if rec is None or rec.hostname != socket.gethostname():
        return False
    return heartbeat_fresh(rec, at) and pid_alive(rec.pid)


def socket_path(rec: ControllerRecord) -> Path:
    """The registration's socket, or HostUnavailable if it names anything else."""
    if not rec.url.startswith(SOCKET_SCHEME):
        raise HostUnavailable(f"controller pid {rec.pid}: registered at {rec.url!r}, not a "
                              "Unix socket; not sending it the token")
    path = Path(rec.url.removeprefix(SOCKET_SCHEME))
    if not path.is_absolute():
        raise HostUnavailable(f"controller pid {rec.pid}: socket {str(path)!r} is not an "
                              "absolute path")
    return path


def check_private_dir(path: Path) -> None:
    """HostUnavailable unless `path` is a real directory of root or ours that nobody else can
    enter: then nobody else can have bound a socket in it."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise HostUnavailable(f"controller socket directory {path}: {exc.strerror}") from None
    trusted = {0, os.geteuid()}
    if not stat.S_ISDIR(st.st_mode) or st.st_uid not in trusted or st.st_mode & 0o077:
        raise HostUnavailable(
            f"controller socket directory {path} is not a directory of root or uid "
            f"{os.geteuid()} with mode 0700 (owner uid {st.st_uid}, mode "
            f"{stat.S_IMODE(st.st_mode):04o}); not sending it the token")


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process that listens on a connected Unix socket (Linux)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


class _ControllerConnection(http.client.HTTPConnection):
    """HTTP over the controller's Unix socket, connected only to the registered process."""

    def __init__(self, rec: ControllerRecord, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._rec = rec

    def connect(self) -> None:
        path = socket_path(self._rec)
        check_private_dir(path.parent)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(str(path))
            pid, uid, _gid = peer_credentials(sock)
            if pid != self._rec.pid or uid not in (0, os.geteuid()):
                raise HostUnavailable(
                    f"controller socket {path} is held by pid {pid} (uid {uid}), not the "
                    f"registered controller pid {self._rec.pid}; not sending it the token")
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class ControllerClient:
    def __init__(self, rec: ControllerRecord, timeout: float | None = None) -> None:
        self.rec = rec
        self.timeout = controller_wait() if timeout is None else timeout

    @property
    def where(self) -> str:
        return f"controller pid {self.rec.pid}"

    def _call(self, method: str, path: str, params: dict[str, str | None] | None = None,
              timeout: float | None = None) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v})
        target = f"/v1/{path}" + (f"?{query}" if query else "")
        conn = _ControllerConnection(self.rec, self.timeout if timeout is None else timeout)
        try:
            conn.request(method, target, headers={"Authorization": f"Bearer {self.rec.token}"})
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise HostUnavailable(f"{self.where} did not answer ({exc or type(exc).__name__})"
                                  ) from None
        finally:
            conn.close()
        if resp.status == 404:
            raise NotFound(_detail(body, resp.reason))
        if resp.status != 200:
            raise HostUnavailable(f"{self.where}: HTTP {resp.status}: "
                                  f"{_detail(body, resp.reason)}")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise HostUnavailable(f"{self.where} sent a broken answer ({exc})") from None

    def health(self) -> dict[str, Any]:
        return dict(self._call("GET", "health"))

    def vms(self, **filters: str | None) -> dict[str, Any]:
        return dict(self._call("GET", "vms", filters))

    def sync(self, timeout: float = 600.0) -> dict[str, Any]:
        """A full resync: checked to be answering first, so a hung controller costs only the
        short wait, not the long one a resync of the whole fleet may need."""
        self.health()
        return dict(self._call("POST", "sync", timeout=timeout))


def _detail(body: bytes, reason: str) -> str:
    """The error's own words: `message` in the controller's JSON errors."""
    with contextlib.suppress(ValueError, AttributeError):
        data = json.loads(body)
        return str(data.get("message") or data.get("detail") or reason)
    return reason
