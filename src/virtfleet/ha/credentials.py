"""A BMC's password: read, when needed, from the 0600 file or the environment variable that the
fleet file names. The fleet file never holds the password itself, and nothing here prints it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from virtfleet.errors import InvalidInput
from virtfleet.inventory.fleetfile import BmcSpec

MAX_PASSWORD_FILE = 1024
IPMI_MAX_PASSWORD = 20  # IPMI 2.0 passwords are at most 20 bytes


class BmcConfigError(InvalidInput):
    """A hypervisor's BMC settings cannot be used. Names the host and the field."""

    def __init__(self, host: str, field: str, rule: str) -> None:
        super().__init__(f"bmc.{field}" if field else "bmc", rule, host=host)


class Secret:
    """A string that does not show itself in reprs, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def _check_text(host: str, field: str, value: str, agent: str) -> str:
    if not value:
        raise BmcConfigError(host, field, "the password is empty")
    if any(ch in value for ch in "\r\n\x00"):
        raise BmcConfigError(host, field, "the password must be one line")
    # Fence agents read `name=value` lines and strip spaces and one pair of double quotes: a
    # password that begins or ends with either would reach the BMC changed.
    if value != value.strip() or (value.startswith('"') and value.endswith('"')):
        raise BmcConfigError(host, field, "the password must not begin or end with a space, "
                             "or be wrapped in double quotes")
    if agent == "ipmilan" and len(value.encode()) > IPMI_MAX_PASSWORD:
        raise BmcConfigError(host, field, f"IPMI passwords are at most {IPMI_MAX_PASSWORD} "
                             "bytes")
    return value


def _read_file(host: str, path: Path) -> str:
    field = "password_file"
    try:
        # O_NOFOLLOW: the file named must itself be private; a link to it proves nothing.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise BmcConfigError(host, field, f"{str(path)!r} does not exist") from None
    except OSError as exc:
        raise BmcConfigError(host, field, f"{str(path)!r} cannot be opened "
                             f"({exc.strerror}; a symbolic link is refused)") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise BmcConfigError(host, field, f"{str(path)!r} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        if st.st_uid != os.geteuid():
            raise BmcConfigError(host, field, f"{str(path)!r} must be owned by the user "
                                 f"virtfleet runs as (uid {os.geteuid()}, not {st.st_uid})")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise BmcConfigError(host, field, f"{str(path)!r} must be readable by its owner "
                                 f"only (chmod 600; it is {mode:04o})")
        raw = f.read(MAX_PASSWORD_FILE + 1)
    if len(raw) > MAX_PASSWORD_FILE:
        raise BmcConfigError(host, field, f"{str(path)!r} is larger than "
                             f"{MAX_PASSWORD_FILE} bytes")
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise BmcConfigError(host, field, f"{str(path)!r} is not UTF-8 text") from None
    # One trailing newline is how editors and `echo` end a file, not part of the password.
    return text.removesuffix("\n").removesuffix("\r")


def read_password(host: str, bmc: BmcSpec) -> Secret:
    """The password of `host`'s BMC, from where its `bmc:` block says it is."""
    if bmc.password_file is not None:
        text = _read_file(host, Path(bmc.password_file))
        return Secret(_check_text(host, "password_file", text, bmc.agent))
    if bmc.password_env is not None:
        env = os.environ.get(bmc.password_env)
        if env is None:
            raise BmcConfigError(host, "password_env", f"environment variable "
                                 f"{bmc.password_env} is not set")
        return Secret(_check_text(host, "password_env", env, bmc.agent))
    raise BmcConfigError(host, "password_file", "missing: give password_file or password_env")
