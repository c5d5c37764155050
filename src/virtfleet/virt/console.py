"""A VM's serial console over libvirt (`virsh console`): interactive, or read until a line.

The console is a libvirt stream on the hypervisor's pty, so it works for a VM on any host the
fleet can reach, with no ssh to the hypervisor.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable
from typing import Any

import libvirt

from virtfleet.errors import OperationTimeout
from virtfleet.virt.errors import libvirt_errors
from virtfleet.virt.guest import Guest

ESCAPE = b"\x1d"  # Ctrl+], as virsh


def open_console(guest: Guest, force: bool = False) -> Any:
    """A blocking stream on the VM's first console. `force` takes it from another client."""
    with libvirt_errors(guest.host.label, guest.name):
        stream = guest.host.conn.newStream(0)
        guest.handle.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else 0)
        return stream


class _Reader(threading.Thread):
    """Drains a console stream into a buffer (and optionally a file descriptor)."""

    def __init__(self, stream: Any, echo_fd: int | None = None) -> None:
        super().__init__(daemon=True, name="console")
        self.stream, self.echo_fd = stream, echo_fd
        self.buffer = bytearray()
        self.lock = threading.Lock()
        self.closed = threading.Event()

    def run(self) -> None:
        try:
            while True:
                data = self.stream.recv(4096)
                if not data or not isinstance(data, bytes):
                    break
                with self.lock:
                    self.buffer.extend(data)
                if self.echo_fd is not None:
                    os.write(self.echo_fd, data)
        except libvirt.libvirtError:
            pass  # the stream was aborted (we left) or the VM went away: the end either way
        finally:
            self.closed.set()


def read_until(stream: Any, marker: bytes, timeout: float, label: str,
               echo_fd: int | None = None) -> bytes:
    """Console output up to and including `marker`; OperationTimeout after `timeout` s."""
    reader = _Reader(stream, echo_fd)
    reader.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not reader.closed.is_set():
            with reader.lock:
                at = reader.buffer.find(marker)
                if at >= 0:
                    return bytes(reader.buffer[:at + len(marker)])
            time.sleep(0.05)
        with reader.lock:
            if marker in reader.buffer:
                return bytes(reader.buffer[:reader.buffer.find(marker) + len(marker)])
        raise OperationTimeout(f"{label}: {marker.decode(errors='replace')!r} did not appear "
                               f"on the console within {timeout:g}s")
    finally:
        _close(stream)


def attach(stream: Any) -> None:
    """Interactive console on this terminal until Ctrl+] (or the VM closes it)."""
    reader = _Reader(stream, echo_fd=sys.stdout.fileno())
    reader.start()
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        while not reader.closed.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            data = os.read(fd, 1024)
            if not data or ESCAPE in data:
                break
            stream.send(data)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        _close(stream)


def pump(stream: Any, deliver: Callable[[bytes], None]) -> threading.Thread:
    """Reads the stream in a worker thread, handing each chunk to `deliver` as it comes, and
    b"" once at the end (the VM closed it, or it was aborted). The relay of a browser's
    console: a thread keeps a blocking libvirt stream off the controller's event loop."""

    def run() -> None:
        try:
            while True:
                data = stream.recv(4096)
                if not data or not isinstance(data, bytes):
                    break
                deliver(data)
        except libvirt.libvirtError:
            pass  # aborted (the browser left) or the VM went away: the end either way
        finally:
            deliver(b"")

    thread = threading.Thread(target=run, daemon=True, name="console-pump")
    thread.start()
    return thread


def send(stream: Any, data: bytes, host: str, vm: str) -> None:
    """Keystrokes to the console (all of them: a libvirt stream may take part of a write)."""
    with libvirt_errors(host, vm):
        view = memoryview(data)
        while view:
            sent = stream.send(bytes(view))
            if sent <= 0:
                break
            view = view[sent:]


def close(stream: Any) -> None:
    _close(stream)


def _close(stream: Any) -> None:
    with contextlib.suppress(libvirt.libvirtError):  # already finished
        stream.abort()
