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
import json
import os
import socket
import stat
import struct
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from virtfleet.errors import HostUnavailable, InvalidInput, NotFound
from virtfleet.inventory.records import ControllerRecord
from virtfleet.pids import pid_alive

# A controller heartbeats every 5 s; three missed beats and it is presumed gone.
STALE_AFTER = 15.0
SOCKET_SCHEME = "unix:"
# How long a CLI waits on a controller before asking the hypervisors itself.
DEFAULT_WAIT = 2.5
WAIT_ENV = "VIRTFLEET_CONTROLLER_TIMEOUT"
# Where in a /v1/vms answer its rows stand ("START-END", bytes), so a CLI can pass them on
# without parsing 15,000 of them.
ROWS_HEADER = "Virtfleet-Rows"
READ_SIZE = 1 << 20


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
    return rec is not None and runs_here(rec) and heartbeat_fresh(rec, at)


def runs_here(rec: ControllerRecord) -> bool:
    """Registered by this machine, and its process still there (a stopped one counts)."""
    return rec.hostname == socket.gethostname() and pid_alive(rec.pid)


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


def open_socket(rec: ControllerRecord, timeout: float | None) -> socket.socket:
    """A socket connected to the registered controller process, checked before the caller sends
    it a byte: a private directory, and the registered pid (run by root or us) listening."""
    path = socket_path(rec)
    check_private_dir(path.parent)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(str(path))
        pid, uid, _gid = peer_credentials(sock)
        if pid != rec.pid or uid not in (0, os.geteuid()):
            raise HostUnavailable(
                f"controller socket {path} is held by pid {pid} (uid {uid}), not the "
                f"registered controller pid {rec.pid}; not sending it the token")
    except BaseException:
        sock.close()
        raise
    return sock


class BrokenAnswer(ValueError):
    """An HTTP answer this client cannot read."""


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    headers: dict[str, str]  # names in lower case
    body: bytes


def request_bytes(method: str, target: str, token: str) -> bytes:
    """An HTTP/1.0 request: the controller then answers with a Content-Length (or closes) and
    never chunks (RFC 9112 6.1), so reading it needs no more than parse_answer."""
    if not token.isprintable():
        raise HostUnavailable("the controller's registered token is not printable text; not "
                              "sending it")
    return (f"{method} {target} HTTP/1.0\r\nHost: localhost\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n").encode()


def parse_answer(raw: bytes) -> Answer:
    """One whole HTTP/1.x answer as read until the server closed; BrokenAnswer if it is not
    one (no status line, a body shorter or longer than its Content-Length, chunked)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise BrokenAnswer("no end of headers")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not (code.isdigit() and len(code) == 3):
        raise BrokenAnswer(f"status line {status_line[:80]!r}")
    headers = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise BrokenAnswer(f"header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise BrokenAnswer(f"transfer-encoding {headers['transfer-encoding']!r} in an answer "
                           "to HTTP/1.0")
    length = headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) != len(body)):
        raise BrokenAnswer(f"{len(body)} bytes of body, Content-Length {length}")
    return Answer(int(code), reason, headers, body)


def split_rows(answer: Answer) -> tuple[dict[str, Any], bytes | None]:
    """The /v1/vms answer without its rows, and the rows as the controller encoded them
    (json.dumps's default form) where its ROWS_HEADER says where they are; None if it did not
    (a controller from before the header: the rows are then in the dict)."""
    span = answer.headers.get(ROWS_HEADER.lower(), "")
    start, dash, end = span.partition("-")
    body = answer.body
    if dash and start.isdigit() and end.isdigit() and 0 < int(start) < int(end) <= len(body):
        rows = body[int(start):int(end)]
        rest = json.loads(body[:int(start)] + b"[]" + body[int(end):])
        if rows[:1] == b"[" and rows[-1:] == b"]" and isinstance(rest, dict) \
                and rest.pop("vms", None) == []:
            return rest, rows
    data = json.loads(body)
    if not isinstance(data, dict):
        raise BrokenAnswer("not a JSON object")
    return data, None


class ControllerClient:
    def __init__(self, rec: ControllerRecord, timeout: float | None = None) -> None:
        self.rec = rec
        self.timeout = controller_wait() if timeout is None else timeout

    @property
    def where(self) -> str:
        return f"controller pid {self.rec.pid}"

    def _exchange(self, method: str, path: str, params: dict[str, str | None] | None = None,
                  timeout: float | None = None) -> Answer:
        """One request and its whole answer, read over the checked socket; HostUnavailable
        unless it is a 200.

        Written on the socket rather than through http.client: importing that (with the
        email and ssl modules it pulls in) cost a warm `list` more than a tenth of its time.
        """
        query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v})
        target = f"/v1/{path}" + (f"?{query}" if query else "")
        request = request_bytes(method, target, self.rec.token)
        try:
            sock = open_socket(self.rec, self.timeout if timeout is None else timeout)
            try:
                sock.sendall(request)
                raw = bytearray()
                while chunk := sock.recv(READ_SIZE):
                    raw += chunk
            finally:
                sock.close()
            answer = parse_answer(bytes(raw))
        except OSError as exc:
            raise HostUnavailable(f"{self.where} did not answer ({exc or type(exc).__name__})"
                                  ) from None
        except BrokenAnswer as exc:
            raise HostUnavailable(f"{self.where} sent a broken answer ({exc})") from None
        if answer.status == 404:
            raise NotFound(_detail(answer.body, answer.reason))
        if answer.status != 200:
            raise HostUnavailable(f"{self.where}: HTTP {answer.status}: "
                                  f"{_detail(answer.body, answer.reason)}")
        return answer

    def _call(self, method: str, path: str, params: dict[str, str | None] | None = None,
              timeout: float | None = None) -> Any:
        answer = self._exchange(method, path, params, timeout)
        try:
            return json.loads(answer.body)
        except ValueError as exc:
            raise HostUnavailable(f"{self.where} sent a broken answer ({exc})") from None

    def health(self) -> dict[str, Any]:
        return dict(self._call("GET", "health"))

    def vms(self, **filters: str | None) -> dict[str, Any]:
        return dict(self._call("GET", "vms", filters))

    def vm_rows(self, **filters: str | None) -> tuple[dict[str, Any], bytes]:
        """The fleet view with its rows left encoded, as `json.dumps(rows)` writes them (the
        controller sends them so): (generated_at and failed, the rows)."""
        answer = self._exchange("GET", "vms", filters)
        try:
            rest, rows = split_rows(answer)
            if rows is None:  # an older controller: its rows come parsed
                rows = json.dumps(rest.pop("vms")).encode()
        except (ValueError, KeyError) as exc:
            raise HostUnavailable(f"{self.where} sent a broken answer ({exc})") from None
        return rest, rows

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
