"""`boot serve --tftp`: read-only TFTP on loopback, through tftpy's own client."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import tftpy

from tests.unit.boot_fleet import boot_fleet, write_fleet
from tests.unit.cli import run
from virtfleet.boot.tftp import start_tftp
from virtfleet.errors import InvalidInput


def tftp_root(tmp_path: Path) -> Path:
    root = tmp_path / "tftp"
    (root / "pxelinux.cfg").mkdir(parents=True)
    (root / "pxelinux.cfg" / "default").write_text("DEFAULT local\n")
    (root / "pxelinux.0").write_bytes(bytes(range(256)) * 200)  # several 512-byte blocks
    (tmp_path / "secret").write_text("outside")
    return root


def test_serves_files_and_refuses_uploads_and_escapes(tmp_path: Path) -> None:
    root = tftp_root(tmp_path)
    svc = start_tftp(root, "127.0.0.1", 0)
    try:
        client = tftpy.TftpClient("127.0.0.1", svc.port)
        got = tmp_path / "got"
        client.download("pxelinux.0", str(got))
        assert got.read_bytes() == (root / "pxelinux.0").read_bytes()
        client.download("/pxelinux.cfg/default", str(got))
        assert got.read_text() == "DEFAULT local\n"
        with pytest.raises(tftpy.TftpException):
            client.download("../secret", str(tmp_path / "escaped"))
        upload = tmp_path / "upload"
        upload.write_bytes(b"x" * 10)
        with pytest.raises(tftpy.TftpException, match="Access violation"):
            client.upload("new.cfg", str(upload))
        assert not (root / "new.cfg").exists()
    finally:
        svc.stop()


def test_bad_directory_and_port_in_use(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="^tftp: '/nonexistent' is not a directory$"):
        start_tftp(Path("/nonexistent"), "127.0.0.1", 0)
    root = tftp_root(tmp_path)
    first = start_tftp(root, "127.0.0.1", 0)
    try:
        with pytest.raises(InvalidInput, match=rf"^tftp_port: cannot serve TFTP on "
                                               rf"127\.0\.0\.1:{first.port}: "):
            start_tftp(root, "127.0.0.1", first.port)
    finally:
        first.stop()


def test_serve_with_tftp_from_the_cli(tmp_path: Path) -> None:
    root = tftp_root(tmp_path)
    fleet = write_fleet(tmp_path / "fleet.yaml", boot_fleet(["qemu+tcp://127.0.0.1:1/system"]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "virtfleet.cli.main", "--db", str(tmp_path / "db"), "boot",
         "serve", "--fleet", str(fleet), "--port", "0", "--tftp", str(root),
         "--tftp-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        line = proc.stdout.readline()
        m = re.match(rf"Serving {re.escape(str(root))} over TFTP on 127\.0\.0\.1:(\d+) "
                     r"\(read-only\)$", line.strip())
        assert m, line
        got = tmp_path / "got"
        tftpy.TftpClient("127.0.0.1", int(m.group(1))).download("pxelinux.cfg/default",
                                                                str(got))
        assert got.read_text() == "DEFAULT local\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_serve_bad_tftp_dir_records_nothing(tmp_path: Path) -> None:
    fleet = write_fleet(tmp_path / "fleet.yaml", boot_fleet(["qemu+tcp://127.0.0.1:1/system"]))
    r = run(tmp_path / "db", "boot", "serve", "--fleet", str(fleet), "--port", "0",
            "--tftp", str(tmp_path / "none"))
    assert r.code == 2
    assert r.err.strip() == f"virtfleet: error: --tftp: '{tmp_path / 'none'}' is not a directory"
    assert run(tmp_path / "db", "boot", "status", "--json").json() == []
