"""The lab's certificate authority for qemu+tls (certtool, from gnutls-bin, as libvirt's docs do).

    ca = LabCA(state_dir / "ca", "virtfleet lab NAME")
    ca.create()                                  # CA key (0600) and certificate
    ca.issue_client(client_dir / "pki")          # cacert.pem, clientcert.pem, clientkey.pem
    ca.issue_server(host_dir / "pki", "lab-hv1", "10.250.K.11")   # servercert/serverkey

Keys are RSA: libvirt requires the key-encipherment usage, which ECDSA keys cannot have. Each
certificate is made from a certtool template file written beside it; every value that goes into
a template is checked first (names, addresses, dates), so a template holds nothing but them.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from virtfleet.errors import LabError
from virtfleet.lab.run import run

KEY_BITS = 2048
CLIENT_CN = "virtfleet"
# libvirt's file names: a client's pkipath, and what libvirtd.conf points at on a server.
CA_CERT, CLIENT_CERT, CLIENT_KEY = "cacert.pem", "clientcert.pem", "clientkey.pem"
SERVER_CERT, SERVER_KEY = "servercert.pem", "serverkey.pem"
_TEXT_RE = re.compile(r"^[A-Za-z0-9*][A-Za-z0-9 ._*-]{0,63}$")


def _text(value: str) -> str:
    if not _TEXT_RE.match(value):
        raise LabError(f"pki: {value!r} may hold only letters, digits, spaces and . _ -")
    return value


def _date(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _template(fields: list[tuple[str, str | None]]) -> str:
    """certtool's template syntax: `key = "value"`, or a bare `key` for a flag."""
    lines = [f'{k} = "{v}"' if v is not None else k for k, v in fields]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Validity:
    """How long a certificate is valid: `days` from now, or an explicit window (tests make
    expired certificates this way)."""

    days: int = 365
    not_before: datetime | None = None
    not_after: datetime | None = None

    def fields(self) -> list[tuple[str, str | None]]:
        if self.not_after is None:
            return [("expiration_days", str(int(self.days)))]
        start = self.not_before or datetime(2020, 1, 1, tzinfo=UTC)
        return [("activation_date", _date(start)), ("expiration_date", _date(self.not_after))]


def _private_key(path: Path) -> None:
    run(["certtool", "--generate-privkey", "--key-type=rsa", f"--bits={KEY_BITS}", "--no-text",
         "--outfile", str(path)], f"pki: making key {path.name}")
    os.chmod(path, 0o600)


class LabCA:
    def __init__(self, directory: Path, organization: str) -> None:
        self.dir = directory
        self.organization = _text(organization)

    @property
    def cert(self) -> Path:
        return self.dir / CA_CERT

    @property
    def key(self) -> Path:
        return self.dir / "cakey.pem"

    def create(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _private_key(self.key)
        tpl = self.dir / "ca.info"
        tpl.write_text(_template([("organization", self.organization),
                                  ("cn", f"{self.organization} CA"), ("ca", None),
                                  ("cert_signing_key", None), ("expiration_days", "3650")]))
        run(["certtool", "--generate-self-signed", "--no-text", "--load-privkey", str(self.key),
             "--template", str(tpl), "--outfile", str(self.cert)], "pki: making the lab CA")

    def _issue(self, out: Path, key: Path, fields: list[tuple[str, str | None]],
               what: str) -> None:
        tpl = out.with_suffix(".info")
        tpl.write_text(_template([("organization", self.organization), *fields]))
        run(["certtool", "--generate-certificate", "--no-text", "--load-privkey", str(key),
             "--load-ca-certificate", str(self.cert), "--load-ca-privkey", str(self.key),
             "--template", str(tpl), "--outfile", str(out)], f"pki: issuing {what}")

    def issue_server(self, directory: Path, name: str, address: str,
                     validity: Validity | None = None, names: list[str] | None = None) -> Path:
        """A server certificate for `name` at `address` (both as subjectAltNames), the CA's
        certificate and the key, in `directory`; returns the certificate. `names` replaces
        [name, address] (a certificate for the wrong name)."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        alt: list[tuple[str, str | None]] = []
        for n in names if names is not None else [name, address]:
            try:
                alt.append(("ip_address", str(ipaddress.ip_address(n))))
            except ValueError:
                alt.append(("dns_name", _text(n)))
        key = directory / SERVER_KEY
        if not key.exists():
            _private_key(key)
        cert = directory / SERVER_CERT
        self._issue(cert, key, [("cn", _text(name)), *alt, ("tls_www_server", None),
                                ("signing_key", None), ("encryption_key", None),
                                *(validity or Validity()).fields()], f"{name}'s certificate")
        (directory / CA_CERT).write_bytes(self.cert.read_bytes())
        return cert

    def issue_client(self, directory: Path, cn: str = CLIENT_CN) -> Path:
        """libvirt's client pkipath: cacert.pem, clientcert.pem, clientkey.pem (0600)."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = directory / CLIENT_KEY
        _private_key(key)
        cert = directory / CLIENT_CERT
        self._issue(cert, key, [("cn", _text(cn)), ("tls_www_client", None),
                                ("signing_key", None), ("encryption_key", None),
                                ("expiration_days", "365")], "the client certificate")
        (directory / CA_CERT).write_bytes(self.cert.read_bytes())
        return cert

    def client_dn(self, cn: str = CLIENT_CN) -> str:
        """The DN libvirtd compares with tls_allowed_dn_list (virt-pki-query-dn's format)."""
        return f"O={self.organization},CN={_text(cn)}"
