"""libvirt's transport failures, said in one clear line.

Over qemu+ssh libvirt's message is ssh's whole stderr (a 15-line banner for a changed host key)
wrapped in "Cannot recv data: ...: Connection reset by peer". Over qemu+tls it is worse: an
expired certificate, a certificate for another name and one from another CA all come out as
"authentication failed: Failed to verify peer's certificate", and a client certificate the
hypervisor refuses as "Unable to read TLS confirmation: Input/output error". So for ssh the text
is read for what ssh said, and for TLS virtfleet repeats the handshake itself (Python's ssl, the
same CA and client certificate) to find out which check failed.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from virtfleet.errors import InvalidInput
from virtfleet.inventory.uri import parse_uri
from virtfleet.transport.hostkeys import KnownHosts, preferred, scan
from virtfleet.transport.paths import CA_CERT, CLIENT_CERT, CLIENT_KEY, TransportDir

TLS_PORT = 16514
SSH_WRAPPED = re.compile(r"^Cannot recv data: (?P<ssh>.*?)(?:: Connection reset by peer)?$",
                         re.S)
_CHANGED_FP = re.compile(r"The fingerprint for the (\w+) key sent by the remote host is\s*"
                         r"(SHA256:[A-Za-z0-9+/=]+)")
_UNKNOWN = re.compile(r"No (\w+) host key is known for (\S+)")
_DENIED = re.compile(r"(?:(\S+)@(\S+): )?Permission denied \(([^)]*)\)")
_CONNECT = re.compile(r"ssh: connect to host (\S+) port (\d+): (.+)")
_RESOLVE = re.compile(r"ssh: Could not resolve hostname (\S+): (.+)")
_NO_NC = re.compile(r"\bnc: not found")
_TOO_LONG = "Value too large for defined data type"  # libvirt's EOVERFLOW on ssh's stderr
_HOSTKEY_HINTS = ("Host key verification failed", _TOO_LONG)
_TLS_VAGUE = ("Failed to verify peer's certificate", "Unable to read TLS confirmation")
X509_V_FLAG_NO_CHECK_TIME = 0x200000  # OpenSSL: verify the chain, leave the dates to us


def _clean(text: str) -> str:
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return "; ".join(lines)


def _changed(host: str, offers: str) -> str:
    return (f"ssh host key CHANGED since it was pinned{offers} (a reinstalled host, or a "
            f"man in the middle): check it, then `virtfleet hostkey forget {host}` and "
            f"`virtfleet hostkey pin {host} --accept-new`")


def _not_pinned(address: str, host: str) -> str:
    return (f"ssh host key of {address} is not pinned (virtfleet trusts only keys in its "
            f"known_hosts): `virtfleet hostkey pin {host}` shows its fingerprint; add "
            "--accept-new to trust it")


def hostkey_failure(address: str, port: int, host: str, known_hosts: Path,
                    timeout: float) -> str | None:
    """Whether the host's key is the reason: none pinned, or the host offers another one
    (asked with ssh-keyscan). libvirt keeps at most 1 KiB of ssh's errors, and the banner ssh
    prints for a changed key is longer, so the text alone cannot always say."""
    pinned = KnownHosts(known_hosts).keys_for(address, port)
    if not pinned:
        return _not_pinned(address, host)
    try:
        offered = scan([address], port, max(1, int(timeout))).get(address, [])
    except OSError:
        return None
    if offered and not any(k in pinned for k in offered):
        best = preferred(offered)
        return _changed(host, f"; it now offers {best.describe()}" if best else "")
    return None


def ssh_failure(message: str, host: str) -> str | None:
    """What ssh said, in one line; None if `message` is not an ssh failure."""
    m = SSH_WRAPPED.match(message.strip())
    if m is None:
        return None
    said = m.group("ssh")
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in said or "has changed and you have" in said:
        fp = _CHANGED_FP.search(said)
        return _changed(host, f"; it now offers {fp.group(1)} {fp.group(2).rstrip('.')}"
                        if fp else "")
    if (u := _UNKNOWN.search(said)) is not None:
        return _not_pinned(u.group(2), host)
    if (d := _DENIED.search(said)) is not None:
        who = f" as {d.group(1)}" if d.group(1) else ""
        return (f"ssh refused our key{who} (Permission denied ({d.group(3)})): the host's "
                "authorized_keys does not hold virtfleet's public key (VIRTFLEET_SSH_KEY or "
                "id_ed25519 in the transport directory; see docs/transports.md)")
    if (c := _CONNECT.search(said)) is not None:
        return f"ssh: cannot connect to {c.group(1)} port {c.group(2)}: {c.group(3).strip()}"
    if (r := _RESOLVE.search(said)) is not None:
        return f"ssh: cannot resolve {r.group(1)}: {r.group(2).strip()}"
    if _NO_NC.search(said):
        return ("the host has neither virt-ssh-helper (libvirt-daemon) nor nc (netcat-openbsd), "
                "one of which libvirt runs there to reach libvirtd")
    if _TOO_LONG in said:
        return ("ssh failed and said more than libvirt keeps (1 KiB); see it with: ssh -F "
                "<transport dir>/ssh_config <user@host> true")
    cleaned = _clean(said)
    return f"ssh: {cleaned}" if cleaned else None


def _names(cert: Mapping[str, Any]) -> list[str]:
    san = cert.get("subjectAltName") or ()
    names = [f"{kind}:{value}" for kind, value in san if kind in ("DNS", "IP Address")]
    if not names:
        for rdn in cert.get("subject") or ():
            for key, value in rdn:
                if key == "commonName":
                    names.append(f"CN:{value}")
    return names


def _matches(address: str, names: list[str]) -> bool:
    try:
        want_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = \
            ipaddress.ip_address(address)
    except ValueError:
        want_ip = None
    for name in names:
        kind, _, value = name.partition(":")
        if want_ip is not None and kind == "IP Address":
            try:
                if ipaddress.ip_address(value.strip()) == want_ip:
                    return True
            except ValueError:
                continue
        elif want_ip is None and kind in ("DNS", "CN"):
            value = value.lower().rstrip(".")
            host = address.lower().rstrip(".")
            if value == host or (value.startswith("*.") and host.partition(".")[2] == value[2:]
                                 and "." in value[2:]):
                return True
    return False


def _when(text: str) -> datetime:
    return datetime.fromtimestamp(ssl.cert_time_to_seconds(text), UTC)


def tls_failure(address: str, port: int, pki: Path, timeout: float) -> str | None:
    """Repeat the TLS handshake libvirt failed and say which check failed; None if it passes
    (or the host cannot be reached at all: libvirt's own message then says so)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # checked below, so the message can name the certificate's names
    ctx.verify_flags |= X509_V_FLAG_NO_CHECK_TIME  # type: ignore[assignment]
    try:
        ctx.load_verify_locations(cafile=str(pki / CA_CERT))
        ctx.load_cert_chain(str(pki / CLIENT_CERT), str(pki / CLIENT_KEY))
    except (OSError, ssl.SSLError) as exc:
        return f"TLS: cannot load {pki}: {exc}"
    where = f"{address}:{port}"
    try:
        with socket.create_connection((address, port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw) as tls:
            cert = tls.getpeercert() or {}
            now = datetime.now(UTC)
            not_after = str(cert.get("notAfter", ""))
            not_before = str(cert.get("notBefore", ""))
            if not_after and _when(not_after) < now:
                return (f"TLS: the certificate {where} presents expired on "
                        f"{_when(not_after):%Y-%m-%d %H:%M} UTC: renew it on the host")
            if not_before and _when(not_before) > now:
                return (f"TLS: the certificate {where} presents is not valid before "
                        f"{_when(not_before):%Y-%m-%d %H:%M} UTC (or one of the clocks is "
                        "wrong)")
            names = _names(cert)
            if not _matches(address, names):
                return (f"TLS: the certificate {where} presents is for "
                        f"{', '.join(names) or 'no name'}, not {address}: connect by one of "
                        "its names, or issue it with this one as a subjectAltName")
            answer = tls.recv(1)  # libvirtd confirms with one byte once it accepts our cert
            if answer != b"\x01":
                return _refused(pki, "it closed the connection")
            return None
    except ssl.SSLCertVerificationError as exc:
        return (f"TLS: the certificate {where} presents is not signed by the CA virtfleet "
                f"trusts ({pki / CA_CERT}): {exc.verify_message}")
    except ssl.SSLError as exc:
        return _refused(pki, exc.reason or str(exc))
    except OSError:
        return None


def _refused(pki: Path, why: str) -> str:
    return (f"TLS: the hypervisor refused our client certificate {pki / CLIENT_CERT} ({why}): "
            "is it signed by the hypervisor's CA, unexpired, and its DN on the hypervisor's "
            "tls_allowed_dn_list?")


def explain(message: str, uri: str, host: str, td: TransportDir,
            timeout: float) -> str | None:
    """A clear line for a failed open of `uri`, or None to keep libvirt's own message."""
    try:
        parsed = parse_uri(uri)
    except InvalidInput:
        return None
    if parsed.transport == "ssh":
        said = ssh_failure(message, host)
        if any(hint in message for hint in _HOSTKEY_HINTS) and "CHANGED" not in (said or ""):
            return hostkey_failure(parsed.host, parsed.port or 22, host, td.known_hosts,
                                   timeout) or said
        return said
    if parsed.transport == "tls" and any(v in message for v in _TLS_VAGUE):
        return tls_failure(parsed.host, parsed.port or TLS_PORT, td.pki, timeout)
    return None
