"""qemu+tls on the lab: libvirtd listens with listen_tls and certificates from a lab CA; virtfleet
uses its own pkipath, runs the whole fleet flow over TLS, and says exactly which check failed
when one does (a certificate for another name, an expired one, no client certificate, a client
certificate the hypervisor does not allow)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.integration.transport_lab import TransportLab, fleet_flow, transport_lab
from tests.unit.cli import Result
from virtfleet.lab import pki
from virtfleet.lab.state import LabHost

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TransportLab]:
    yield from transport_lab("tls", tmp_path_factory)


@pytest.fixture(scope="module")
def inventory(tl: TransportLab) -> TransportLab:
    r = tl.cli("apply", "-f", str(tl.fleet_file))
    assert r.code == 0, r.err  # no host key to pin over TLS: the CA is the trust
    return tl


def ca(tl: TransportLab) -> pki.LabCA:
    return pki.LabCA(Path(tl.state.state_dir) / "ca", f"virtfleet lab {tl.lab.name}")


@pytest.fixture
def reissued(inventory: TransportLab) -> Iterator[LabHost]:
    """The second hypervisor, whose certificate a test replaces; a good one is put back and
    its libvirtd restarted afterwards."""
    host = inventory.hosts[1]
    yield host
    ca(inventory).issue_server(Path(host.dir) / "pki", host.name, host.address)
    inventory.restart_libvirtd(host)
    assert inventory.cli("host", "info", host.name).code == 0


def only_virtfleet_lines(r: Result) -> None:
    assert r.err and all(line.startswith("virtfleet: ") for line in r.err.splitlines()), r.err
    assert "Failed to verify peer's certificate" not in r.err, r.err


def test_the_fleet_flow_runs_over_tls(inventory: TransportLab) -> None:
    tl = inventory
    fleet_flow(tl)
    conf = (Path(tl.hosts[0].dir) / "etc" / "libvirtd.conf").read_text()
    assert "listen_tls = 1" in conf and "listen_tcp = 0" in conf


def test_a_certificate_for_another_name_is_said_so(inventory: TransportLab,
                                                   reissued: LabHost) -> None:
    tl, h = inventory, reissued
    ca(tl).issue_server(Path(h.dir) / "pki", h.name, h.address,
                        names=["not-this-host.example", "10.250.0.99"])
    tl.restart_libvirtd(h)
    r = tl.cli("host", "info", h.name)
    assert r.code == 1
    assert f"{h.name}: host-unavailable: TLS: the certificate {h.address}:16514 presents is " \
           f"for DNS:not-this-host.example, IP Address:10.250.0.99, not {h.address}" in r.err, \
        r.err
    only_virtfleet_lines(r)


def test_an_expired_certificate_is_said_so(inventory: TransportLab, reissued: LabHost) -> None:
    tl, h = inventory, reissued
    # libvirtd refuses to start with an expired certificate, so it gets one that expires
    # seconds after it started.
    ends = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    ca(tl).issue_server(Path(h.dir) / "pki", h.name, h.address,
                        pki.Validity(not_before=ends - timedelta(days=1), not_after=ends))
    tl.restart_libvirtd(h)
    while datetime.now(UTC) <= ends + timedelta(seconds=1):
        time.sleep(0.2)
    r = tl.cli("host", "info", h.name)
    assert r.code == 1
    assert f"{h.name}: host-unavailable: TLS: the certificate {h.address}:16514 presents " \
           f"expired on {ends:%Y-%m-%d %H:%M} UTC" in r.err, r.err
    only_virtfleet_lines(r)


def test_a_missing_client_certificate_is_said_so(inventory: TransportLab,
                                                 tmp_path: Path) -> None:
    tl = inventory
    client = tl.copy_client(tmp_path)
    (client / "pki" / "clientcert.pem").unlink()
    r = tl.cli("list", client=client)
    assert r.code == 1
    for h in tl.hosts:
        assert f"{h.name}: host-unavailable: TLS: no client certificate: " \
               f"{client}/pki/clientcert.pem is missing" in r.err, r.err
    only_virtfleet_lines(r)


def test_a_client_certificate_the_hypervisor_does_not_allow_is_said_so(
        inventory: TransportLab, tmp_path: Path) -> None:
    tl = inventory
    client = tl.copy_client(tmp_path)
    shutil.rmtree(client / "pki")
    ca(tl).issue_client(client / "pki", cn="intruder")  # same CA, a DN not on the allowed list
    h = tl.hosts[0]
    r = tl.cli("host", "info", h.name, client=client)
    assert r.code == 1
    assert f"{h.name}: host-unavailable: TLS: the hypervisor refused our client certificate " \
           f"{client}/pki/clientcert.pem" in r.err, r.err
    only_virtfleet_lines(r)
    # ... and libvirtd says why, too, in its log: written by its own thread, so it can trail
    # the refusal the client already saw.
    log = Path(h.dir) / "log" / "libvirtd.log"
    deadline = time.monotonic() + 30
    while "not on the list of allowed clients" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)
