"""`boot serve` against the attacks of issue 12: a token only for the machine's own address (or
its network's relay, or a trusted proxy forwarding it), never rotated by a stranger; guesses
limited (429) and counted; control characters escaped where stored and shown; slow clients cut
off; HTTPS. Each attack is made for real over loopback sockets from chosen source addresses
(127.0.0.21 is hv1's reserved address in these fleets, 127.0.0.99 a stranger)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.unit.boot_fleet import write_fleet
from tests.unit.boot_serving import HYP1, MAC1, install_form, loopback_fleet, serving
from tests.unit.cli import run
from tests.unit.nodes import node_uri
from tests.unit.selfsigned import self_signed

HV1 = "127.0.0.21"
STRANGER = "127.0.0.99"


def fleet(tmp_path: Path, relays: tuple[str, ...] = ()) -> dict[str, object]:
    return loopback_fleet([node_uri(tmp_path, "empty.xml", "hv1.xml")], relays)


# --------------------------------------------------------------------------- who gets a token


def test_a_script_request_from_a_stranger_gets_403_and_no_token(tmp_path: Path) -> None:
    with serving(tmp_path, fleet=fleet(tmp_path)) as s:
        r, token = s.script(source=STRANGER)
        assert (r.status, token) == (403, None)
        assert r.text == ("script for hv1: refused from 127.0.0.99, which is not this host's "
                          "address\n")
        rec = s.store.install("hv1")
        assert rec is not None and (rec.state, rec.token_hash) == ("planned", None)
        mine, token = s.script(source=HV1)
        assert mine.status == 200 and token is not None


def test_a_stranger_does_not_rotate_the_machines_token(tmp_path: Path) -> None:
    with serving(tmp_path, fleet=fleet(tmp_path)) as s:
        _, token = s.script(source=HV1)
        for _ in range(3):
            assert s.script(source=STRANGER)[0].status == 403
        assert s.get(f"ks/hv1.ks?token={token}", source=HV1).status == 200
        assert s.post("callback", install_form(token), source=HV1).status == 200


def test_a_stolen_token_is_refused_from_another_address(tmp_path: Path) -> None:
    with serving(tmp_path, fleet=fleet(tmp_path)) as s:
        _, token = s.script(source=HV1)
        ks = s.get(f"ks/hv1.ks?token={token}", source=STRANGER)
        assert ks.status == 403 and "refused from 127.0.0.99" in ks.text
        assert s.get(f"ks/hv1.ks?token={token}", source=HV1).status == 200
        cb = s.post("callback", install_form(token), source=STRANGER)
        assert cb.status == 403
        rec = s.store.install("hv1")
        assert rec is not None and rec.state == "installing"  # not moved by the stranger


def test_a_relay_speaks_for_its_network(tmp_path: Path) -> None:
    with serving(tmp_path, fleet=fleet(tmp_path, relays=("127.0.0.50",))) as s:
        r, token = s.script(source="127.0.0.50")
        assert r.status == 200 and token is not None
        assert s.script(source=STRANGER)[0].status == 403


def test_forwarded_for_from_an_untrusted_peer_is_ignored(tmp_path: Path) -> None:
    """uvicorn believes X-Forwarded-For from 127.0.0.1 by default: boot serve must not, unless
    127.0.0.1 is a --trusted-proxy."""
    with serving(tmp_path, fleet=fleet(tmp_path)) as s:
        for source in ("127.0.0.1", STRANGER):
            r, token = s.script(source=source, headers={"X-Forwarded-For": HV1})
            assert (r.status, token) == (403, None), source


def test_a_trusted_proxy_forwards_the_client_address(tmp_path: Path) -> None:
    with serving(tmp_path, fleet=fleet(tmp_path), proxies=["127.0.0.1/32"]) as s:
        r, token = s.script(headers={"X-Forwarded-For": HV1})
        assert r.status == 200 and token is not None
        # A client's own header comes first; the proxy's entry (its real address) is last.
        spoofed = s.script(headers={"X-Forwarded-For": f"{HV1}, {STRANGER}"})[0]
        assert spoofed.status == 403 and "refused from 127.0.0.99" in spoofed.text
        # The proxy itself, with nothing forwarded (a health check), is no host.
        assert s.script()[0].status == 403
        bad = s.script(headers={"X-Forwarded-For": "not-an-address"})[0]
        assert (bad.status, bad.text) == (400, "X-Forwarded-For: 'not-an-address' is not an "
                                               "IP address\n")
        # Only the trusted peer's header is read.
        assert s.script(source=STRANGER, headers={"X-Forwarded-For": HV1})[0].status == 403


# --------------------------------------------------------------------------- guesses


def test_token_guesses_past_the_limit_get_429_and_are_counted(tmp_path: Path) -> None:
    with serving(tmp_path, fleet=fleet(tmp_path), guesses=3) as s:
        _, token = s.script(source=HV1)
        for _ in range(3):
            assert s.get("ks/hv1.ks?token=" + "x" * 43, source=HV1).status == 403
        limited = s.get(f"ks/hv1.ks?token={token}", source=HV1)  # even the right one
        assert limited.status == 429 and limited.headers["retry-after"] == "60"
        assert limited.text == "too many refused requests from 127.0.0.21: try again in 60 s\n"
        s.service.flush_counts()
        rec = s.store.install("hv1")
        assert rec is not None and (rec.refused, rec.limited) == (3, 1)
        s.clock.mono += 61  # the window has passed
        assert s.get(f"ks/hv1.ks?token={token}", source=HV1).status == 200


def test_one_clients_guesses_do_not_lock_out_another(tmp_path: Path) -> None:
    with serving(tmp_path, fleet=fleet(tmp_path), guesses=3) as s:
        for i in range(3):  # a stranger probing MACs
            assert s.get(f"hosts/52-54-00-99-00-{i:02x}.ipxe", source=STRANGER).status == 404
        assert s.get("hosts/52-54-00-99-00-09.ipxe", source=STRANGER).status == 429
        assert s.script(source=STRANGER)[0].status == 429
        r, token = s.script(source=HV1)
        assert r.status == 200 and token is not None


def test_wrong_tokens_for_one_host_are_limited_across_clients(tmp_path: Path) -> None:
    """Behind a relay many machines share an address; from several addresses the per-host
    limit still stops guessing one host's token."""
    relays = ("127.0.0.50", "127.0.0.51", "127.0.0.52")
    with serving(tmp_path, fleet=fleet(tmp_path, relays=relays), guesses=3) as s:
        _, token = s.script(source=HV1)
        for source in relays:  # one wrong token each: no client is over its own limit
            assert s.get("ks/hv1.ks?token=" + "y" * 43, source=source).status == 403
        r = s.get(f"ks/hv1.ks?token={token}", source=HV1)
        assert r.status == 429 and r.text == "too many wrong tokens for hv1: try again in 60 s\n"


def test_stranger_refusals_do_not_lock_out_the_machine(tmp_path: Path) -> None:
    """Requests from addresses that may not speak for hv1 never reach its token, so they do
    not count against hv1's own limit (or a stranger could keep it from installing)."""
    with serving(tmp_path, fleet=fleet(tmp_path), guesses=3) as s:
        for i in range(3):
            assert s.script(source=f"127.0.0.{90 + i}")[0].status == 403
        r, token = s.script(source=HV1)
        assert r.status == 200 and token is not None
        s.service.flush_counts()
        rec = s.store.install("hv1")
        assert rec is not None and (rec.refused, rec.limited) == (3, 0)


def test_refusal_log_lines_are_capped_per_client(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="virtfleet.boot")
    with serving(tmp_path, fleet=fleet(tmp_path), guesses=5) as s:
        codes = [s.get("ks/hv1.ks?token=" + "z" * 43, source=HV1).status for _ in range(40)]
    assert codes == [403] * 5 + [429] * 35
    lines = [r.getMessage() for r in caplog.records if "127.0.0.21" in r.getMessage()]
    assert len(lines) == 5, lines  # one per refusal, then silence
    assert lines[-1].endswith("(further refusals from 127.0.0.21 are not logged for up to "
                              "60 s)")


def test_boot_status_shows_the_counters(tmp_path: Path) -> None:
    with serving(tmp_path, fleet=fleet(tmp_path), guesses=2) as s:
        for _ in range(3):
            s.script(source=STRANGER)
        s.service.flush_counts()
        db = tmp_path / "store.db"
        table = run(db, "boot", "status")
        assert table.code == 0, table.err
        assert re.search(r"hv1\s+52:54:00:12:00:01\s+lab\s+pod1\s+planned\s+\S+ \S+\s+-\s+2\s+"
                         r"1\s+-", table.out), table.out
        assert ("Requests naming these hosts: 2 refused, 1 answered 429 (too many refusals); "
                "boot serve's log has the clients") in table.out
        [row] = run(db, "boot", "status", "--json").json()
        assert (row["refused"], row["limited"]) == (2, 1)


# --------------------------------------------------------------------------- terminal injection

EVIL = "\x1b[2J\x1b[31mPWNED\x07\x9b31m\u202eesrever\r\nfake: enrolled"


def test_control_characters_are_escaped_in_store_log_and_status(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="virtfleet.boot")
    with serving(tmp_path, fleet=fleet(tmp_path)) as s:
        _, token = s.script(source=HV1)
        s.get(f"ks/hv1.ks?token={token}", source=HV1)
        r = s.post("callback", install_form(token, status="failed", error=EVIL), source=HV1)
        assert r.status == 200
        s.get("ks/%1b[2J.ks?token=x", source=STRANGER)  # a path with an ESC in it
        rec = s.store.install("hv1")
        assert rec is not None
        assert rec.error == ("\\x1b[2J\\x1b[31mPWNED\\x07\\x9b31m\\u202eesrever fake: "
                             "enrolled")
        status = run(tmp_path / "store.db", "boot", "status")
        json_status = run(tmp_path / "store.db", "boot", "status", "--json")
    for text in [status.out, json_status.out, *(r.getMessage() for r in caplog.records)]:
        for raw in ("\x1b", "\x07", "\x9b", "\u202e", "\r"):
            assert raw not in text, (raw, text)
    assert any("\\x1b[2J" in r.getMessage() for r in caplog.records)
    assert "\\x1b[2J\\x1b[31mPWNED" in status.out


# --------------------------------------------------------------------------- slow clients


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (30 s at most)."""
    sock.settimeout(30)
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    return got


def test_a_slowloris_connection_is_closed(tmp_path: Path) -> None:
    with serving(tmp_path, fleet=fleet(tmp_path), request_timeout=1.0) as s:
        sock = socket.create_connection(("127.0.0.1", s.port))
        try:
            sock.sendall(b"GET /boot.ipxe HTTP/1.1\r\nHost: x\r\n")
            try:
                for i in range(200):  # a header line every 0.2 s, never the blank line
                    sock.sendall(f"X-Slow-{i}: a\r\n".encode())
                    time.sleep(0.2)
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed while we were still trickling: that is the point
            got = _read_until_closed(sock)
        except (BrokenPipeError, ConnectionResetError):
            got = b"HTTP/1.1 408"  # reset before we could read the reply
        finally:
            sock.close()
        assert got.startswith(b"HTTP/1.1 408"), got[:200]
        assert i < 199  # closed long before the trickle ended
        assert s.get("boot.ipxe").status == 200  # others are still served


def test_a_silent_connection_is_closed(tmp_path: Path) -> None:
    with serving(tmp_path, fleet=fleet(tmp_path), request_timeout=1.0) as s, \
            socket.create_connection(("127.0.0.1", s.port)) as sock:
        assert _read_until_closed(sock).startswith(b"HTTP/1.1 408")


def test_a_slow_callback_body_is_cut_off(tmp_path: Path) -> None:
    with serving(tmp_path, fleet=fleet(tmp_path), request_timeout=1.0) as s:
        with socket.create_connection(("127.0.0.1", s.port),
                                      source_address=(HV1, 0)) as sock:
            sock.sendall(b"POST /callback HTTP/1.1\r\nHost: x\r\nContent-Type: "
                         b"application/x-www-form-urlencoded\r\nContent-Length: 4000\r\n\r\n")
            sock.settimeout(30)
            sent = 0
            try:
                while sent < 200:
                    sock.sendall(b"h")
                    sent += 1
                    time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError):
                pass
            with contextlib.suppress(ConnectionResetError):
                _read_until_closed(sock)
        assert sent < 200
        rec = s.store.install("hv1")
        assert rec is not None and rec.state == "planned"


def test_a_client_that_stops_reading_is_closed(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    with (tmp_path / "files" / "big.img").open("wb") as f:
        f.truncate(64 * 2**20)
    with serving(tmp_path, fleet=fleet(tmp_path), stall_timeout=1.0) as s:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", s.port))
        try:
            sock.sendall(b"GET /files/big.img HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(3)  # read nothing for longer than the stall timeout
            got = len(_read_until_closed(sock))
        finally:
            sock.close()
        assert got < 64 * 2**20  # the connection ended before the whole image


# --------------------------------------------------------------------------- HTTPS


def test_boot_serve_speaks_https(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    uri = "qemu+tcp://127.0.0.1:1/system"
    fleet_path = write_fleet(tmp_path / "fleet.yaml", loopback_fleet([uri],
                                                                     relays=("127.0.0.1",)))
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "virtfleet.cli.main", "boot", "serve", "--fleet",
         str(fleet_path), "--port", "0", "--tls-cert", str(cert), "--tls-key", str(key)],
        env={**os.environ, "VIRTFLEET_DB": str(tmp_path / "db")}, stdout=subprocess.PIPE,
        stderr=log, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.match(r"Serving network installs on (https://127\.0\.0\.1:\d+/) ", line)
        assert m, line
        url = m.group(1)
        trusted = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(f"{url}hosts/{HYP1}.ipxe", context=trusted,
                                    timeout=30) as r:
            text = r.read().decode()
        assert r.status == 200 and f"inst.ks={url}ks/hv1.ks?token=" in text
        assert f"kernel {url}files/vmlinuz" in text
        # Plain HTTP to the same port gets no answer, and a client that does not trust the
        # certificate refuses it.
        with pytest.raises(OSError):
            urllib.request.urlopen(url.replace("https", "http") + "boot.ipxe", timeout=30)
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(f"{url}boot.ipxe", timeout=30,
                                   context=ssl.create_default_context())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    assert MAC1 in run(tmp_path / "db", "boot", "status").out


def test_tls_options_are_checked(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    fleet_path = write_fleet(tmp_path / "fleet.yaml",
                             loopback_fleet(["qemu+tcp://127.0.0.1:1/system"]))
    base = ["boot", "serve", "--fleet", str(fleet_path), "--port", "0"]
    r = run(tmp_path / "db", *base, "--tls-cert", str(cert))
    assert (r.code, r.err) == (2, "virtfleet: error: --tls-key: needed with --tls-cert\n")
    key.chmod(0o644)
    r = run(tmp_path / "db", *base, "--tls-cert", str(cert), "--tls-key", str(key))
    assert (r.code, r.err) == (2, f"virtfleet: error: --tls-key: {str(key)!r} can be read by "
                                  "others (mode 0644); chmod 600 it\n")
    key.chmod(0o600)
    r = run(tmp_path / "db", *base, "--tls-cert", str(key), "--tls-key", str(key))
    assert r.code == 2 and r.err.startswith("virtfleet: error: --tls-cert: cannot use"), r.err
    assert not (tmp_path / "db").exists()


@pytest.mark.parametrize("args,err", [
    (["--trusted-proxy", "haproxy.example"], "--trusted-proxy: 'haproxy.example' is not an IP "
     "address or network (like 10.1.1.3 or 10.1.1.0/28)"),
    (["--client-timeout", "forever"], "--client-timeout: 'forever' must be a number of "
     "seconds or like 90s, 30m, 2h, 1d"),
])
def test_bad_trust_options(tmp_path: Path, args: list[str], err: str) -> None:
    fleet_path = write_fleet(tmp_path / "fleet.yaml",
                             loopback_fleet(["qemu+tcp://127.0.0.1:1/system"]))
    r = run(tmp_path / "db", "boot", "serve", "--fleet", str(fleet_path), "--port", "0", *args)
    assert (r.code, r.err) == (2, f"virtfleet: error: {err}\n")


def test_the_health_endpoint_answers_haproxy(tmp_path: Path) -> None:
    with serving(tmp_path, fleet=fleet(tmp_path)) as s:
        r = s.get("healthz", source=STRANGER)
        assert (r.status, r.text) == (200, "ok: 1 installs recorded\n")


def test_a_relay_cannot_also_be_a_reserved_address(tmp_path: Path) -> None:
    from virtfleet.errors import InvalidInput
    from virtfleet.inventory.fleetfile import parse_fleet

    with pytest.raises(InvalidInput) as exc:
        parse_fleet(fleet(tmp_path, relays=(HV1,)))
    assert exc.value.field == "sites[0].pods[0].hypervisors[0].provision.ip"
    assert "is a relay of network 'slirp'" in exc.value.rule


