"""The lab's ssh and TLS pieces, checked by the tools that use them: sshd reads the sshd_config
(`sshd -t`), certtool and libvirt's own virt-pki-query-dn read the certificates. (The labs
that run them are tests/integration/test_transport_*.py.)"""

from __future__ import annotations

import os
import stat
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.unit.cli import run
from tests.unit.tools import require_tool
from virtfleet.errors import InvalidInput, LabError
from virtfleet.lab import pki, sshd, transports
from virtfleet.lab.names import LabNames


def certinfo(cert: Path) -> str:
    return subprocess.run(["certtool", "-i", "--infile", str(cert)], capture_output=True,
                          text=True, check=True, timeout=30).stdout


@pytest.fixture
def ca(tmp_path: Path) -> pki.LabCA:
    require_tool("certtool", "gnutls-bin")
    authority = pki.LabCA(tmp_path / "ca", "virtfleet lab t")
    authority.create()
    return authority


def test_a_server_certificate_names_the_host_and_its_address(ca: pki.LabCA,
                                                             tmp_path: Path) -> None:
    cert = ca.issue_server(tmp_path / "h1", "lab-hv1", "10.250.7.11")
    info = certinfo(cert)
    assert "DNSname: lab-hv1" in info and "IPAddress: 10.250.7.11" in info
    assert "TLS WWW Server" in info and "Key encipherment" in info  # libvirt requires both
    assert stat.S_IMODE(os.stat(tmp_path / "h1" / pki.SERVER_KEY).st_mode) == 0o600
    assert (tmp_path / "h1" / pki.CA_CERT).read_bytes() == ca.cert.read_bytes()
    subprocess.run(["certtool", "--verify", "--load-ca-certificate", str(ca.cert), "--infile",
                    str(cert)], check=True, capture_output=True, timeout=30)


def test_a_certificate_can_be_for_another_name_or_already_expired(ca: pki.LabCA,
                                                                  tmp_path: Path) -> None:
    wrong = certinfo(ca.issue_server(tmp_path / "w", "lab-hv1", "10.250.7.11",
                                     names=["other.example", "10.250.7.99"]))
    assert "DNSname: other.example" in wrong and "10.250.7.11" not in wrong
    end = datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC)
    old = certinfo(ca.issue_server(tmp_path / "e", "lab-hv1", "10.250.7.11",
                                   pki.Validity(not_after=end)))
    assert "Not After: Thu Mar 04 05:06:07 UTC 2021" in old
    with pytest.raises(LabError, match="may hold only"):
        ca.issue_server(tmp_path / "x", 'bad"name', "10.250.7.11")


def test_the_client_dn_is_the_one_libvirt_reads_from_the_certificate(
        ca: pki.LabCA, tmp_path: Path) -> None:
    require_tool("virt-pki-query-dn", "libvirt-clients")
    cert = ca.issue_client(tmp_path / "client")
    dn = subprocess.run(["virt-pki-query-dn", str(cert)], capture_output=True, text=True,
                        check=True, timeout=30).stdout.strip()
    assert dn == ca.client_dn()  # what tls_allowed_dn_list must hold, character for character
    assert stat.S_IMODE(os.stat(tmp_path / "client" / pki.CLIENT_KEY).st_mode) == 0o600


def test_sshd_accepts_the_lab_config(tmp_path: Path) -> None:
    require_tool("/usr/sbin/sshd", "openssh-server")
    require_tool("ssh-keygen", "openssh-client")
    if os.geteuid() != 0:
        pytest.skip("sshd -t needs root (its privilege separation directory)")
    host_dir = tmp_path / "h1"
    (host_dir / "log").mkdir(parents=True)
    sshd.prepare(host_dir, "10.250.7.11", "lab-hv1", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"
                 "HCdFJWfaGbAdjGbWuaeiOGW3wuGn9aqMMkJcml7E21x lab")  # runs sshd -t itself
    config = sshd.config_path(host_dir).read_text()
    for line in ("ListenAddress 10.250.7.11:22", "PasswordAuthentication no", "UsePAM no",
                 "PermitRootLogin prohibit-password", "AllowTcpForwarding no"):
        assert f"\n{line}\n" in config
    out = subprocess.run([sshd.SSHD, "-T", "-f", str(sshd.config_path(host_dir))],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    assert "passwordauthentication no" in out and "pubkeyauthentication yes" in out
    assert sshd.host_key(host_dir).type == "ssh-ed25519"


def test_sshd_config_values_are_checked(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="reads specially"):
        sshd.sshd_config(tmp_path / "with space", "10.250.7.11")
    with pytest.raises(ValueError):
        sshd.sshd_config(tmp_path, "not-an-address")


def test_each_transport_has_its_listeners(tmp_path: Path) -> None:
    names = LabNames.for_lab("tt", tmp_path)
    tcp = transports.listen_settings(None, "10.250.7.11")
    assert (tcp["listen_tcp"], tcp["listen_tls"], tcp["auth_tcp"]) == (1, 0, "none")
    ssh = transports.listen_settings(transports.ClientSide("ssh"), "10.250.7.11")
    assert (ssh["listen_tcp"], ssh["listen_tls"]) == (0, 0)  # the Unix socket only
    ca = pki.LabCA(tmp_path / "ca", "virtfleet lab tt")
    tls = transports.listen_settings(transports.ClientSide("tls", ca=ca), "10.250.7.11",
                                     names.host_dir(1))
    assert (tls["listen_tcp"], tls["listen_tls"], tls["auth_tls"]) == (0, 1, "none")
    assert tls["tls_allowed_dn_list"] == ["O=virtfleet lab tt,CN=virtfleet",  # virtfleet
                                         "O=virtfleet lab tt,CN=*-hv*"]  # its peers
    with pytest.raises(InvalidInput, match="transport: 'udp' is not one of tcp, ssh, tls"):
        transports.check_transport("udp")


def test_lab_up_refuses_an_unknown_transport_before_making_anything(tmp_path: Path) -> None:
    labs = tmp_path / "labs"
    r = run(tmp_path / "s.db", "lab", "up", "--transport", "udp", "--name", "tt",
            env={"VIRTFLEET_LAB_DIR": str(labs)})
    assert (r.code, r.out) == (2, "")
    assert r.err == "virtfleet: error: --transport: 'udp' is not one of tcp, ssh, tls\n"
    assert not labs.exists()  # no state directory, so no namespace or daemon either
