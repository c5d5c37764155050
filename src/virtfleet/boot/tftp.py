"""TFTP for legacy PXE ROMs, read-only, through tftpy (`boot serve --tftp DIR`).

A firmware PXE client can only fetch its first files (pxelinux.0 or an iPXE binary, the
PXELINUX/GRUB menus `boot render` writes under <site>/tftp/) over TFTP; everything after that
goes over HTTP. Uploads are refused: tftpy would otherwise write them into the root.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtfleet.errors import InvalidInput

START_TIMEOUT_S = 10


@dataclass
class TftpService:
    server: Any  # tftpy.TftpServer: tftpy ships no type information
    thread: threading.Thread
    port: int

    def stop(self) -> None:
        self.server.stop(now=True)
        self.thread.join(10)


def _refuse_upload(_path: str, _context: object) -> None:
    return None  # tftpy answers "access violation"


def start_tftp(root: Path, address: str, port: int) -> TftpService:
    """Serve `root` over TFTP on address:port (0: any free port) in a daemon thread."""
    import tftpy

    if not root.is_dir():
        raise InvalidInput("tftp", f"{str(root)!r} is not a directory")
    server = tftpy.TftpServer(str(root.resolve()), upload_open=_refuse_upload)
    failed: list[OSError] = []

    def listen() -> None:
        try:
            server.listen(address, port)
        except OSError as exc:  # bind refused: reported by start_tftp below
            failed.append(exc)

    thread = threading.Thread(target=listen, name="tftp", daemon=True)
    thread.start()
    while not server.is_running.wait(0.05):
        if failed or not thread.is_alive():
            why = failed[0].strerror if failed else "it stopped"
            raise InvalidInput("tftp_port", f"cannot serve TFTP on {address}:{port}: {why}")
    return TftpService(server, thread, int(server.listenport))
