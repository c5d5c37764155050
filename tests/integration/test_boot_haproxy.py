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

import http.client
import re
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests.integration.boot_lab import (
    EL9_PROFILE,
    boot_serve_argv,
    clustered_boot,
    free_port,
    haproxy_servers,
    process,
    render_clustered,
    wait_for,
)
from tests.unit.boot_fleet import mac_of
from tests.unit.cli import run
from tests.unit.nodes import node_uri
from tests.unit.tools import require_tool

pytestmark = pytest.mark.integration

MACHINE = "127.10.0.21"
STRANGER = "127.10.0.99"
HYP1 = mac_of(1).replace(":", "-")


def clustered_fleet(uri: str, fe: int, ks1: int, ks2: int) -> dict[str, Any]:
    return {
        "profiles": [EL9_PROFILE],
        "sites": [{
            "name": "lab",
            "networks": [{"name": "prov", "subnet": "127.10.0.0/24", "gateway": "127.10.0.1",
                          "pool": {"start": "127.10.0.100", "end": "127.10.0.200"}}],
            "boot": clustered_boot(fe, {"ks1": ks1, "ks2": ks2}),
            "pods": [{"name": "pod1", "hypervisors": [{
                "name": "hv1", "uri": uri,
                "provision": {"mac": mac_of(1), "ip": MACHINE, "network": "prov",
                              "profile": "el9"}}]}],
        }],
    }


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
    lab = render_clustered(tmp_path, clustered_fleet(uri, fe, ks1, ks2))
    cfg, stats, extra = lab.cfg, lab.stats, lab.extra
    serve = boot_serve_argv(lab, fe)
    db = tmp_path / "store.db"
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
