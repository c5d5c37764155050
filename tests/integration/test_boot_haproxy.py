"""The clustered design for real: `haproxy -f` with the haproxy.cfg `boot render` generates, in
front of two `boot serve` processes sharing one store, all on loopback ports.

Proves what `haproxy -c` cannot (issue 10, #8): HAProxy's health checks find both servers up
(the old `option httpchk GET /` got 404 and marked every server down, so installs got 503), and
a machine completes its script fetch, kickstart fetch with its token, and callback through the
proxy, served by both real servers in turn. Proves the trust path of issue 12: boot serve
believes the client address HAProxy sets in X-Forwarded-For (--trusted-proxy), so the machine
(127.10.0.21, its reserved address) gets its token and a stranger (127.10.0.99) does not, even
when it sends an X-Forwarded-For of its own. HAProxy's log never shows a token.
"""

from __future__ import annotations

import csv
import http.client
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.boot_fleet import mac_of
from tests.unit.cli import run
from tests.unit.nodes import node_uri
from tests.unit.tools import require_tool

pytestmark = pytest.mark.integration

MACHINE = "127.10.0.21"
STRANGER = "127.10.0.99"
HYP1 = mac_of(1).replace(":", "-")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clustered_fleet(uri: str, fe: int, ks1: int, ks2: int) -> dict[str, Any]:
    return {
        "profiles": [{"name": "el9", "os_tree": "http://127.0.0.1/os", "kernel": "vmlinuz",
                      "initrd": "initrd.img"}],
        "sites": [{
            "name": "lab",
            "networks": [{"name": "prov", "subnet": "127.10.0.0/24", "gateway": "127.10.0.1",
                          "pool": {"start": "127.10.0.100", "end": "127.10.0.200"}}],
            "boot": {
                "topology": "clustered", "next_server": "127.0.0.1",
                "http_base": f"http://127.0.0.1:{fe}/",
                "dhcp": {"primary": {"address": "127.0.0.1", "port": 647},
                         "secondary": {"address": "127.0.0.2", "port": 647}},
                "frontend": {"address": "127.0.0.1", "port": fe},
                "real_servers": [{"name": "ks1", "address": "127.0.0.1", "port": ks1},
                                 {"name": "ks2", "address": "127.0.0.1", "port": ks2}],
            },
            "pods": [{"name": "pod1", "hypervisors": [{
                "name": "hv1", "uri": uri,
                "provision": {"mac": mac_of(1), "ip": MACHINE, "network": "prov",
                              "profile": "el9"}}]}],
        }],
    }


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
             logs: list[Path], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        dead = [p.args for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            tail = "\n".join(f"--- {p.name}:\n" + p.read_text(errors="replace")[-3000:]
                             for p in logs if p.exists())
            pytest.fail(f"{what} did not happen (exited: {dead})\n{tail}", pytrace=False)
        time.sleep(0.1)


def haproxy_servers(sock_path: Path) -> dict[str, tuple[str, str]]:
    """{server: (status, check status)} of the boot-http backend, from HAProxy's stats."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(sock_path))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
    return {r["svname"]: (r["status"], r["check_status"]) for r in rows
            if r["pxname"] == "boot-http" and r["svname"] not in ("FRONTEND", "BACKEND")}


def through(port: int, method: str, path: str, source: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30,
                                      source_address=(source, 0))
    try:
        hdrs = dict(headers or {})
        if body is not None:
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def test_haproxy_routes_installs_to_two_boot_servers(tmp_path: Path) -> None:
    haproxy = require_tool("haproxy", "haproxy")
    fe, ks1, ks2 = free_port(), free_port(), free_port()
    uri = node_uri(tmp_path, "empty.xml", "hv1.xml")
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump(clustered_fleet(uri, fe, ks1, ks2)))
    tree = tmp_path / "boot"
    r = run(tmp_path / "render.db", "boot", "render", "-f", str(fleet), "--out", str(tree),
            "--check")
    assert r.code == 0, r.err
    cfg = tree / "lab" / "haproxy" / "haproxy.cfg"
    # Only the stats socket is added, in a file of its own: the generated file runs as is.
    stats = tmp_path / "haproxy.sock"
    extra = tmp_path / "stats.cfg"
    extra.write_text(f"global\n  stats socket {stats} mode 600 level admin\n")
    files = tmp_path / "files"
    files.mkdir()
    (files / "vmlinuz").write_bytes(b"k" * 4096)
    db = tmp_path / "store.db"
    serve = [sys.executable, "-m", "virtfleet.cli.main", "boot", "serve", "--fleet", str(fleet),
             "--files", str(files), "--listen", "127.0.0.1", "--trusted-proxy", "127.0.0.1",
             "--public-url", f"http://127.0.0.1:{fe}/", "--check-wait", "0"]
    logs = {name: tmp_path / f"{name}.log" for name in ("ks1", "ks2", "haproxy")}
    with process([*serve, "--port", str(ks1)], logs["ks1"], {"VIRTFLEET_DB": str(db)}) as p1, \
            process([*serve, "--port", str(ks2)], logs["ks2"], {"VIRTFLEET_DB": str(db)}) as p2:
        for name, proc in (("ks1", p1), ("ks2", p2)):
            wait_for(f"{name} listening",
                     lambda n=name: "Serving network installs" in logs[n].read_text(),
                     [proc], list(logs.values()))
        with process([haproxy, "-db", "-f", str(cfg), "-f", str(extra)],
                     logs["haproxy"]) as lb:
            procs = [p1, p2, lb]
            wait_for("the stats socket", stats.exists, procs, list(logs.values()))

            def checked() -> bool:
                servers = haproxy_servers(stats)
                for _status, check in servers.values():
                    if check.startswith("L7STS") or check.startswith("L4"):
                        pytest.fail(f"HAProxy's health check failed: {servers}\n"
                                    + logs["haproxy"].read_text(), pytrace=False)
                return len(servers) == 2 and all(
                    status == "UP" and check == "L7OK" for status, check in servers.values())
            wait_for("both servers checked healthy", checked, procs, list(logs.values()))

            # A stranger gets no token, its own X-Forwarded-For notwithstanding.
            for headers in ({}, {"X-Forwarded-For": MACHINE}):
                status, text = through(fe, "GET", f"/hosts/{HYP1}.ipxe", STRANGER,
                                       headers=headers)
                assert status == 403 and "refused from 127.10.0.99" in text, (status, text)
            # The machine, through HAProxy: script, kickstart with its token, callback.
            status, script = through(fe, "GET", f"/hosts/{HYP1}.ipxe", MACHINE)
            assert status == 200, script
            m = re.search(r"inst\.ks=(http://127\.0\.0\.1:\d+)(/ks/hv1\.ks\?token=([\w-]+))",
                          script)
            assert m and m.group(1) == f"http://127.0.0.1:{fe}", script
            token = m.group(3)
            status, ks = through(fe, "GET", m.group(2), MACHINE)
            assert status == 200 and "%post" in ks, ks
            assert f"http://127.0.0.1:{fe}/callback" in ks
            status, _ = through(fe, "GET", m.group(2), STRANGER)  # a stolen token
            assert status == 403
            form = urllib.parse.urlencode({"host": "hv1", "mac": mac_of(1),
                                           "status": "installed", "token": token}).encode()
            status, text = through(fe, "POST", "/callback", MACHINE, body=form)
            assert (status, text) == (200, "hv1 installed\n")
            for _ in range(4):  # more traffic, so leastconn has used both servers
                assert through(fe, "GET", "/boot.ipxe", MACHINE)[0] == 200

            def enrolled() -> bool:
                rows = run(db, "boot", "status", "--json").json()
                return bool(rows) and rows[0]["state"] == "enrolled"
            wait_for("hv1 enrolled", enrolled, procs, list(logs.values()))
    for proc in (p1, p2, lb):
        assert proc.poll() is not None  # every process ended
    lb_log = logs["haproxy"].read_text()
    assert "token=" not in lb_log and "GET /ks/hv1.ks HTTP/1.1" in lb_log, lb_log
    assert "boot-http/ks1" in lb_log and "boot-http/ks2" in lb_log, lb_log
    served = logs["ks1"].read_text() + logs["ks2"].read_text()
    assert "127.10.0.21 via 127.0.0.1 GET /ks/hv1.ks 200" in served, served
    assert "token=" not in served
