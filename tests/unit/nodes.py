"""Per-test libvirt test-driver hypervisors: node XML fixtures, and hosts that misbehave."""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from virtfleet.inventory.records import HostRecord

FIXTURES = Path(__file__).parent / "fixtures" / "nodes"


def node_uri(tmp_path: Path, fixture: str, copy_as: str | None = None) -> str:
    """A test:/// URI for a private copy of a fixture (each URI path is its own hypervisor)."""
    dest = tmp_path / (copy_as or fixture)
    shutil.copy(FIXTURES / fixture, dest)
    return f"test://{dest}"


def host(name: str, uri: str, site: str = "oregon", pod: str = "or-pod1",
         groups: tuple[str, ...] = ()) -> HostRecord:
    return HostRecord(name=name, uri=uri, site=site, pod=pod, groups=groups)


@contextmanager
def silent_server() -> Iterator[int]:
    """A loopback TCP port that accepts connections and never answers: a hung hypervisor."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                held.append(conn)
            except TimeoutError:
                continue
            except OSError:
                return

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        srv.close()


def refused_port() -> int:
    """A loopback port with nothing listening (connections are refused at once)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port
