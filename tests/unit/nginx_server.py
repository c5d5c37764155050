"""nginx on loopback for tests: the reference boot serve's file answers are compared with.

Its own prefix, configuration, pid file, logs and temp directories under the test's directory,
never the system's; the configuration is checked with `nginx -t` before nginx runs it, in the
foreground, as a child of the test."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.unit.tools import require_tool

TEMPS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nginx_conf(prefix: Path, root: Path, port: int) -> str:
    return "\n".join([
        "worker_processes 1;",
        "user root;  # the test's directories are 0700 (ignored, with a warning, if not root)",
        f"pid {prefix}/nginx.pid;",
        f"error_log {prefix}/error.log;",
        "events { worker_connections 64; }",
        "http {",
        "  sendfile on; access_log off; default_type application/octet-stream;",
        *(f"  {kind}_temp_path {prefix}/{kind};" for kind in TEMPS),
        f"  server {{ listen 127.0.0.1:{port}; root {root}; }}",
        "}",
        "",
    ])


@contextmanager
def nginx_serving(tmp: Path, root: Path) -> Iterator[int]:
    """nginx serving `root` on 127.0.0.1; yields its port."""
    exe = require_tool("nginx", "nginx")
    prefix = tmp / "nginx"
    for kind in TEMPS:
        (prefix / kind).mkdir(parents=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, root, port))
    base = [exe, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    check = subprocess.run([*base, "-t"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([*base, "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (prefix / "error.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not listen"
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(30)
