"""`boot serve`'s /files/: images sent by sendfile(2) (seen with strace), byte ranges answered
as nginx answers them (nginx runs beside it on the same files), resumed downloads (curl -C),
clients that leave mid-image, and the confinement to --files."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.unit.boot_fleet import boot_fleet, write_fleet
from tests.unit.boot_serving import serving
from tests.unit.nginx_server import nginx_serving
from tests.unit.nodes import node_uri
from tests.unit.selfsigned import self_signed
from tests.unit.tools import require_tool
from virtfleet.boot.files import open_under
from virtfleet.boot.zerocopy import TLS_PIECE
from virtfleet.errors import NotFound

SIZE = 5 * 2**20 + 12345  # more than one sendfile call (4 MiB each), not a round number


def image(tmp_path: Path) -> bytes:
    data = os.urandom(SIZE)
    files = tmp_path / "files"
    files.mkdir(exist_ok=True)
    (files / "big.img").write_bytes(data)
    return data


def fetch(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET",
          tls: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = (http.client.HTTPSConnection("127.0.0.1", port, timeout=60, context=tls) if tls
            else http.client.HTTPConnection("127.0.0.1", port, timeout=60))
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------- ranges, as nginx

RANGES = [None, "bytes=0-99", "bytes=100-", "bytes=-100", "bytes=0-0", f"bytes={SIZE - 1}-",
          f"bytes=0-{10 * SIZE}", "bytes=-99999999", "bytes= 1-2", "BYTES=1-2", "bytes=01-02",
          "bytes=4194300-4194310",  # across the first sendfile call's end
          f"bytes={SIZE}-", "bytes=99999999-", "bytes=-0", "bytes=5-3", "bytes=abc", "bytes=-",
          "units=0-1"]


@pytest.mark.parametrize("plain_uvicorn", [False, True], ids=["zerocopy", "plain-uvicorn"])
def test_ranges_are_answered_as_nginx_answers_them(tmp_path: Path, plain_uvicorn: bool) -> None:
    """Status, Content-Range, Content-Length, ETag, Last-Modified, Accept-Ranges (nginx sends it
    with 200 only) and the bytes, for each Range header (and HEAD), from boot serve and from
    nginx on the same file (416 bodies differ: nginx's is HTML). plain-uvicorn: the app
    under uvicorn's own protocol (no zero-copy send), which reads the file in pieces."""
    data = image(tmp_path)
    with serving(tmp_path, plain_uvicorn=plain_uvicorn) as s, \
            nginx_serving(tmp_path, tmp_path) as nginx:
        _, ref_head, _ = fetch(nginx, "/files/big.img", method="HEAD")
        cases = [{"Range": r} if r else {} for r in RANGES] + [
            {"Range": "bytes=0-9", "If-Range": v}
            for v in (ref_head["etag"], ref_head["last-modified"], '"nope"',
                      "W/" + ref_head["etag"], "Mon, 01 Jan 2001 00:00:00 GMT")]
        for headers in cases:
            for method in ("GET", "HEAD"):
                ours = fetch(s.port, "/files/big.img", headers, method)
                ref = fetch(nginx, "/files/big.img", headers, method)
                assert ours[0] == ref[0], (headers, method)
                names = {200: ("etag", "last-modified", "accept-ranges", "content-length"),
                         206: ("content-range", "etag", "last-modified", "content-length"),
                         416: ("content-range",)}[ref[0]]
                for name in names:
                    assert ours[1].get(name) == ref[1].get(name), (headers, method, name)
                if ref[0] != 416:
                    assert ours[2] == ref[2], (headers, method)
        status, _, body = fetch(s.port, "/files/big.img", {"Range": "bytes=-100"})
        assert (status, body) == (206, data[-100:])


def test_several_ranges_get_the_whole_file(tmp_path: Path) -> None:
    """nginx answers them as multipart/byteranges; boot serve sends the whole file, which RFC
    9110 allows (installers resume with a single range)."""
    data = image(tmp_path)
    with serving(tmp_path) as s:
        status, headers, body = fetch(s.port, "/files/big.img", {"Range": "bytes=0-1,5-6"})
        assert (status, body) == (200, data) and "content-range" not in headers


def test_a_resumed_download_is_the_whole_file(tmp_path: Path) -> None:
    """A download cut off after 1 MB, resumed by curl -C - (which asks for the rest with a
    Range): the file on disk is the image."""
    curl = require_tool("curl", "curl")
    data = image(tmp_path)
    part = tmp_path / "part.img"
    with serving(tmp_path) as s:
        with socket.create_connection(("127.0.0.1", s.port)) as sock:
            sock.sendall(b"GET /files/big.img HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while len(got) < 2**20:
                got += sock.recv(65536)
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        part.write_bytes(body[:2**20])
        out = subprocess.run([curl, "-sS", "-f", "-C", "-", "-o", str(part),
                              f"{s.url}files/big.img"], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
    assert hashlib.sha256(part.read_bytes()).digest() == hashlib.sha256(data).digest()


def _curl(url: str, out: Path, *args: str) -> tuple[int, dict[str, str], bytes]:
    """curl's exit code, the response's status line and headers (lower-case names, plus
    "status"), and what it wrote to `out`."""
    curl = require_tool("curl", "curl")
    out.unlink(missing_ok=True)
    proc = subprocess.run([curl, "-sS", "-D", "-", "-o", str(out), *args, url],
                          capture_output=True, text=True, timeout=120)
    lines = proc.stdout.strip().splitlines()
    head = {"status": lines[0].split()[1]} if lines else {}
    head.update((k.strip().lower(), v.strip()) for k, _, v in
                (line.partition(":") for line in lines[1:]))
    return proc.returncode, head, out.read_bytes() if out.exists() else b""


def test_curl_ranges_head_and_unsatisfiable_ranges(tmp_path: Path) -> None:
    """What a real client asks with -r and -I, and gets: the parts, 416 with the size for a
    range past the end or one that does not parse, and headers only for HEAD."""
    data = image(tmp_path)
    out = tmp_path / "out"
    with serving(tmp_path) as s:
        url = f"{s.url}files/big.img"
        for spec, (start, end) in {"0-99": (0, 100), "100-": (100, SIZE),
                                   "-100": (SIZE - 100, SIZE),
                                   f"{SIZE - 10}-{SIZE + 10}": (SIZE - 10, SIZE),
                                   "4194300-4194310": (4194300, 4194311)}.items():
            rc, head, body = _curl(url, out, "-r", spec)
            assert (rc, head["status"], body) == (0, "206", data[start:end]), spec
            assert head["content-range"] == f"bytes {start}-{end - 1}/{SIZE}", spec
        for spec in (f"{SIZE}-", "99999999-", "-0", "5-3", "abc", "-"):
            rc, head, body = _curl(url, out, "-r", spec)
            assert (rc, head["status"]) == (0, "416"), spec
            assert head["content-range"] == f"bytes */{SIZE}", spec
            assert body.startswith(b"range not satisfiable") and len(body) < 200, spec
            rc, _, _ = _curl(url, out, "-f", "-r", spec)
            assert rc == 22, spec  # curl -f: an HTTP error, the download failed
        # curl -I writes the headers where the body would go: nothing else may follow them.
        rc, head, body = _curl(url, out, "-I")
        assert (rc, head["status"], head["content-length"]) == (0, "200", str(SIZE))
        assert body.endswith(b"\r\n\r\n") and len(body) < 1000
        rc, head, body = _curl(url, out, "-I", "-r", "0-9")
        assert (rc, head["status"], head["content-length"], head["content-range"]) == (
            0, "206", "10", f"bytes 0-9/{SIZE}")
        assert body.endswith(b"\r\n\r\n") and len(body) < 1000
        rc, head, body = _curl(url, out, "-r", "0-1,5-6")
        assert (rc, head["status"], body) == (0, "200", data)


def test_a_curl_that_gives_up_mid_image_leaves_nothing_open(tmp_path: Path) -> None:
    """curl reading slowly and stopped by its own time limit (-m), and curl killed in the
    middle: the server closes the connection's socket, its copy and the file, and serves the
    next client the whole image."""
    curl = require_tool("curl", "curl")
    data = image(tmp_path)
    with serving(tmp_path) as s:
        url = f"{s.url}files/big.img"
        before = _open_fds()
        slow = subprocess.run([curl, "-sS", "--limit-rate", "32k", "-m", "2", "-o",
                               str(tmp_path / "slow"), url], capture_output=True, timeout=60)
        assert slow.returncode == 28  # curl's "operation timed out"
        assert 0 < (tmp_path / "slow").stat().st_size < SIZE
        killed = subprocess.Popen([curl, "-sS", "--limit-rate", "32k", "-o",
                                   str(tmp_path / "killed"), url])
        deadline = time.monotonic() + 60
        while not (tmp_path / "killed").exists() or not (tmp_path / "killed").stat().st_size:
            assert time.monotonic() < deadline and killed.poll() is None
            time.sleep(0.05)
        killed.kill()
        killed.wait(30)
        deadline = time.monotonic() + 60
        while _open_fds() > before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _open_fds() == before
        assert _curl(url, tmp_path / "out")[2] == data


# --------------------------------------------------------------------------- sendfile, seen


def _traced_serve(tmp_path: Path, tls: tuple[Path, Path] | None) -> tuple[int, int, bytes]:
    """boot serve under strace; fetch the image whole and from byte 1000 (over HTTPS with
    `tls`); (bytes sendfile(2) sent, pread64 calls, the bytes received)."""
    strace = require_tool("strace", "strace")
    fleet = write_fleet(tmp_path / "fleet.yaml",
                        boot_fleet([node_uri(tmp_path, "empty.xml", "hv1.xml")]))
    trace = tmp_path / "trace.txt"
    extra = ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])] if tls else []
    proc = subprocess.Popen(
        [strace, "-f", "-qq", "-e", "trace=sendfile,pread64", "-o", str(trace),
         sys.executable, "-m", "virtfleet.cli.main", "boot", "serve", "--fleet", str(fleet),
         "--files", str(tmp_path / "files"), "--port", "0", *extra],
        env={**os.environ, "VIRTFLEET_DB": str(tmp_path / "db")}, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.match(r"Serving network installs on https?://127\.0\.0\.1:(\d+)/ ", line)
        assert m, line
        context = ssl.create_default_context(cafile=str(tls[0])) if tls else None
        whole = fetch(int(m.group(1)), "/files/big.img", tls=context)
        tail = fetch(int(m.group(1)), "/files/big.img", {"Range": "bytes=1000-"}, tls=context)
        assert (whole[0], tail[0]) == (200, 206)
    finally:
        # strace's child is the server: stop it, and strace ends with it.
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        for child in children:
            os.kill(int(child), signal.SIGTERM)
        proc.wait(60)
    text = trace.read_text()
    sent = sum(int(n) for n in re.findall(r"sendfile\(.*= (\d+)\s*$|<\.\.\. sendfile resumed>"
                                          r".*= (\d+)\s*$", text, re.M) for n in n if n)
    return sent, text.count("pread64("), whole[2] + tail[2]


def test_images_are_sent_by_sendfile(tmp_path: Path) -> None:
    data = image(tmp_path)
    sent, _, received = _traced_serve(tmp_path, None)
    assert received == data + data[1000:]
    assert sent == len(received)  # every byte of both bodies went out by sendfile(2)


def test_over_tls_images_are_copied_and_still_whole(tmp_path: Path) -> None:
    """Python cannot sendfile an encrypted stream: the file is read in pieces (pread64) and
    written through the TLS transport."""
    cert, key = self_signed(tmp_path)
    data = image(tmp_path)
    sent, preads, received = _traced_serve(tmp_path, (cert, key))
    assert received == data + data[1000:]
    assert sent == 0 and preads >= 2 * SIZE // TLS_PIECE


# --------------------------------------------------------------------------- clients that leave


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_clients_that_leave_mid_image_leave_nothing_open(tmp_path: Path) -> None:
    """Ten clients read a little of the image and go (reset, or closed with data unread); the
    server closes their sockets, socket copies and files, and goes on serving."""
    data = image(tmp_path)
    with serving(tmp_path) as s:
        before = _open_fds()
        assert fetch(s.port, "/files/big.img")[2] == data
        for i in range(10):
            sock = socket.create_connection(("127.0.0.1", s.port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.sendall(b"GET /files/big.img HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(65536)
            if i % 2:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        deadline = time.monotonic() + 60
        while _open_fds() > before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _open_fds() == before
        assert fetch(s.port, "/files/big.img")[2] == data


# --------------------------------------------------------------------------- confinement


def test_only_regular_files_inside_the_directory(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("SECRET CONTENT")
    with serving(tmp_path) as s:
        files = tmp_path / "files"
        os.mkfifo(files / "fifo")  # opening it must not wait for a writer
        (files / "dir").mkdir()
        (files / "out").symlink_to(tmp_path / "outside")
        (files / "in").symlink_to(files / "vmlinuz")
        (files / "loop").symlink_to(files / "loop")
        for path in ("fifo", "dir", "out/secret", "dir/../../outside/secret", "loop", "loop/x"):
            for method in ("GET", "HEAD"):
                status, _, body = fetch(s.port, f"/files/{path}", method=method)
                assert status == 404 and b"SECRET" not in body, (path, method)
        assert fetch(s.port, "/files/in")[2] == b"kernel" * 1000  # a link that stays inside


def test_a_directory_swapped_for_a_link_out_is_caught_after_the_open(tmp_path: Path) -> None:
    """files/real flips between a directory and a symlink to a directory outside, while the
    server opens real/x again and again. A path resolved while real was a directory is opened
    after it may have become the link: what was opened is checked by its descriptor, so
    nothing outside is ever handed out."""
    root = (tmp_path / "files").resolve()
    real, held, link = root / "real", root / "held", root / "link"
    real.mkdir(parents=True)
    (real / "x").write_text("inside")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x").write_text("outside")
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            real.rename(held)  # the directory steps aside, a link out takes its name
            link.symlink_to(tmp_path / "outside")
            link.rename(real)
            real.unlink()  # and back
            held.rename(real)

    flipper = threading.Thread(target=flip)
    flipper.start()
    seen = {"inside": 0, "refused": 0}
    try:
        for _ in range(5000):
            try:
                fd = open_under(root, "real/x")
            except NotFound:
                seen["refused"] += 1
                continue
            try:
                assert os.pread(fd, 100, 0) == b"inside"
                seen["inside"] += 1
            finally:
                os.close(fd)
    finally:
        stop.set()
        flipper.join()
    assert seen["inside"] and seen["refused"]
