"""Zero-copy file bodies for boot serve: the ASGI "zero copy send" extension
(`http.response.zerocopysend`), which uvicorn does not offer, added to boot serve's own h11
protocol.

Under plain uvicorn, Starlette's FileResponse reads an image 64 KiB at a time in a worker
thread and writes each piece through the event loop: a copy out of the page cache, a copy into
the socket and two thread hops per 64 KiB, all under the GIL (`strace` shows `read` and
`sendto`, never `sendfile`). 500 machines fetching their initrd at once were bounded by that.

Here the app (boot/files.py) opens and checks the file and sends the headers, then hands the
protocol the open file, an offset and a count. On a plain connection the protocol passes them
to sendfile(2) on the connection's (non-blocking) socket: the kernel moves the pages from the
page cache to the socket, and Python only waits for the socket to take more. Each call runs in
the event loop's thread pool, at most SENDFILE_CHUNK at a time: the kernel's work for several
connections then runs on several cores while the loop goes on answering requests (measured:
about 30% less time for 500 clients on 2 cores than calling it in the loop). Over TLS the
bytes must be encrypted in this process, so the same message is done by reading the file in
pieces and writing them through the TLS transport, in the event loop.

h11 still frames the response: it is told the body's length (its "data passthrough", meant for
sendfile) and checks it against Content-Length. A client that takes nothing for the stall
timeout is dropped, as with any response (slowclients).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, cast

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

from virtfleet.boot.slowclients import Guarded

ZEROCOPY = "http.response.zerocopysend"
TLS_PIECE = 64 * 1024  # per write through the TLS transport...
TLS_HIGH_WATER = 64 * 1024  # ...which pauses us once this much waits in it
# At most this much per sendfile call, so one fast client cannot hold a pool thread long
# (nginx's sendfile_max_chunk does the same, 2 MiB; 4 MiB measured a little faster here).
SENDFILE_CHUNK = 4 * 1024 * 1024
_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EBADF, errno.ESHUTDOWN)

log = logging.getLogger("virtfleet.boot.access")

Send = Callable[[Any], Awaitable[None]]


def _send_some(out: int, fd: int, offset: int, count: int) -> int | None:
    """What sendfile(2) took on the non-blocking socket; None if nothing fit."""
    try:
        return os.sendfile(out, fd, offset, count)
    except BlockingIOError:
        return None


class _Length:
    """What h11 is given for a body part that sendfile writes: only its length."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


class ZeroCopyProtocol(Guarded):
    """Guarded's h11 protocol plus `http.response.zerocopysend`: a message with `file` (an
    open file, or its descriptor), `offset`, `count` and `more_body`, as the ASGI extension
    defines it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiter: asyncio.Future[bool] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.scheme == "https":
            # asyncio's TLS transport pauses a writer only once 512 KiB of encrypted output
            # wait in it: at 500 installs, 250 MB of buffers.
            transport.set_write_buffer_limits(high=TLS_HIGH_WATER)

    def handle_events(self) -> None:
        # uvicorn makes a RequestResponseCycle per request and schedules its task; the task
        # has not run yet when this returns, so its scope and send can still be extended.
        before = self.cycle
        super().handle_events()
        if self.cycle is not None and self.cycle is not before:
            self._extend(self.cycle)

    def _extend(self, cycle: RequestResponseCycle) -> None:
        extensions = cycle.scope.setdefault("extensions", {})
        extensions[ZEROCOPY] = {}
        plain: Send = cycle.send

        async def send(message: Any) -> None:
            if message["type"] == ZEROCOPY:
                await self._send_file(cycle, plain, message)
            else:
                await plain(message)

        cycle.send = send  # type: ignore[method-assign]

    async def _send_file(self, cycle: RequestResponseCycle, plain: Send,
                         message: dict[str, Any]) -> None:
        if cycle.disconnected:
            return
        if not cycle.response_started or cycle.response_complete:
            raise RuntimeError(f"ASGI message {ZEROCOPY!r} outside a response body")
        file = message["file"]
        fd = file if isinstance(file, int) else int(file.fileno())
        offset = message.get("offset")
        if offset is None:
            offset = os.lseek(fd, 0, os.SEEK_CUR)
        count = message.get("count")
        if count is None:
            count = max(os.fstat(fd).st_size - offset, 0)
        if cycle.scope["method"] == "HEAD":
            count = 0
        if count:
            body = _Length(count)
            # h11 counts the length against Content-Length and adds chunk framing if any.
            pieces: list[object] = list(cycle.conn.send_with_data_passthrough(
                h11.Data(data=cast(bytes, body))) or ())
            for piece in pieces:
                if piece is not body:
                    assert isinstance(piece, bytes)
                    self.transport.write(piece)
                elif not await (self._copy(fd, offset, count) if self.scheme == "https"
                                else self._sendfile(fd, offset, count)):
                    cycle.disconnected = True  # no more of this response can be sent
                    cycle.message_event.set()
                    self.transport.close()
                    return
        if not message.get("more_body", False):
            await plain({"type": "http.response.body", "body": b"", "more_body": False})

    async def _sendfile(self, fd: int, offset: int, count: int) -> bool:
        """count bytes of fd from offset to the client by sendfile(2); False if the connection
        went (or was dropped) first."""
        if not await self._flushed():
            return False
        sock = self.transport.get_extra_info("socket")
        # The loop refuses a writer on a descriptor its transport owns; a duplicate of the
        # socket is ours to wait on. It is closed before we return, so a closed transport
        # really closes the connection.
        out = os.dup(sock.fileno())
        try:
            while count:
                if self.transport.is_closing():
                    return False
                try:
                    # In the loop's thread pool: the kernel's copying for several
                    # connections runs on several cores, and the loop goes on meanwhile.
                    sent = await self.loop.run_in_executor(None, _send_some, out, fd, offset,
                                                           min(count, SENDFILE_CHUNK))
                except OSError as exc:
                    if exc.errno in _GONE:
                        return False
                    raise
                if sent is None:  # the socket's buffer is full
                    if not await self._writable(out):
                        return False
                    continue
                if sent == 0:
                    log.warning("file shorter than announced (changed while being sent?): "
                                "%d bytes missing; connection closed", count)
                    return False
                offset += sent
                count -= sent
            return True
        finally:
            os.close(out)

    async def _flushed(self) -> bool:
        """Wait until the transport has written what it holds (the headers): sendfile must not
        overtake them."""
        transport = self.transport
        if transport.get_write_buffer_size():
            # High water 0: the transport pauses us now and resumes us once its buffer is
            # empty (Guarded's stall timer runs meanwhile).
            transport.set_write_buffer_limits(high=0)
            try:
                await self.flow.drain()
            finally:
                if not transport.is_closing():
                    transport.set_write_buffer_limits()
        return not transport.is_closing()

    async def _writable(self, fd: int) -> bool:
        """Wait for the socket to take more, at most the stall timeout."""
        waiter: asyncio.Future[bool] = self.loop.create_future()
        self._waiter = waiter

        def ready() -> None:
            if not waiter.done():
                waiter.set_result(True)

        self.loop.add_writer(fd, ready)
        try:
            return await asyncio.wait_for(waiter, self.stall_timeout)
        except TimeoutError:
            self._stalled()
            return False
        finally:
            self.loop.remove_writer(fd)
            self._waiter = None

    async def _copy(self, fd: int, offset: int, count: int) -> bool:
        """The same over TLS: pieces read here and written through the transport, which
        encrypts them; its flow control (and Guarded's stall timer) paces us."""
        while count:
            if self.flow.write_paused:
                await self.flow.drain()
            if self.transport.is_closing():
                return False
            piece = os.pread(fd, min(count, TLS_PIECE), offset)
            if not piece:
                log.warning("file shorter than announced (changed while being sent?): "
                            "%d bytes missing; connection closed", count)
                return False
            self.transport.write(piece)
            offset += len(piece)
            count -= len(piece)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(False)
        super().connection_lost(exc)


def boot_protocol(request_timeout: float, stall_timeout: float) -> type[H11Protocol]:
    """The h11 protocol class boot serve runs: slow clients timed out, files sent zero-copy;
    for uvicorn.Config(http=...)."""
    return type("BootH11Protocol", (ZeroCopyProtocol,), {"request_timeout": request_timeout,
                                                         "stall_timeout": stall_timeout})
