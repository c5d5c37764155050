"""ssh host keys: virtfleet's known_hosts file, ssh-keyscan, and fingerprints as ssh shows them.

virtfleet writes plain (unhashed) entries, one key per host: `HOST TYPE BASE64` for port 22,
`[HOST]:PORT TYPE BASE64` otherwise, exactly what ssh looks up for `ssh -p PORT HOST`. Lines it
did not write (hashed ones, markers, comments) are kept as they are and never matched.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import os
import struct
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from virtfleet.transport.paths import write_private

# Preferred first: the one key virtfleet pins per host, and the one ssh then negotiates.
KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
             "ecdsa-sha2-nistp521", "ssh-rsa")
_SCAN_TYPES = "ed25519,ecdsa,rsa"
_SHORT = {"ssh-ed25519": "ED25519", "ssh-rsa": "RSA"}
MAX_KEY_B64 = 4096


class BadKey(ValueError):
    """A key line that is not a well-formed public key of a known type."""


@dataclass(frozen=True)
class HostKey:
    type: str  # ssh's name: ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa
    data: str  # base64 of the public key blob

    @classmethod
    def parse(cls, key_type: str, data: str) -> HostKey:
        """Check `data` decodes to a public key blob of `key_type` (its first field says so)."""
        if key_type not in KEY_TYPES:
            raise BadKey(f"key type {key_type!r} is not one of {', '.join(KEY_TYPES)}")
        if not data or len(data) > MAX_KEY_B64:
            raise BadKey("empty or oversized key")
        try:
            blob = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise BadKey("key is not base64") from None
        if len(blob) < 4:
            raise BadKey("key blob is too short")
        (n,) = struct.unpack(">I", blob[:4])
        if blob[4:4 + n] != key_type.encode():
            raise BadKey(f"key blob is not a {key_type} key")
        return cls(key_type, data)

    @property
    def fingerprint(self) -> str:
        """`SHA256:...` as `ssh-keygen -lf` and ssh's own prompts print it."""
        digest = hashlib.sha256(base64.b64decode(self.data)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    @property
    def short_type(self) -> str:
        return _SHORT.get(self.type, "ECDSA" if self.type.startswith("ecdsa") else self.type)

    def describe(self) -> str:
        return f"{self.short_type} {self.fingerprint}"


def host_pattern(address: str, port: int) -> str:
    """The name ssh looks a host up by in known_hosts."""
    return address if port == 22 else f"[{address}]:{port}"


def preferred(keys: Sequence[HostKey]) -> HostKey | None:
    ranked = sorted(keys, key=lambda k: KEY_TYPES.index(k.type))
    return ranked[0] if ranked else None


@dataclass(frozen=True)
class Entry:
    patterns: tuple[str, ...]
    key: HostKey


def _parse_line(line: str) -> Entry | None:
    parts = line.split()
    if len(parts) < 3 or parts[0].startswith(("#", "@", "|")):
        return None
    try:
        return Entry(tuple(parts[0].split(",")), HostKey.parse(parts[1], parts[2]))
    except BadKey:
        return None


class KnownHosts:
    """virtfleet's known_hosts. Writers take an flock on a lock file beside it (the file itself
    is replaced atomically, so it cannot carry the lock), so two CLIs pinning at once both land;
    it stays 0600."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _lines(self) -> list[str]:
        try:
            return self.path.read_text().splitlines()
        except FileNotFoundError:
            return []

    def entries(self) -> list[Entry]:
        return [e for e in (_parse_line(ln) for ln in self._lines()) if e is not None]

    def keys_for(self, address: str, port: int) -> list[HostKey]:
        want = host_pattern(address, port)
        return [e.key for e in self.entries() if want in e.patterns]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock = self.path.with_name(f".{self.path.name}.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def add(self, address: str, port: int, key: HostKey) -> None:
        with self._locked():
            lines = self._lines()
            line = f"{host_pattern(address, port)} {key.type} {key.data}"
            if line not in lines:
                write_private(self.path, "\n".join([*lines, line]) + "\n")

    def forget(self, address: str, port: int) -> int:
        """Drop every key pinned for this host; return how many."""
        want = host_pattern(address, port)
        with self._locked():
            lines = self._lines()
            keep = []
            for ln in lines:
                e = _parse_line(ln)
                if e is not None and want in e.patterns:
                    continue
                keep.append(ln)
            if len(keep) != len(lines):
                write_private(self.path, "".join(f"{ln}\n" for ln in keep))
            return len(lines) - len(keep)


def scan(addresses: Sequence[str], port: int, timeout: int = 5) -> dict[str, list[HostKey]]:
    """Ask each host for its public host keys (ssh-keyscan, all hosts of one port in one run,
    which ssh-keyscan does in parallel). A host that did not answer is absent from the result."""
    if not addresses:
        return {}
    argv = ["ssh-keyscan", "-T", str(timeout), "-p", str(port), "-t", _SCAN_TYPES, "-f", "-"]
    try:
        proc = subprocess.run(argv, input="".join(f"{a}\n" for a in addresses),
                              capture_output=True, text=True, check=False,
                              timeout=timeout * 2 + 10 + len(addresses) // 50)
    except FileNotFoundError:
        raise OSError("ssh-keyscan is not installed (Debian package openssh-client)") from None
    except subprocess.TimeoutExpired:
        raise OSError(f"ssh-keyscan did not finish within {timeout * 2 + 10}s") from None
    wanted = {host_pattern(a, port): a for a in addresses}
    found: dict[str, list[HostKey]] = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) < 3 or parts[0] not in wanted:
            continue
        try:
            key = HostKey.parse(parts[1], parts[2])
        except BadKey:
            continue
        found.setdefault(wanted[parts[0]], []).append(key)
    return found
