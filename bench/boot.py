"""bench/boot: 500 machines installing at once from `virtfleet boot serve`, beside nginx serving
the same files to the same 500 clients, in the same run.

Each client does what an installing machine does over HTTP: fetch its iPXE script (by MAC),
its kickstart (with the token from the script, for boot serve) and a 50 MB install image. All
clients start together. On loopback, for each of --rounds rounds (the order of the two servers
alternates from round to round, so a change in the machine's load does not favour one):

- boot serve: a 500-hypervisor fleet file, a fresh SQLite store; every script fetch issues and
  stores a token, every kickstart fetch checks it, moves the host's state and fills the
  token into the kickstart built at start; the image is sent by sendfile(2) (boot/zerocopy.py);
- baseline: nginx (Debian's package, `sendfile on`, one worker per core as Debian's own
  configuration has it) on the static tree `boot render` writes for the same fleet (the same
  scripts and kickstarts, without tokens or state), plus the same 50 MB file. Its
  configuration is written here, checked with `nginx -t` and run from a temporary prefix on
  127.0.0.1: its own pid file, logs and temp directories, never the system's.

Reports each round's wall time, errors (non-200, short bodies, exceptions) and each server's
peak RSS (VmHWM; nginx's master and workers summed), then the medians, the ranges and the
ratio. Targets: boot serve within 1.5x of nginx, zero errors, under 300 MB. --tls runs both
over HTTPS instead (a self-signed certificate): Python cannot sendfile an encrypted stream.
Records the figures in docs/benchmarks.md (the plain run; --tls in its own section).
Usage: .venv/bin/python bench/boot.py [--rounds N] [--tls] [--quick] (--quick: 50 clients, one
round, nothing recorded).
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# bench/common.py and bench/record.py: the script's own directory is on sys.path
from common import free_port
from record import record, stamp
from virtfleet.boot.render import render_fleet, write_tree
from virtfleet.inventory.fleetfile import parse_fleet

ROOT = Path(__file__).resolve().parent.parent
BIG = 50 * 1024 * 1024
RSS_TARGET_MB = 300
RATIO_TARGET = 1.5
NGINX = "nginx"
OPENSSL = "openssl"


def mac_of(i: int) -> str:
    return f"52:54:00:12:{i // 256:02x}:{i % 256:02x}"


def fleet(n: int) -> dict[str, Any]:
    hosts = [{"name": f"hv{i}", "uri": f"qemu+tcp://10.0.{10 + i // 250}.{i % 250 + 1}/system",
              "provision": {"mac": mac_of(i), "ip": f"10.0.{10 + i // 250}.{i % 250 + 1}",
                            "network": "prov", "profile": "el9"}}
             for i in range(1, n + 1)]
    return {
        "profiles": [{"name": "el9", "os_tree": "http://10.0.2.2/os", "kernel": "vmlinuz",
                      "initrd": "big.img"}],
        "sites": [{"name": "lab", "boot": {"topology": "distributed"},
                   "networks": [{"name": "prov", "subnet": "10.0.0.0/16", "gateway": "10.0.2.2",
                                 "pool": {"start": "10.0.2.100", "end": "10.0.2.200"},
                                 "servers": {"next_server": "10.0.2.2",
                                             "http_base": "http://10.0.2.2/"},
                                 # every client is on this machine's loopback: let it speak
                                 # for the network, as a NAT would
                                 "relays": ["127.0.0.1"]}],
                   # qemu+tcp: the hosts are only installed here, never connected to
                   "pods": [{"name": "pod1", "insecure_transport": True,
                             "hypervisors": hosts}]}],
    }


@dataclass
class Outcome:
    seconds: float = 0.0
    ok: int = 0
    errors: list[str] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    cpu_seconds: float = 0.0  # the server's, user + system, during the storm


@dataclass
class Target:
    """Where the clients go: the port, and the TLS context when it is HTTPS."""
    port: int
    tls: ssl.SSLContext | None = None


def get(to: Target, path: str, sink: bytearray | None = None) -> tuple[int, bytes, int]:
    """(status, body or b"" when streamed into sink, bytes read)."""
    conn = (http.client.HTTPSConnection("127.0.0.1", to.port, timeout=300, context=to.tls)
            if to.tls else http.client.HTTPConnection("127.0.0.1", to.port, timeout=300))
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        if sink is None:
            body = resp.read()
            return resp.status, body, len(body)
        view, total = memoryview(sink), 0
        while (n := resp.readinto(view)) > 0:
            total += n
        return resp.status, b"", total
    finally:
        conn.close()


Client = Callable[[Target, int, bytearray], None]


def boot_serve_client(to: Target, i: int, sink: bytearray) -> None:
    status, body, _ = get(to, f"/hosts/{mac_of(i).replace(':', '-')}.ipxe")
    m = re.search(rb"token=([A-Za-z0-9_-]+)", body)
    if status != 200 or m is None:
        raise RuntimeError(f"script: HTTP {status}")
    status, body, _ = get(to, f"/ks/hv{i}.ks?token={m.group(1).decode()}")
    if status != 200 or b"%post" not in body:
        raise RuntimeError(f"kickstart: HTTP {status}")
    status, _, size = get(to, "/files/big.img", sink)
    if status != 200 or size != BIG:
        raise RuntimeError(f"image: HTTP {status}, {size} bytes")


def static_client(to: Target, i: int, sink: bytearray) -> None:
    status, body, _ = get(to, f"/ipxe/hosts/{mac_of(i).replace(':', '-')}.ipxe")
    if status != 200 or b"inst.ks=" not in body:
        raise RuntimeError(f"script: HTTP {status}")
    status, body, _ = get(to, f"/ks/hv{i}.ks")
    if status != 200 or b"%post" not in body:
        raise RuntimeError(f"kickstart: HTTP {status}")
    status, _, size = get(to, "/files/big.img", sink)
    if status != 200 or size != BIG:
        raise RuntimeError(f"image: HTTP {status}, {size} bytes")


def family(pid: int) -> list[int]:
    """pid and its children (nginx's workers)."""
    return [pid] + [int(c) for t in Path(f"/proc/{pid}/task").iterdir()
                    for c in (t / "children").read_text().split()]


def peak_rss_mb(pid: int) -> float:
    """VmHWM of pid and its children, summed."""
    total = 0.0
    for p in family(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) / 1024
    return total


def cpu_seconds(pid: int) -> float:
    """User and system time of pid and its children so far."""
    ticks = 0
    for p in family(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_log(proc: subprocess.Popen[str], log: Path, pattern: str) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        m = re.search(pattern, log.read_text())
        if m:
            return int(m.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit(f"server did not start:\n{log.read_text()[-2000:]}")


def wait_listening(proc: subprocess.Popen[str], log: Path, port: int) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return port
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server did not start:\n{log.read_text()[-2000:]}")


def nginx_conf(prefix: Path, root: Path, port: int, tls: tuple[Path, Path] | None) -> str:
    """The baseline's configuration: Debian's nginx.conf settings that matter here (sendfile,
    tcp_nopush, a worker per core), everything it writes under `prefix`, loopback only."""
    listen = f"listen 127.0.0.1:{port} backlog=1024{' ssl' if tls else ''};"
    certs = (f"ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]};" if tls else "")
    return "\n".join([
        "worker_processes auto;",
        "user root;  # the rendered kickstarts are 0600 and the tree is in a 0700 directory",
        f"pid {prefix}/nginx.pid;",
        f"error_log {prefix}/error.log;",
        "events { worker_connections 2048; }",
        "http {",
        "  sendfile on; tcp_nopush on; access_log off;",
        "  default_type application/octet-stream;",
        *(f"  {kind}_temp_path {prefix}/{kind};" for kind in
          ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
        f"  server {{ {listen} {certs} root {root}; }}",
        "}",
        "",
    ])


def nginx_argv(prefix: Path, conf: Path) -> list[str]:
    return [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]


def storm(argv: list[str], env: dict[str, str], log: Path,
          ready: Callable[[subprocess.Popen[str], Path], int], client: Client, n: int,
          tls: ssl.SSLContext | None) -> Outcome:
    """Start the server, let n clients loose at once, measure, stop the server."""
    out = Outcome()
    with log.open("w") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **env})
    try:
        to = Target(ready(proc, log), tls)
        go = threading.Barrier(n + 1)
        lock = threading.Lock()

        def one(i: int) -> None:
            sink = bytearray(1 << 20)
            go.wait()
            try:
                client(to, i, sink)
            except (OSError, RuntimeError, http.client.HTTPException) as exc:
                with lock:
                    out.errors.append(f"hv{i}: {exc}")
                return
            with lock:
                out.ok += 1

        threads = [threading.Thread(target=one, args=(i,)) for i in range(1, n + 1)]
        for t in threads:
            t.start()
        cpu = cpu_seconds(proc.pid)
        go.wait()
        start = time.perf_counter()
        for t in threads:
            t.join()
        out.seconds = time.perf_counter() - start
        out.cpu_seconds = cpu_seconds(proc.pid) - cpu
        out.peak_rss_mb = peak_rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)  # nginx: fast shutdown; boot serve: like Ctrl-C
        proc.wait(timeout=60)
    return out


def self_signed(work: Path) -> tuple[Path, Path]:
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True,
                   timeout=60)
    key.chmod(0o600)
    return cert, key


@dataclass
class Bench:
    work: Path
    n: int
    fleet_file: Path
    http_root: Path
    files: Path
    tls: tuple[Path, Path] | None
    context: ssl.SSLContext | None

    def boot_serve(self, round_no: int) -> Outcome:
        store = self.work / f"store-{round_no}.db"
        tls = (["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
               if self.tls else [])
        return storm([sys.executable, "-m", "virtfleet.cli.main", "boot", "serve", "--fleet",
                      str(self.fleet_file), "--files", str(self.files), "--port", "0", *tls],
                     {"VIRTFLEET_DB": str(store)}, self.work / "serve.log",
                     lambda p, log: wait_log(p, log, r"on https?://127\.0\.0\.1:(\d+)/"),
                     boot_serve_client, self.n, self.context)

    def nginx(self, round_no: int) -> Outcome:
        prefix = self.work / f"nginx-{round_no}"
        prefix.mkdir()
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (prefix / kind).mkdir()
        port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_conf(prefix, self.http_root, port, self.tls))
        check = subprocess.run([*nginx_argv(prefix, conf), "-t"], capture_output=True,
                               text=True, timeout=60)
        if check.returncode != 0:
            raise SystemExit(f"nginx -t refused {conf}:\n{check.stderr}")
        return storm([*nginx_argv(prefix, conf), "-g", "daemon off;"], {},
                     prefix / "stdout.log", lambda p, log: wait_listening(p, log, port),
                     static_client, self.n, self.context)


def setup(work: Path, n: int, tls: bool) -> Bench:
    data = fleet(n)
    fleet_file = work / "fleet.yaml"
    fleet_file.write_text(yaml.safe_dump(data, sort_keys=False))
    tree = work / "tree"
    write_tree(render_fleet(parse_fleet(data)), tree)
    http_root = tree / "lab" / "http"
    files = http_root / "files"
    files.mkdir()
    with (files / "big.img").open("wb") as f:
        chunk = os.urandom(1 << 20)
        for _ in range(BIG >> 20):
            f.write(chunk)
    (files / "vmlinuz").write_bytes(b"k" * 4096)
    pair = self_signed(work) if tls else None
    context = ssl.create_default_context(cafile=str(pair[0])) if pair else None
    return Bench(work, n, fleet_file, http_root, files, pair, context)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tls", action="store_true", help="both servers over HTTPS")
    ap.add_argument("--quick", action="store_true",
                    help="50 clients, one round, nothing recorded")
    args = ap.parse_args()
    n = 50 if args.quick else 500
    rounds = 1 if args.quick else args.rounds
    threading.stack_size(512 * 1024)  # 500 client threads
    serve: list[Outcome] = []
    base: list[Outcome] = []
    scheme = "HTTPS" if args.tls else "HTTP"
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="vf-bench-boot-") as tmp:
        bench = setup(Path(tmp), n, args.tls)
        print(f"{n} clients over {scheme}: script + kickstart + 50 MB image each, "
              f"{rounds} rounds")
        for r in range(rounds):
            # Alternate who goes first, so a drift in the machine's load favours neither.
            order = [("boot serve", bench.boot_serve, serve), ("nginx", bench.nginx, base)]
            for name, run, into in (order if r % 2 == 0 else order[::-1]):
                into.append(run(r))
                report(f"round {r + 1} {name}", into[-1])
    summary = summarize(serve, base)
    print("\n" + summary)
    if args.quick:
        return
    load = os.getloadavg()[0]
    record("boot-tls" if args.tls else "boot",
           f"`bench/boot.py{' --tls' if args.tls else ''}`, {stamp()}, {os.cpu_count()} cores "
           f"(load average {load_before:.1f} before, {load:.1f} at the end: other sessions "
           f"share them), Python {platform.python_version()}, "
           f"{nginx_version()}; {rounds} rounds; in each, {n} clients started together on "
           f"loopback over {scheme}, each fetching its iPXE script, its kickstart and a 50 MB "
           "image; boot serve on a fresh SQLite store, nginx on the static tree `boot render` "
           "wrote for the same fleet. The two alternate who goes first. The clients are "
           "threads of one Python process on the same cores as the servers.",
           summary)


def nginx_version() -> str:
    out = subprocess.run([NGINX, "-v"], capture_output=True, text=True, timeout=30).stderr
    return out.strip().removeprefix("nginx version: ")


def summarize(serve: list[Outcome], base: list[Outcome]) -> str:
    def row(name: str, runs: list[Outcome]) -> str:
        secs = [o.seconds for o in runs]
        ok = sum(o.ok for o in runs)
        rate = statistics.median(o.ok * BIG / o.seconds / 2**20 for o in runs)
        return (f"| {name} | {statistics.median(secs):.1f} | {min(secs):.1f}-{max(secs):.1f} "
                f"| {ok} | {sum(len(o.errors) for o in runs)} | {rate:.0f} "
                f"| {statistics.median(o.cpu_seconds for o in runs):.1f} "
                f"| {max(o.peak_rss_mb for o in runs):.0f} |")

    ratios = [s.seconds / b.seconds for s, b in zip(serve, base, strict=True)]
    ratio = statistics.median(o.seconds for o in serve) / statistics.median(
        o.seconds for o in base)
    errors = sum(len(o.errors) for o in serve)
    rss = max(o.peak_rss_mb for o in serve)
    per_round = " ".join(f"{s.seconds:.1f}/{b.seconds:.1f}" for s, b in zip(serve, base,
                                                                             strict=True))
    lines = [
        "| server | wall s (median) | range | clients done | errors | MiB/s of images "
        "(median) | server CPU s (median) | peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        row("`virtfleet boot serve`", serve),
        row("nginx (baseline)", base),
        "",
        f"- boot serve / nginx: {ratio:.2f}x (medians); per round "
        f"{min(ratios):.2f}-{max(ratios):.2f}x (boot serve/nginx seconds: {per_round})",
        f"- within {RATIO_TARGET}x of nginx: {'yes' if ratio <= RATIO_TARGET else 'no'}"
        f" (every round: {'yes' if max(ratios) <= RATIO_TARGET else 'no'})",
        f"- zero errors: {'yes' if not errors else f'no ({errors}: {common(serve)})'} "
        f"(nginx: {sum(len(o.errors) for o in base)})",
        f"- boot serve under {RSS_TARGET_MB} MB: {'yes' if rss < RSS_TARGET_MB else 'no'} "
        f"({rss:.0f} MB)",
    ]
    return "\n".join(lines)


def common(runs: list[Outcome]) -> str:
    """The most frequent error text, without the client's name."""
    kinds = Counter(e.split(": ", 1)[-1] for o in runs for e in o.errors)
    return kinds.most_common(1)[0][0]


def report(name: str, o: Outcome) -> None:
    print(f"{name:24} {o.seconds:7.1f} s  {o.ok} ok  {len(o.errors)} errors  "
          f"server CPU {o.cpu_seconds:.1f} s  peak RSS {o.peak_rss_mb:.0f} MB", flush=True)
    for e in o.errors[:5]:
        print(f"    {e}")


if __name__ == "__main__":
    main()
