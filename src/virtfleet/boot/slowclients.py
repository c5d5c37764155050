"""Timeouts for slow clients, which uvicorn lacks: its h11 protocol waits forever for the rest
of a request (a slowloris client sends one header line every few seconds and holds the
connection, and a few hundred such connections hold the server), and for a client that stops
reading a response.

`Guarded` is an H11Protocol that closes a connection whose request (head and body) has not
fully arrived `request_timeout` seconds after its first byte (or after the connection opened),
answering 408 if it can; and one whose client has not read anything of a response for
`stall_timeout` seconds. Idle keep-alive connections are uvicorn's own (timeout_keep_alive).
boot serve runs it with zero-copy file bodies added (zerocopy.boot_protocol sets the timeouts).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("virtfleet.boot.access")

_BODY = b"request not received in time\n"
_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"connection: close\r\ncontent-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY)


class Guarded(H11Protocol):
    request_timeout = 10.0
    stall_timeout = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def _awaiting_request(self) -> bool:
        """The client owes us (the rest of) a request: its head, or its body."""
        return self.conn.their_state in (h11.IDLE, h11.SEND_BODY)

    def _watch(self) -> None:
        if self.transport.is_closing() or not self._awaiting_request():
            self._cancel_request_timer()
        elif self._request_timer is None and self.timeout_keep_alive_task is None:
            # (an idle keep-alive connection is uvicorn's: timeout_keep_alive closes it)
            self._request_timer = self.loop.call_later(self.request_timeout, self._too_slow)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._cancel_request_timer()  # the next request starts with its first byte

    def _cancel_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _too_slow(self) -> None:
        self._request_timer = None
        if self.transport.is_closing() or not self._awaiting_request():
            return
        if self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE:
            self.transport.write(_408)  # no request parsed yet: say why before closing
        client = self.client[0] if self.client else "-"
        log.info("%s: request not received within %.0f s: connection closed", client,
                 self.request_timeout)
        self.transport.close()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall_timer is None:
            self._stall_timer = self.loop.call_later(self.stall_timeout, self._stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def _stalled(self) -> None:
        self._stall_timer = None
        client = self.client[0] if self.client else "-"
        log.info("%s: read nothing for %.0f s: connection closed", client, self.stall_timeout)
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_request_timer()
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        super().connection_lost(exc)

