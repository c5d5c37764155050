"""Issue 15's boot item for real: 300 simulated machines install through `haproxy -f` (the
haproxy.cfg `boot render` generates) in front of THREE `boot serve` replicas on one PostgreSQL
store, and one replica is killed with SIGKILL when about half of them have called back.

Each machine does what a real one does, from its own reserved address (127.10.x.y on loopback,
which HAProxy passes on in X-Forwarded-For): boot.ipxe, its own script (a token), the kernel and
initrd, the kickstart with the token, the %post callback with the fields the kickstart names,
then a second network boot that must get the local-disk script. Thirty machines at a time.

A request cut by the kill (a reset, an empty reply, HAProxy's 502/503 while it has not yet marked
the replica down) is retried, as the real clients do: iPXE's `chain` fails and the machine
network-boots again, dracut retries its kickstart fetch, and the %post's
`curl --retry 10` retries the callback on a 5xx. A retry may replay a request the dead replica
had already carried out (the reply was lost): that must neither issue a second token that
breaks the install, nor enrol the host twice.

Ground truth is the store: every install `enrolled`, one inventory row per host, each host's
token the one its machine last used; and the replicas' own logs: each host enrolled by exactly
one replica, and all three replicas served machines before the kill.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shlex
import signal
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _postgres_url
from tests.integration.boot_lab import (
    EL9_PROFILE,
    boot_http_stats,
    boot_serve_argv,
    clustered_boot,
    free_port,
    haproxy_servers,
    process,
    render_clustered,
    wait_for,
)
from tests.unit.boot_fleet import mac_of
from tests.unit.nodes import node_uri
from tests.unit.tools import require_tool

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

MACHINES = 300
WORKERS = 30
REPLICAS = ("ks1", "ks2", "ks3")
VICTIM = "ks2"
ATTEMPTS = 40  # per request; a retry waits RETRY_DELAY
RETRY_DELAY = 0.25
RETRYABLE = (502, 503, 504)


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _postgres_url()


def machine_ip(i: int) -> str:
    return f"127.10.{1 + (i - 1) // 200}.{10 + (i - 1) % 200}"


def replicas_fleet(tmp_path: Path, fe: int, ports: dict[str, int]) -> dict[str, Any]:
    hosts = [{"name": f"hv{i}", "uri": node_uri(tmp_path, "empty.xml", f"hv{i}.xml"),
              "provision": {"mac": mac_of(i), "ip": machine_ip(i), "network": "prov",
                            "profile": "el9"}} for i in range(1, MACHINES + 1)]
    return {
        "profiles": [EL9_PROFILE],
        "sites": [{
            "name": "lab",
            "networks": [{"name": "prov", "subnet": "127.10.0.0/16", "gateway": "127.10.0.1",
                          "pool": {"start": "127.10.100.10", "end": "127.10.100.200"}}],
            "boot": clustered_boot(fe, ports),
            "pods": [{"name": "pod1", "hypervisors": hosts}],
        }],
    }


@dataclass
class Tally:
    """What the machines saw, shared by the workers."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    called_back: int = 0
    retries: Counter[str] = field(default_factory=Counter)  # "GET /ks 502" -> times
    failures: list[str] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)  # host -> the token it last used

    def retried(self, what: str) -> None:
        with self.lock:
            self.retries[what] += 1


class Refused(Exception):
    """A request the machine cannot get past (no retry helps): the install failed."""


def request(fe: int, source: str, method: str, path: str, tally: Tally,
            body: bytes | None = None) -> str:
    """One request of the machine at `source`, retried as a real client would when the
    connection is cut or HAProxy answers 502/503/504 (see the module docstring)."""
    kind = path.split("?")[0].rsplit("/", 1)[0] or path  # /hosts, /ks, /files, /callback
    for _attempt in range(ATTEMPTS):
        conn = http.client.HTTPConnection("127.0.0.1", fe, timeout=30,
                                          source_address=(source, 0))
        try:
            headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            text = resp.read().decode()
        except (OSError, http.client.HTTPException) as exc:
            tally.retried(f"{method} {kind} {type(exc).__name__}")
            time.sleep(RETRY_DELAY)
            continue
        finally:
            conn.close()
        if resp.status in RETRYABLE:
            tally.retried(f"{method} {kind} {resp.status}")
            time.sleep(RETRY_DELAY)
            continue
        if resp.status != 200:
            raise Refused(f"{source} {method} {kind}: {resp.status} {text.strip()}")
        return text
    raise Refused(f"{source} {method} {kind}: no answer in {ATTEMPTS} attempts")


def install(i: int, fe: int, tally: Tally) -> None:
    """Machine i, from its first network boot to its second."""
    ip, mac = machine_ip(i), mac_of(i)
    base = f"http://127.0.0.1:{fe}"

    def local(url: str) -> str:
        assert url.startswith(base + "/"), url
        return url.removeprefix(base)

    chain = request(fe, ip, "GET", "/boot.ipxe", tally)
    assert "hosts/${net0/mac:hexhyp}.ipxe" in chain, chain
    script = request(fe, ip, "GET", f"/hosts/{mac.replace(':', '-')}.ipxe", tally)
    kernel = re.search(r"^kernel (\S+) (.*)$", script, re.M)
    initrd = re.search(r"^initrd (\S+)$", script, re.M)
    ks_url = re.search(r"inst\.ks=(\S+)", script)
    if not (kernel and initrd and ks_url):
        raise Refused(f"hv{i}: not an install script: {script!r}")
    for url in (kernel.group(1), initrd.group(1)):
        request(fe, ip, "GET", local(url), tally)
    ks = request(fe, ip, "GET", local(ks_url.group(1)), tally)
    # The %post's call home, as the kickstart words it (curl --data-urlencode k=v ... URL).
    curl = next(line for line in ks.splitlines() if line.startswith("curl "))
    words = shlex.split(curl)
    form = dict(words[j + 1].split("=", 1) for j, w in enumerate(words)
                if w == "--data-urlencode")
    assert form["host"] == f"hv{i}" and form["status"] == "installed", form
    with tally.lock:
        tally.tokens[f"hv{i}"] = form["token"]
    answer = request(fe, ip, "POST", local(words[-1]), tally,
                     body=urllib.parse.urlencode(form).encode())
    if answer != f"hv{i} installed\n" and answer != f"hv{i} enrolled\n":
        raise Refused(f"hv{i}: callback answered {answer!r}")
    with tally.lock:
        tally.called_back += 1
    # The installed system reboots; left to network-boot first, it must boot its disk.
    request(fe, ip, "GET", "/boot.ipxe", tally)
    again = request(fe, ip, "GET", f"/hosts/{mac.replace(':', '-')}.ipxe", tally)
    if "sanboot" not in again or "inst.ks" in again:
        raise Refused(f"hv{i}: second boot did not get the local-disk script: {again!r}")


def machine(i: int, fe: int, tally: Tally) -> None:
    try:
        install(i, fe, tally)
    except (Refused, AssertionError, StopIteration, KeyError, ValueError) as exc:
        with tally.lock:
            tally.failures.append(f"hv{i}: {type(exc).__name__}: {exc}")


ACCESS = re.compile(r"virtfleet\.boot\.access \S+ via \S+ (GET|POST) (/\S*) (\d{3})$", re.M)
ENROLLED = re.compile(r"virtfleet\.boot (hv\d+) enrolled; host check", re.M)
SWEPT = re.compile(r"virtfleet\.boot enrolling (hv\d+): it called back", re.M)
REPEATED = re.compile(r"virtfleet\.boot (hv\d+) \S+: callback repeated", re.M)


def haproxy_counts(sock_path: Path) -> dict[str, dict[str, int]]:
    """Per server of the boot-http backend (and BACKEND), from HAProxy's stats: sessions
    (stot), connection errors, retries and redispatches."""
    return {r["svname"]: {k: int(r[k] or 0) for k in ("stot", "econ", "eresp", "wretr",
                                                       "wredis", "hrsp_5xx")}
            for r in boot_http_stats(sock_path) if r["svname"] != "FRONTEND"}


def served(log: Path) -> int:
    """Requests a replica answered for machines (its access log; health checks are not
    logged)."""
    return len(ACCESS.findall(log.read_text(errors="replace")))


def test_300_installs_through_haproxy_survive_a_killed_replica(
        pg_url: str, tmp_path: Path) -> None:
    from virtfleet.inventory.store import Store

    haproxy = require_tool("haproxy", "haproxy")
    fe = free_port()
    ports = {name: free_port() for name in REPLICAS}
    lab = render_clustered(tmp_path, replicas_fleet(tmp_path, fe, ports))
    cfg, stats, extra = lab.cfg, lab.stats, lab.extra
    serve = boot_serve_argv(lab, fe)
    (lab.files / "initrd.img").write_bytes(b"i" * 8192)
    logs = {name: tmp_path / f"{name}.log" for name in (*REPLICAS, "haproxy")}
    all_logs = list(logs.values())
    tally = Tally()
    with ExitStack() as stack:
        # All three start at once on the fresh store, as a site's replicas do after a reboot.
        procs = {name: stack.enter_context(process([*serve, "--port", str(port)], logs[name],
                                                   {"VIRTFLEET_DB": pg_url}))
                 for name, port in ports.items()}
        for name, proc in procs.items():
            wait_for(f"{name} listening",
                     lambda n=name: "Serving network installs" in logs[n].read_text(),
                     [proc], all_logs)
        lb = stack.enter_context(process([haproxy, "-db", "-f", str(cfg), "-f", str(extra)],
                                         logs["haproxy"]))
        everyone = [*procs.values(), lb]
        wait_for("the stats socket", stats.exists, everyone, all_logs)
        wait_for("three servers checked healthy", lambda: (
            len(servers := haproxy_servers(stats)) == 3
            and all(s == ("UP", "L7OK") for s in servers.values())), everyone, all_logs)

        started = time.monotonic()
        with ThreadPoolExecutor(WORKERS, thread_name_prefix="machine") as pool:
            jobs = [pool.submit(machine, i, fe, tally) for i in range(1, MACHINES + 1)]
            wait_for("half the machines called back",
                     lambda: tally.called_back >= MACHINES // 2 or all(j.done() for j in jobs),
                     everyone, all_logs, timeout=120)
            before_kill = {name: served(logs[name]) for name in REPLICAS}
            in_flight = MACHINES - tally.called_back
            os.kill(procs[VICTIM].pid, signal.SIGKILL)
            procs[VICTIM].wait(timeout=20)
            survivors = [p for n, p in procs.items() if n != VICTIM] + [lb]
            for job in jobs:
                job.result(timeout=300)
        wall = time.monotonic() - started
        assert not tally.failures, "\n".join(tally.failures[:20])

        db = Store(pg_url)
        stack.callback(db.close)

        def all_enrolled() -> bool:
            return all(rec.state == "enrolled" for rec in db.installs())
        try:
            wait_for("every host enrolled", all_enrolled, survivors, all_logs, timeout=90)
        finally:
            states = Counter(rec.state for rec in db.installs())
        enrolled_at = time.monotonic() - started
        after = {name: served(logs[name]) for name in REPLICAS}
        installs = {rec.host: rec for rec in db.installs()}
        inventory = db.hypervisors()
        lb_counts = haproxy_counts(stats)

    assert procs[VICTIM].returncode == -signal.SIGKILL
    for proc in everyone:
        assert proc.poll() is not None  # every process ended

    # The store: 300 installs, all enrolled, none failed on the way, one inventory row each,
    # and each holding the token its machine last used (a replayed script fetch that issued a
    # token behind the machine's back would show here).
    assert len(installs) == MACHINES and states == {"enrolled": MACHINES}, states
    for host, rec in installs.items():
        assert rec.failed_at is None and rec.error == "", (host, rec.error)
        assert rec.check_ok, (host, rec.check_detail)
        assert rec.token_hash == hashlib.sha256(tally.tokens[host].encode()).hexdigest(), host
    names = Counter(h.name for h in inventory)
    assert names == Counter({f"hv{i}": 1 for i in range(1, MACHINES + 1)}), names

    # The replicas: each host enrolled by exactly one of them (the killed one's log included);
    # all three served machines before the kill, and the two others finished the job.
    texts = {name: logs[name].read_text(errors="replace") for name in REPLICAS}
    enrolments = Counter(host for name in REPLICAS for host in ENROLLED.findall(texts[name]))
    twice = {h: n for h, n in enrolments.items() if n != 1}
    assert not twice, twice
    # A line is missing only if the victim died between enrolling a host and logging it.
    assert len(enrolments) >= MACHINES - 1, sorted(set(installs) - set(enrolments))
    swept = {name: len(SWEPT.findall(texts[name])) for name in REPLICAS}
    repeated = {name: len(REPEATED.findall(texts[name])) for name in REPLICAS}
    assert all(n > 0 for n in before_kill.values()), before_kill
    assert all(after[n] > before_kill[n] for n in REPLICAS if n != VICTIM), (before_kill, after)
    lb_log = logs["haproxy"].read_text()
    assert all(f"boot-http/{n}" in lb_log for n in REPLICAS)
    assert "token=" not in lb_log

    print(f"\nboot replicas: {MACHINES} installs, {WORKERS} at a time, {VICTIM} killed with "
          f"{in_flight} not yet called back; all called back in {wall:.1f} s, all enrolled "
          f"in {enrolled_at:.1f} s; requests per replica before the kill {before_kill}, in "
          f"all {after}; client retries {sum(tally.retries.values())}: "
          f"{dict(tally.retries)}; haproxy {lb_counts}; repeated callbacks {repeated}; "
          f"enrolments swept up {swept}")
