"""What the boot-server lab tests share: loopback ports, child processes that always end,
waiting on them with their logs at hand, and the clustered design on loopback (a fleet whose
site boots through HAProxy in front of `boot serve` replicas, rendered and ready to start)."""

from __future__ import annotations

import csv
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.cli import run

# The install profile of the clustered fleets: the files are served, never booted.
EL9_PROFILE = {"name": "el9", "os_tree": "http://127.0.0.1/os", "kernel": "vmlinuz",
               "initrd": "initrd.img"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def process(argv: list[str], log: Path, env: dict[str, str] | None = None
            ) -> Iterator[subprocess.Popen[str]]:
    """A child process, always ended (TERM, then KILL) and reaped, whatever happens."""
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=20)


def wait_for(what: str, check: Callable[[], bool], procs: list[subprocess.Popen[str]],
             logs: list[Path], timeout: float = 60, every: float = 0.1) -> None:
    """Poll `check` every `every` seconds; fail with the logs' tails if one of `procs` exits
    or `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while not check():
        dead = [p.args for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            tail = "\n".join(f"--- {p.name}:\n" + p.read_text(errors="replace")[-3000:]
                             for p in logs if p.exists())
            pytest.fail(f"{what} did not happen (exited: {dead})\n{tail}", pytrace=False)
        time.sleep(every)


def boot_http_stats(sock_path: Path) -> list[dict[str, str]]:
    """The rows of HAProxy's `show stat` for the boot-http proxy (its servers, FRONTEND and
    BACKEND), asked of its stats socket."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(sock_path))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
    return [r for r in rows if r["pxname"] == "boot-http"]


def haproxy_servers(sock_path: Path) -> dict[str, tuple[str, str]]:
    """{server: (status, check status)} of the boot-http backend, from HAProxy's stats."""
    return {r["svname"]: (r["status"], r["check_status"]) for r in boot_http_stats(sock_path)
            if r["svname"] not in ("FRONTEND", "BACKEND")}


def clustered_boot(fe: int, ports: dict[str, int]) -> dict[str, Any]:
    """A site's clustered boot section: HAProxy's frontend on loopback port `fe` in front of
    the real servers {name: port}, also on loopback."""
    return {
        "topology": "clustered", "next_server": "127.0.0.1",
        "http_base": f"http://127.0.0.1:{fe}/",
        "dhcp": {"primary": {"address": "127.0.0.1", "port": 647},
                 "secondary": {"address": "127.0.0.2", "port": 647}},
        "frontend": {"address": "127.0.0.1", "port": fe},
        "real_servers": [{"name": name, "address": "127.0.0.1", "port": port}
                         for name, port in ports.items()],
    }


@dataclass
class Clustered:
    """A clustered fleet rendered under a test's directory, ready to start."""

    fleet: Path
    cfg: Path  # the haproxy.cfg `boot render` generated, run as is
    stats: Path  # HAProxy's stats socket
    extra: Path  # the haproxy config that adds the stats socket
    files: Path  # what boot serve serves under /files (a vmlinuz)


def render_clustered(tmp_path: Path, fleet: dict[str, Any]) -> Clustered:
    """Write `fleet`, render its boot configuration (checked) and lay out what HAProxy and
    the boot serve replicas need."""
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(fleet))
    tree = tmp_path / "boot"
    r = run(tmp_path / "render.db", "boot", "render", "-f", str(path), "--out", str(tree),
            "--check")
    assert r.code == 0, r.err
    # Only the stats socket is added, in a file of its own: the generated file runs as is.
    stats = tmp_path / "haproxy.sock"
    extra = tmp_path / "stats.cfg"
    extra.write_text(f"global\n  stats socket {stats} mode 600 level admin\n")
    files = tmp_path / "files"
    files.mkdir()
    (files / "vmlinuz").write_bytes(b"k" * 4096)
    return Clustered(path, tree / "lab" / "haproxy" / "haproxy.cfg", stats, extra, files)


def boot_serve_argv(lab: Clustered, fe: int) -> list[str]:
    """A boot serve replica's command line behind HAProxy's frontend port `fe`, but for its
    --port."""
    return [sys.executable, "-m", "virtfleet.cli.main", "boot", "serve", "--fleet",
            str(lab.fleet), "--files", str(lab.files), "--listen", "127.0.0.1",
            "--trusted-proxy", "127.0.0.1", "--public-url", f"http://127.0.0.1:{fe}/",
            "--check-wait", "0"]
