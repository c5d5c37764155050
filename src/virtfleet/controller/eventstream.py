"""The CLI's side of /api/v1/events: one request over the controller's checked Unix socket, read
as server-sent events.

The socket is reached through client.py's open_socket, so the token goes only to the registered
controller process, after the same checks as every other call. Reading waits at most
IDLE_TIMEOUT between lines: the controller sends a comment every 15 s, so silence that long
means it is gone or hung.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from virtfleet.controller.client import _detail, open_socket
from virtfleet.errors import HostUnavailable, InvalidInput
from virtfleet.inventory.records import ControllerRecord

PATH = "/api/v1/events"
IDLE_TIMEOUT = 45.0  # three of the controller's keepalive comments


class _ControllerConnection(http.client.HTTPConnection):
    """HTTP over the controller's Unix socket, connected only to the registered process (a
    stream is read line by line as it comes: http.client's reader, which the one-answer calls
    of client.py do without)."""

    def __init__(self, rec: ControllerRecord, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._rec = rec

    def connect(self) -> None:
        self.sock = open_socket(self._rec, self.timeout)


@dataclass(frozen=True)
class Message:
    """One server-sent event: its id ("" when it has none), its kind and its JSON body."""

    id: str
    kind: str
    body: dict[str, Any]


class SSEParser:
    """The text/event-stream format, line by line (the HTML standard's rules, minus retry)."""

    def __init__(self) -> None:
        self._id = ""
        self._kind = ""
        self._data: list[str] = []

    def feed(self, line: str) -> Message | None:
        """One line without its newline; a whole message when the line ends one."""
        if not line:
            if not self._data:
                self._kind = ""
                return None
            text, kind, ident = "\n".join(self._data), self._kind or "message", self._id
            self._data, self._kind, self._id = [], "", ""
            try:
                body = json.loads(text)
            except ValueError as exc:
                raise HostUnavailable(f"the events stream sent a broken message ({exc})"
                                      ) from None
            return Message(ident, kind, body if isinstance(body, dict) else {"data": body})
        if line.startswith(":"):
            return None  # a comment: the controller's keepalive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._kind = value
        elif name == "id":
            self._id = value
        return None


def read_events(rec: ControllerRecord, *, wait: float, kinds: tuple[str, ...] = (),
                follow: bool = True, last_id: str | None = None) -> Iterator[Message]:
    """Each message of one stream, until the controller ends it. HostUnavailable when it cannot
    be reached or goes silent; InvalidInput for a request it refused as bad."""
    query = [("kind", k) for k in kinds] + ([] if follow else [("follow", "false")])
    target = PATH + ("?" + urllib.parse.urlencode(query) if query else "")
    headers = {"Authorization": f"Bearer {rec.token}", "Accept": "text/event-stream"}
    if last_id:
        headers["Last-Event-ID"] = last_id
    where = f"controller pid {rec.pid}"
    conn = _ControllerConnection(rec, wait)
    try:
        try:
            conn.request("GET", target, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise HostUnavailable(f"{where} did not answer ({exc or type(exc).__name__})"
                                  ) from None
        if resp.status == 400:
            detail = _detail(resp.read(), resp.reason)
            field, _, rule = detail.partition(": ")
            raise InvalidInput(field, rule or detail)
        if resp.status != 200:
            raise HostUnavailable(f"{where}: HTTP {resp.status}: "
                                  f"{_detail(resp.read(), resp.reason)}")
        if conn.sock is not None:
            conn.sock.settimeout(IDLE_TIMEOUT)
        parser = SSEParser()
        while True:
            try:
                raw = resp.readline()
            except (OSError, http.client.HTTPException) as exc:
                raise HostUnavailable(f"{where}: the events stream broke off "
                                      f"({exc or type(exc).__name__})") from None
            if not raw:
                return  # the controller ended the stream
            msg = parser.feed(raw.decode("utf-8", "replace").rstrip("\r\n"))
            if msg is not None:
                yield msg
    finally:
        conn.close()
