"""`boot serve`: the provisioning server on a real uvicorn on 127.0.0.1, in this process (so the
clock can be moved to expire tokens), against a real store and libvirt's test driver for the
`host check` after enrolment. The CLI side runs as a subprocess, as a user would."""

from __future__ import annotations

import http.client
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.unit.boot_fleet import boot_fleet, write_fleet
from tests.unit.boot_serving import HYP1, MAC1, T0, install_form, serving
from tests.unit.cli import run
from tests.unit.nodes import node_uri
from virtfleet.inventory.fleetfile import parse_fleet

# --------------------------------------------------------------------------- the whole flow


def test_install_flow_enrols_and_checks(tmp_path: Path) -> None:
    with serving(tmp_path) as s:
        assert s.store.install("hv1").state == "planned"  # type: ignore[union-attr]
        chain = s.get("boot.ipxe")
        assert chain.status == 200 and "hosts/${net0/mac:hexhyp}.ipxe" in chain.text

        r, token = s.script()
        assert r.status == 200 and token is not None
        assert r.text.startswith("#!ipxe\n")
        assert f"kernel {s.url}files/vmlinuz console=ttyS0 BOOTIF=01-{HYP1} " \
               f"inst.ks={s.url}ks/hv1.ks?token={token}" in r.text
        assert f"initrd {s.url}files/initrd.img" in r.text
        assert s.store.install("hv1").state == "booting"  # type: ignore[union-attr]

        ks = s.get(f"ks/hv1.ks?token={token}")
        assert ks.status == 200, ks.text
        assert f"--data-urlencode token={token} {s.url}callback" in ks.text
        assert "--data-urlencode host=hv1" in ks.text
        assert s.store.install("hv1").state == "installing"  # type: ignore[union-attr]

        done = s.post("callback", install_form(token))
        assert (done.status, done.text) == (200, "hv1 installed\n")
        rec = s.wait_state("hv1", "enrolled")
        assert rec.check_ok is True and rec.check_detail.startswith("ok")
        assert rec.error == ""  # the token is kept only to recognise a repeated callback
        for at in (rec.planned_at, rec.booting_at, rec.installing_at, rec.installed_at,
                   rec.enrolled_at):
            assert at == T0
        [hv] = s.store.hypervisors()
        assert (hv.name, hv.site, hv.pod) == ("hv1", "lab", "pod1")

        # Network-booting again boots the disk: an installed machine is never reinstalled.
        again, no_token = s.script()
        assert again.status == 200 and no_token is None
        assert "sanboot" in again.text and "enrolled" in again.text
        # ...and the used token opens nothing any more.
        assert s.get(f"ks/hv1.ks?token={token}").status == 403


def test_failing_check_still_enrols(tmp_path: Path) -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    with serving(tmp_path, uris=["qemu+tcp://127.0.0.1:1/system"]) as s:
        _, token = s.script()
        assert s.get(f"ks/hv1.ks?token={token}").status == 200
        assert s.post("callback", install_form(token)).status == 200
        rec = s.wait_state("hv1", "enrolled")
        assert rec.check_ok is False and rec.check_detail
        assert [h.name for h in s.store.hypervisors()] == ["hv1"]


def test_already_in_inventory_with_the_same_uri_is_enrolled(tmp_path: Path) -> None:
    uri = node_uri(tmp_path, "empty.xml", "hv1.xml")
    with serving(tmp_path, uris=[uri]) as s:
        s.store.apply(parse_fleet(boot_fleet([uri])))
        _, token = s.script()
        s.get(f"ks/hv1.ks?token={token}")
        s.post("callback", install_form(token))
        assert s.wait_state("hv1", "enrolled").check_ok is True


def test_installer_failure_is_recorded_and_a_new_boot_retries(tmp_path: Path) -> None:
    with serving(tmp_path) as s:
        _, token = s.script()
        s.get(f"ks/hv1.ks?token={token}")
        r = s.post("callback", install_form(token, status="failed",
                                            error="disk\nnot found"))
        assert (r.status, r.text) == (200, "hv1 failed\n")
        rec = s.store.install("hv1")
        assert rec is not None and rec.state == "failed" and rec.error == "disk not found"
        assert rec.failed_at == T0
        assert s.store.hypervisors() == []
        _, token2 = s.script()
        assert token2 is not None and token2 != token
        rec = s.store.install("hv1")
        assert rec is not None and (rec.state, rec.error) == ("booting", "")


# --------------------------------------------------------------------------- tokens


def test_wrong_missing_and_expired_tokens(tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="virtfleet.boot")
    with serving(tmp_path, ttl=timedelta(minutes=30)) as s:
        before = s.get("ks/hv1.ks?token=" + "x" * 43)
        assert before.status == 403 and "no token is issued" in before.text
        _, token = s.script()
        assert token is not None
        missing = s.get("ks/hv1.ks")
        assert (missing.status, missing.text) == (403, "kickstart for hv1: no token given\n")
        wrong = s.get("ks/hv1.ks?token=" + token[::-1])
        assert (wrong.status, wrong.text) == (403, "kickstart for hv1: wrong token\n")
        s.clock.t = T0 + timedelta(minutes=30)
        expired = s.get(f"ks/hv1.ks?token={token}")
        assert expired.status == 403
        assert expired.text == "kickstart for hv1: token expired at 2026-11-26 12:30:00 UTC\n"
        cb = s.post("callback", install_form(token))
        assert cb.status == 403 and "expired" in cb.text
        rec = s.store.install("hv1")
        assert rec is not None and rec.state == "booting"
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]
    assert refusals == [
        f"refused kickstart for hv1 ({MAC1}) from 127.0.0.1: no token is issued to this host "
        "(it has not fetched its script, or is done)",
        f"refused kickstart for hv1 ({MAC1}) from 127.0.0.1: no token given",
        f"refused kickstart for hv1 ({MAC1}) from 127.0.0.1: wrong token",
        f"refused kickstart for hv1 ({MAC1}) from 127.0.0.1: token expired at 2026-11-26 "
        "12:30:00 UTC",
        f"refused callback for hv1 ({MAC1}) from 127.0.0.1: token expired at 2026-11-26 "
        "12:30:00 UTC",
    ]
    assert not any(token in r.getMessage() for r in caplog.records)


def test_a_new_script_replaces_the_token(tmp_path: Path) -> None:
    with serving(tmp_path) as s:
        _, first = s.script()
        _, second = s.script()
        assert first and second and first != second
        assert s.get(f"ks/hv1.ks?token={first}").status == 403
        assert s.get(f"ks/hv1.ks?token={second}").status == 200


def test_tokens_are_stored_hashed(tmp_path: Path) -> None:
    with serving(tmp_path) as s:
        _, token = s.script()
        assert token is not None
        rec = s.store.install("hv1")
        assert rec is not None and rec.token_hash is not None
        # The database and its write-ahead log: the hash is there, the token nowhere.
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("store.db*"))
        assert rec.token_hash.encode() in raw
        assert token.encode() not in raw
        rec = s.store.install("hv1")
        assert rec is not None and rec.token_expires_at == T0 + timedelta(hours=1)
        assert "token" not in str(rec.as_json()).replace("token_expires_at", "")


# --------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize("path,status,text", [
    ("hosts/zz-54-00-12-00-01.ipxe", 400,
     "mac: 'zz-54-00-12-00-01' is not a MAC address like 52:54:00:12:34:56\n"),
    ("hosts/52-54-00-aa-bb-cc.ipxe", 404, "no install is planned for MAC 52:54:00:aa:bb:cc\n"),
    ("ks/nohost.ks?token=abc", 404, "no install is planned for 'nohost'\n"),
    ("files/missing.img", 404, "no file 'missing.img' under --files\n"),
    ("nothing/here", 404, "Not Found\n"),
])
def test_bad_gets_get_one_line(tmp_path: Path, path: str, status: int, text: str) -> None:
    with serving(tmp_path) as s:
        r = s.get(path)
        assert (r.status, r.text) == (status, text)
        rec = s.store.install("hv1")
        assert rec is not None and rec.state == "planned"


def test_files_stream_and_stay_inside_the_directory(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("outside")
    with serving(tmp_path) as s:
        ok = s.get("files/vmlinuz")
        assert ok.status == 200 and ok.text == "kernel" * 1000
        (tmp_path / "files" / "link").symlink_to(tmp_path / "secret")
        assert s.get("files/link").status == 404
        host, port = s.url.removeprefix("http://").rstrip("/").split(":")
        for raw in ("/files/../secret", "/files/%2e%2e/secret", "/files/..%2fsecret"):
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            conn.request("GET", raw)
            resp = conn.getresponse()
            assert resp.status == 404 and b"outside" not in resp.read(), raw
            conn.close()


@pytest.mark.parametrize("form,status,text", [
    (b"\xff\xfe", 400, "callback: must be a urlencoded form (host=...&mac=...&status=...&"
     "token=...)\n"),
    ({"mac": MAC1, "status": "installed"}, 400, "host: missing from the callback form\n"),
    ({"host": "hv1", "mac": "nope", "status": "installed"}, 400,
     "mac: 'nope' is not a MAC address like 52:54:00:12:34:56\n"),
    ({"host": "hv1", "mac": MAC1, "status": "done"}, 400,
     "status: 'done' must be installed or failed\n"),
    ({"host": "hv9", "mac": MAC1, "status": "installed"}, 404,
     "no install is planned for 'hv9'\n"),
])
def test_bad_callbacks(tmp_path: Path, form: dict[str, str] | bytes, status: int,
                       text: str) -> None:
    with serving(tmp_path) as s:
        _, token = s.script()
        if isinstance(form, dict):
            form = {**form, "token": token or ""}
        r = s.post("callback", form)
        assert (r.status, r.text) == (status, text)
        rec = s.store.install("hv1")
        assert rec is not None and rec.state == "booting"


def test_callback_with_another_hosts_mac_is_refused(tmp_path: Path) -> None:
    with serving(tmp_path) as s:
        _, token = s.script()
        s.get(f"ks/hv1.ks?token={token}")
        r = s.post("callback", install_form(token, mac="52:54:00:99:99:99"))
        assert (r.status, r.text) == (403, "callback for hv1: MAC 52:54:00:99:99:99 is not "
                                           "this host's\n")


def test_callback_before_the_kickstart_is_a_conflict(tmp_path: Path) -> None:
    with serving(tmp_path) as s:
        _, token = s.script()
        r = s.post("callback", install_form(token))
        assert r.status == 409
        assert r.text == ("install of 'hv1' is booting, not installing: cannot move it to "
                          "installed\n")


# --------------------------------------------------------------------------- the CLI


def test_serve_and_status_from_the_cli(tmp_path: Path) -> None:
    fleet = write_fleet(tmp_path / "fleet.yaml",
                        boot_fleet([node_uri(tmp_path, "empty.xml", "hv1.xml")]))
    db = tmp_path / "cli.db"
    (tmp_path / "files").mkdir()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "virtfleet.cli.main", "boot", "serve", "--fleet", str(fleet),
         "--files", str(tmp_path / "files"), "--port", "0", "--token-ttl", "10m"],
        env={**os.environ, "VIRTFLEET_DB": str(db)},
        stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.match(r"Serving network installs on (http://127\.0\.0\.1:\d+/) \(1 hosts, "
                     r"1 newly planned\)$", line.strip())
        assert m, line
        with urllib.request.urlopen(f"{m.group(1)}hosts/{HYP1}.ipxe", timeout=30) as r:
            assert "inst.ks=" in r.read().decode()
        status = run(db, "boot", "status", "--json")
        assert status.code == 0, status.err
        [row] = status.json()
        assert (row["host"], row["mac"], row["state"], row["error"]) == \
               ("hv1", MAC1, "booting", "")
        assert "token_hash" not in row and row["booting_at"] is not None
        table = run(db, "boot", "status")
        assert table.code == 0
        assert re.search(r"hv1\s+52:54:00:12:00:01\s+lab\s+pod1\s+booting", table.out)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()


@pytest.mark.parametrize("args,err", [
    (["--token-ttl", "soon"], "--token-ttl: 'soon' must be a number of seconds or like 90s, "
     "30m, 2h, 1d"),
    (["--token-ttl", "8d"], "--token-ttl: '8d' must be between 1 second and 7 days"),
    (["--listen", "localhost"], "--listen: 'localhost' is not an IP address"),
    (["--files", "/nonexistent/dir"], "--files: '/nonexistent/dir' is not a directory"),
    (["--public-url", "ftp://x/"], "--public-url: 'ftp://x/' must be http(s)://host[:port]/"),
])
def test_serve_bad_options(tmp_path: Path, args: list[str], err: str) -> None:
    fleet = write_fleet(tmp_path / "fleet.yaml", boot_fleet(["qemu+tcp://127.0.0.1:1/system"]))
    r = run(tmp_path / "db", "boot", "serve", "--fleet", str(fleet), "--port", "0", *args)
    assert r.code == 2 and r.err.strip() == f"virtfleet: error: {err}", (r.code, r.err)
    assert not (tmp_path / "db").exists() or run(tmp_path / "db", "boot", "status",
                                                 "--json").json() == []


@pytest.mark.parametrize("changes,field,words", [
    ({"listen": "localhost"}, "listen", "'localhost' is not an IP address"),
    ({"port": 70000}, "port", "is not a port number"),
    ({"token_ttl": timedelta(0)}, "token_ttl", "between 1 second and 7 days"),
    ({"trusted_proxies": ("10.1.1.0/33",)}, "trusted_proxies", "is not an IP address"),
    ({"public_url": "ftp://x/"}, "public_url", "must be http(s)://host[:port]/"),
    ({"files": Path("/nonexistent/dir")}, "files", "is not a directory"),
    ({"tls_key": Path("/nonexistent/key")}, "tls_cert", "needed with `tls_key`"),
])
def test_boot_server_names_the_request_field_and_opens_no_store(
        tmp_path: Path, changes: dict[str, object], field: str, words: str) -> None:
    """The settings as ServeRequest names them (the CLI words them as its options); a bad one
    is refused before the store is opened or a socket bound."""
    from virtfleet.boot.run import BootServer, ServeRequest
    from virtfleet.errors import InvalidInput

    fleet = write_fleet(tmp_path / "fleet.yaml", boot_fleet(["qemu+tcp://127.0.0.1:1/system"]))
    opened: list[bool] = []

    def store() -> Any:
        opened.append(True)
        raise AssertionError("the store is opened only once every setting has passed")

    req = ServeRequest(fleet, **{"port": 0, **changes})  # type: ignore[arg-type]
    with pytest.raises(InvalidInput) as exc:
        BootServer.open(req, store)
    assert exc.value.field == field and words in exc.value.rule, exc.value
    assert not opened


def test_serve_needs_hosts_to_install(tmp_path: Path) -> None:
    fleet = write_fleet(tmp_path / "fleet.yaml", {"sites": [{"name": "s", "pods": [
        {"name": "p", "insecure_transport": True,
         "hypervisors": [{"name": "h", "uri": "qemu+tcp://127.0.0.1:1/system"}]}]}]})
    r = run(tmp_path / "db", "boot", "serve", "--fleet", str(fleet), "--port", "0")
    assert r.code == 2
    assert r.err.strip() == (f"virtfleet: error: --fleet: {str(fleet)!r} has no hypervisor "
                             "with a provision section: nothing to install")
    assert not (tmp_path / "db").exists()


def test_status_of_an_empty_store(tmp_path: Path) -> None:
    r = run(tmp_path / "db", "boot", "status", "--json")
    assert (r.code, r.json()) == (0, [])


def test_a_strange_host_header_never_reaches_the_script(tmp_path: Path) -> None:
    # The base URL the installer is sent to comes from the Host header; it lands in an iPXE
    # script and on a kernel command line, so a header that is not host[:port] must not.
    with serving(tmp_path) as s:
        host, port = s.url.removeprefix("http://").rstrip("/").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("GET", f"/hosts/{HYP1}.ipxe", headers={"Host": "x ${net0/mac} y"})
        resp = conn.getresponse()
        text = resp.read().decode()
        conn.close()
        assert resp.status == 200
        assert "${net0/mac}" not in text and f"kernel {s.url}files/vmlinuz " in text


def test_an_install_left_unenrolled_is_enrolled_on_restart(tmp_path: Path) -> None:
    from virtfleet.boot.server import enroll_unfinished

    with serving(tmp_path) as s:
        # As if the server stopped between accepting the callback and enrolling.
        s.store.issue_install_token("hv1", "a" * 64, T0 + timedelta(hours=1), T0)
        s.store.move_install("hv1", "installing", T0, expect=("booting",))
        s.store.move_install("hv1", "installed", T0, expect=("installing",), clear_token=True)
        assert s.service.unfinished_enrolments() == ["hv1"]
        enroll_unfinished(s.service).join(60)
        rec = s.store.install("hv1")
        assert rec is not None and rec.state == "enrolled" and rec.check_ok is True
        assert s.service.unfinished_enrolments() == []


# --------------------------------------------------------------------------- review fixes


def test_a_failed_enrolment_leaves_the_machine_installed_never_reinstalled(
        tmp_path: Path) -> None:
    uri = node_uri(tmp_path, "empty.xml", "hv1.xml")
    with serving(tmp_path, uris=[uri]) as s:
        other = parse_fleet(boot_fleet(["qemu+tcp://127.0.0.1:1/system"]))
        s.store.apply(other)  # hv1 is in the inventory already, with another URI
        _, token = s.script()
        s.get(f"ks/hv1.ks?token={token}")
        assert s.post("callback", install_form(token)).status == 200
        deadline = time.monotonic() + 60
        while not (rec := s.store.install("hv1")) or not rec.error:  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert rec.state == "installed" and "already" in rec.error
        again, no_token = s.script()
        assert no_token is None and "sanboot" in again.text  # its disk, not a reinstall
        assert s.service.unfinished_enrolments() == ["hv1"]  # a restart tries again


def test_the_check_is_retried_until_the_installed_host_answers(tmp_path: Path) -> None:
    answers = iter([(False, "connection refused"), (False, "connection refused"),
                    (True, "ok: qemu")])
    with serving(tmp_path, checker=lambda _r: next(answers),
                 check_wait=timedelta(seconds=60),
                 check_interval=timedelta(milliseconds=10)) as s:
        _, token = s.script()
        s.get(f"ks/hv1.ks?token={token}")
        s.post("callback", install_form(token))
        deadline = time.monotonic() + 60
        while not (rec := s.store.install("hv1")) or not rec.check_ok:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, rec
            time.sleep(0.05)
        assert rec.state == "enrolled" and rec.check_detail == "ok: qemu"


def test_the_kickstart_renews_the_token_for_the_callback(tmp_path: Path) -> None:
    with serving(tmp_path, ttl=timedelta(hours=1)) as s:
        _, token = s.script()
        s.clock.t = T0 + timedelta(minutes=50)  # a slow boot of the installer
        assert s.get(f"ks/hv1.ks?token={token}").status == 200
        s.clock.t = T0 + timedelta(minutes=100)  # a slow install: past the script's hour
        assert s.post("callback", install_form(token)).status == 200


def test_a_replaced_token_cannot_move_the_install(tmp_path: Path) -> None:
    from virtfleet.boot import tokens
    from virtfleet.errors import Conflict

    with serving(tmp_path) as s:
        _, first = s.script()
        _, second = s.script()  # fetched again: the first token is dead
        assert first and second and first != second
        with pytest.raises(Conflict, match="token was replaced"):
            s.store.move_install("hv1", "installing", T0, expect=("booting",),
                                 token_hash=tokens.hash_token(first))
        assert s.store.install("hv1").state == "booting"  # type: ignore[union-attr]


def test_an_oversized_callback_and_a_nul_in_a_path_get_one_line(tmp_path: Path) -> None:
    with serving(tmp_path) as s:
        big = s.post("callback", b"host=hv1&pad=" + b"x" * 100_000)
        assert big.status == 400 and "over 8192 bytes" in big.text
        nul = s.get("files/a%00b")
        assert nul.status == 404 and len(nul.text.strip().splitlines()) == 1


# --------------------------------------------------------------------------- replicas


def test_a_repeated_callback_gets_the_first_ones_answer(tmp_path: Path) -> None:
    # The installer's curl retries when the answer is lost (a replica killed after it took the
    # callback, HAProxy's 502): the retry must not be refused, which would count as a wrong
    # token and tell the installer its callback failed.
    with serving(tmp_path) as s:
        _, token = s.script()
        assert token is not None
        s.get(f"ks/hv1.ks?token={token}")
        assert s.post("callback", install_form(token)).text == "hv1 installed\n"
        s.clock.t = T0 + timedelta(minutes=5)
        again = s.post("callback", install_form(token))
        assert again.status == 200 and again.text in ("hv1 installed\n", "hv1 enrolled\n")
        rec = s.wait_state("hv1", "enrolled")
        assert rec.installed_at == T0  # moved once
        after = s.post("callback", install_form(token))
        assert (after.status, after.text) == (200, "hv1 enrolled\n")
        assert [h.name for h in s.store.hypervisors()] == ["hv1"]
        # Only a repeat: the token opens nothing else, and another token is still refused.
        assert s.get(f"ks/hv1.ks?token={token}").status == 403
        assert s.post("callback", install_form(token[::-1])).status == 403
        assert s.post("callback", install_form(token, status="failed")).status == 409


def test_a_repeated_failure_callback_is_the_same_failure(tmp_path: Path) -> None:
    with serving(tmp_path) as s:
        _, token = s.script()
        assert token is not None
        s.get(f"ks/hv1.ks?token={token}")
        form = install_form(token, status="failed", error="no disk")
        assert s.post("callback", form).text == "hv1 failed\n"
        assert s.post("callback", form).text == "hv1 failed\n"
        assert s.post("callback", install_form(token)).status == 409  # not installed after all


def test_an_install_a_dead_replica_left_is_swept_once_settled(tmp_path: Path) -> None:
    from virtfleet.boot.server import sweep_enrolments_every

    with serving(tmp_path, uris=[node_uri(tmp_path, "empty.xml", f"hv{i}.xml")
                                 for i in (1, 2)]) as s:
        for host in ("hv1", "hv2"):  # both called back; nobody enrols them
            s.store.issue_install_token(host, "a" * 64, T0 + timedelta(hours=1), T0)
            s.store.move_install(host, "installing", T0, expect=("booting",))
            s.store.move_install(host, "installed", T0, expect=("installing",))
        s.store.move_install("hv2", "installed", T0, expect=("installed",),
                             error="enrol: refused")  # refused: left to a restart
        assert s.service.unfinished_enrolments(settled=timedelta(seconds=5)) == []  # too new
        s.clock.t = T0 + timedelta(seconds=5)
        assert s.service.unfinished_enrolments(settled=timedelta(seconds=5)) == ["hv1"]
        with s.store.enrolment_claim("hv1"), s.service._claim("hv1") as mine:
            assert mine
            assert s.service.enroll("hv1") is None  # another holds its claim: skipped
        stop = threading.Event()
        sweep = sweep_enrolments_every(s.service, 0.05, stop)
        try:
            rec = s.wait_state("hv1", "enrolled")
        finally:
            stop.set()
            sweep.join(10)
        assert rec.check_ok is True
        assert s.store.install("hv2").state == "installed"  # type: ignore[union-attr]
