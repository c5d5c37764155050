"""What boot serve hands out under /files/ (kernels, initrds, install trees): a file confined to
--files, whole or one byte range, sent zero-copy.

Confinement: no NUL, nothing that resolves outside the directory (`..`, symlinks out of it),
and the file actually opened is checked again by its descriptor, so a symlink swapped in
between the check and the open does not lead out either. Only regular files (a FIFO or a
device under --files is not served, and opening it cannot block).

Ranges (RFC 9110 section 14), for resumed downloads, answered as nginx answers them: one
byte range (`bytes=a-b`, `bytes=a-`, `bytes=-n`) gets 206 with Content-Range; one that starts
past the end, or does not parse, gets 416 with `Content-Range: bytes */<size>`; another unit
is ignored (200). Several ranges get the whole file (200), which the RFC allows (nginx sends
them as multipart/byteranges; installers resume with one). If-Range with the current ETag or
Last-Modified keeps the range; anything else gets the whole file. The ETag is nginx's
(modification time and size, in hex), so copies of a tree with the same times on several real
servers behind HAProxy, or nginx itself, agree.

The body goes out as `http.response.zerocopysend` (boot/zerocopy.py) when the server offers it
(boot serve's own protocol does); under another ASGI server it is read in pieces in a worker
thread.
"""

from __future__ import annotations

import mimetypes
import os
import re
import stat
from email.utils import formatdate
from pathlib import Path

import anyio.to_thread
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from virtfleet.boot.zerocopy import ZEROCOPY
from virtfleet.errors import NotFound

PIECE = 256 * 1024  # per read where the server has no zero-copy send
_SPEC = re.compile(r"(\d*)\s*-\s*(\d*)")


class Unsatisfiable(Exception):
    """A single byte range that starts at or past the end of the file, or does not parse."""


def open_under(root: Path, path: str) -> int:
    """A read-only descriptor of the regular file `path` names under `root` (resolved,
    absolute), or NotFound."""
    if "\x00" in path:
        raise NotFound("no such file under --files")
    missing = NotFound(f"no file {path[:200]!r} under --files")
    try:
        target = (root / path).resolve()
    except (OSError, RuntimeError):  # a link changed while it was followed; a link loop
        raise missing from None
    if not target.is_relative_to(root):
        raise missing
    try:
        # O_NONBLOCK: opening a FIFO would otherwise wait for a writer. O_NOFOLLOW: the last
        # part was resolved above; a symlink there now was put there since.
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        raise missing from None
    try:
        # What was opened, by its descriptor: a directory swapped for a symlink between the
        # resolve and the open shows here.
        opened = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if not opened.is_relative_to(root) or not stat.S_ISREG(os.fstat(fd).st_mode):
            raise missing
    except BaseException:
        os.close(fd)
        raise
    return fd


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) of a single satisfiable byte range; None for the whole file (no
    Range, another unit, several ranges); Unsatisfiable for a range that starts past the end
    or does not parse (as nginx answers both)."""
    if header is None:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes":
        return None  # a unit we do not know must be ignored (RFC 9110 section 14.2)
    if "," in spec:
        return None  # several ranges: the whole file, which the RFC allows
    m = _SPEC.fullmatch(spec.strip())
    if m is None or not (m.group(1) or m.group(2)):
        raise Unsatisfiable
    first, last = m.group(1), m.group(2)
    if not first:  # bytes=-n: the last n bytes
        if int(last) == 0 or size == 0:
            raise Unsatisfiable
        return max(size - int(last), 0), size
    start = int(first)
    if start >= size or (last and int(last) < start):
        raise Unsatisfiable
    return start, min(int(last) + 1, size) if last else size


class FileBody(Response):
    """The response for one open file: GET or HEAD, whole or a single range. It owns the
    descriptor and closes it when sent (or when the client went away)."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        self.background = None
        self.body = b""
        self.raw_headers = []  # ours are made per request (ranges)
        st = os.fstat(fd)
        self.size = st.st_size
        self.etag = f'"{int(st.st_mtime):x}-{st.st_size:x}"'
        self.last_modified = formatdate(st.st_mtime, usegmt=True)
        self.status_code = 200

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._send(scope, send)
        finally:
            os.close(self.fd)
        if self.background is not None:
            await self.background()

    def _range(self, headers: Headers) -> tuple[int, int] | None:
        if_range = headers.get("if-range")
        if if_range is not None and if_range not in (self.etag, self.last_modified):
            return None  # the file changed since the client's part: start over
        return byte_range(headers.get("range"), self.size)

    async def _send(self, scope: Scope, send: Send) -> None:
        headers = Headers(scope=scope)
        common = [(b"accept-ranges", b"bytes"), (b"etag", self.etag.encode()),
                  (b"last-modified", self.last_modified.encode())]
        try:
            span = self._range(headers)
        except Unsatisfiable:
            text = f"range not satisfiable: {self.name[:200]!r} has {self.size} bytes\n"
            body = text.encode()
            self.status_code = 416
            await send({"type": "http.response.start", "status": 416, "headers": [
                *common, (b"content-range", f"bytes */{self.size}".encode()),
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        start, end = span if span is not None else (0, self.size)
        kind = mimetypes.guess_type(self.name)[0] or "application/octet-stream"
        head = [*common, (b"content-type", kind.encode()),
                (b"content-length", str(end - start).encode())]
        if span is not None:
            self.status_code = 206
            head.append((b"content-range", f"bytes {start}-{end - 1}/{self.size}".encode()))
        await send({"type": "http.response.start", "status": self.status_code, "headers": head})
        if scope["method"] == "HEAD" or start == end:
            await send({"type": "http.response.body", "body": b""})
        elif ZEROCOPY in scope.get("extensions", {}):
            await send({"type": ZEROCOPY, "file": self.fd, "offset": start,
                        "count": end - start, "more_body": False})
        else:
            while start < end:
                piece = await anyio.to_thread.run_sync(os.pread, self.fd,
                                                       min(PIECE, end - start), start)
                if not piece:
                    raise OSError(f"{self.name}: shorter than its announced length")
                start += len(piece)
                await send({"type": "http.response.body", "body": piece,
                            "more_body": start < end})
