"""Hypervisor connection URIs, parsed into validated parts and rendered back.

libvirt URIs accept query parameters that change what the client runs or trusts (`command=`,
`socket=`, `netcat=`, `no_verify=`, `keyfile=`...). A fleet file is config that many people edit, so
virtfleet accepts none of them: a URI is scheme, optional user, host, optional port and path, and
nothing else. What an estate needs beyond that (ssh keys, TLS certificates) belongs in the client's
own configuration, not in the inventory.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from virtfleet.errors import InvalidInput
from virtfleet.validate import check_name

# driver -> transports allowed with it ("" is the local, transport-less form).
_SCHEMES: dict[str, tuple[str, ...]] = {
    "qemu": ("", "ssh", "tls", "tcp"),
    "test": ("", "tcp"),
}
_QEMU_PATHS = ("/system", "/session")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_TEST_PATH_RE = re.compile(r"^/[A-Za-z0-9_./+-]+$")


@dataclass(frozen=True)
class HypervisorURI:
    driver: str
    transport: str
    host: str
    path: str
    user: str = ""
    port: int | None = None

    def render(self) -> str:
        scheme = f"{self.driver}+{self.transport}" if self.transport else self.driver
        authority = ""
        if self.host:
            host = f"[{self.host}]" if ":" in self.host else self.host
            authority = f"{self.user}@{host}" if self.user else host
            if self.port is not None:
                authority += f":{self.port}"
        return f"{scheme}://{authority}{self.path}"

    def __str__(self) -> str:
        return self.render()


def parse_uri(value: object, field: str = "uri") -> HypervisorURI:
    """Parse and validate a hypervisor URI; raise InvalidInput naming `field` on any bad part."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(field, "must be a libvirt URI such as qemu+ssh://host/system")
    if any(ch.isspace() for ch in value) or any(ord(ch) < 32 for ch in value):
        raise InvalidInput(field, "must not contain spaces or control characters")
    parts = urlsplit(value)
    if parts.query or "?" in value:
        raise InvalidInput(
            field,
            "URI parameters (?command=, ?socket=, ?no_verify=, ...) are not accepted; "
            "configure ssh/TLS on the client instead",
        )
    if parts.fragment or "#" in value:
        raise InvalidInput(field, "must not contain a '#' fragment")
    driver, _, transport = parts.scheme.partition("+")
    if driver not in _SCHEMES or transport not in _SCHEMES[driver]:
        allowed = ", ".join(
            f"{d}+{t}" if t else d for d, ts in _SCHEMES.items() for t in ts
        )
        raise InvalidInput(field, f"scheme {parts.scheme!r} is not one of: {allowed}")
    try:
        hostname = parts.hostname or ""
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(field, f"bad host or port ({exc})") from None
    if port == 0:
        raise InvalidInput(field, "port must be from 1 to 65535")
    if parts.password is not None:
        raise InvalidInput(field, "must not carry a password")
    user = parts.username or ""
    if user and not _USER_RE.match(user):
        raise InvalidInput(field, f"user {user!r} is not a valid login name")
    if transport and not hostname:
        raise InvalidInput(field, f"a {parts.scheme} URI needs a host")
    if not transport and hostname:
        raise InvalidInput(
            field, f"a local {driver}:// URI takes no host; use {driver}+ssh or {driver}+tcp"
        )
    if hostname:
        _check_host(field, hostname)
    path = parts.path
    if driver == "qemu":
        if path not in _QEMU_PATHS:
            raise InvalidInput(field, f"qemu URI path must be /system or /session, not {path!r}")
    else:
        if not _TEST_PATH_RE.match(path) or "/../" in path + "/" or "/./" in path + "/":
            raise InvalidInput(
                field, "test URI path must be an absolute node file path (or /default)"
            )
    return HypervisorURI(
        driver=driver, transport=transport, host=hostname, path=path, user=user, port=port
    )


def _check_host(field: str, host: str) -> None:
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    check_name(f"{field} host", host)
