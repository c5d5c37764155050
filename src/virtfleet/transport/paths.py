"""The transport directory: everything virtfleet trusts and presents when it reaches hypervisors.

    $VIRTFLEET_TRANSPORT_DIR (default ~/.local/share/virtfleet/transport), mode 0700:
      known_hosts     ssh host keys virtfleet pinned (`host add`, `apply`, `hostkey pin`), 0600
      ssh_config      the only ssh configuration virtfleet's ssh reads (ssh -F), 0600
      ssh             a two-line wrapper libvirt runs as its ssh: `exec ssh -F ssh_config "$@"`
      id_ed25519      the client key, if there is one here ($VIRTFLEET_SSH_KEY names another)
      pki/            libvirt's pkipath for qemu+tls: cacert.pem, clientcert.pem, clientkey.pem

One directory per estate (or lab): an operator with two estates points VIRTFLEET_TRANSPORT_DIR
at the second estate's directory together with its VIRTFLEET_DB. Nothing here is shared with the
machine's own ~/.ssh or /etc/pki: ssh is run with `-F`, so neither ~/.ssh/config nor
/etc/ssh/ssh_config can loosen host-key checking, and libvirt is given this pkipath.

libvirt runs the `ssh` wrapper, so whoever can write this directory runs code as us: it must be
ours and closed to everyone else (checked, never adopted from someone else).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from virtfleet.errors import InvalidInput

TRANSPORT_DIR_ENV = "VIRTFLEET_TRANSPORT_DIR"
SSH_KEY_ENV = "VIRTFLEET_SSH_KEY"

# Paths end up in ssh_config (where '%' and spaces mean something), in a libvirt URI and in the
# wrapper script: only characters none of those read specially.
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._+@/-]+$")

# libvirt's file names inside a pkipath (virnettlscontext.c).
CA_CERT = "cacert.pem"
CLIENT_CERT = "clientcert.pem"
CLIENT_KEY = "clientkey.pem"


def safe_path(path: Path, field: str) -> Path:
    """`path`, absolute and free of characters ssh_config, URIs or sh would read specially."""
    text = str(path)
    if not _SAFE_PATH.match(text) or "/../" in text + "/" or "/./" in text + "/":
        raise InvalidInput(field, f"{text!r} must be an absolute path of letters, digits and "
                           "_ . + @ - / only (it goes into ssh's configuration and libvirt URIs)")
    return path


def default_dir() -> Path:
    import platformdirs  # only the CLI's cold path needs it

    return Path(platformdirs.user_data_dir("virtfleet")) / "transport"


def _check_private(path: Path, field: str) -> None:
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidInput(field, f"{path} is not a directory")
    if st.st_uid != os.geteuid():
        raise InvalidInput(field, f"{path} belongs to uid {st.st_uid}, not to this user "
                           f"(uid {os.geteuid()}): whoever can write it decides which hosts "
                           "virtfleet trusts")
    if st.st_mode & 0o077:
        raise InvalidInput(field, f"{path} has mode {stat.S_IMODE(st.st_mode):04o}; it must be "
                           f"0700 (chmod 700 {path})")


@dataclass(frozen=True)
class TransportDir:
    root: Path
    key_override: Path | None = None  # $VIRTFLEET_SSH_KEY

    @classmethod
    def from_env(cls) -> TransportDir:
        raw = os.environ.get(TRANSPORT_DIR_ENV, "")
        root = Path(raw).expanduser() if raw else default_dir()
        if not root.is_absolute():
            root = Path.cwd() / root
        safe_path(root, TRANSPORT_DIR_ENV)
        key_raw = os.environ.get(SSH_KEY_ENV, "")
        key = safe_path(Path(key_raw).expanduser(), SSH_KEY_ENV) if key_raw else None
        return cls(root=root, key_override=key)

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.root / "ssh_config"

    @property
    def ssh_wrapper(self) -> Path:
        return self.root / "ssh"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def ssh_key(self) -> Path | None:
        """The client key ssh offers: $VIRTFLEET_SSH_KEY, else id_ed25519 here if present; None
        leaves ssh to its defaults (~/.ssh/id_*, the agent)."""
        if self.key_override is not None:
            if not self.key_override.is_file():
                raise InvalidInput(SSH_KEY_ENV, f"{self.key_override} is not a file")
            return self.key_override
        own = self.root / "id_ed25519"
        return own if own.is_file() else None

    def ensure(self) -> TransportDir:
        """Make the directory (0700) and an empty known_hosts (0600), or check they are ours."""
        field = TRANSPORT_DIR_ENV
        try:
            self.root.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                self.root.mkdir(mode=0o700)
            _check_private(self.root, field)
            fd = os.open(self.known_hosts, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW,
                         0o600)
            os.close(fd)
        except OSError as exc:
            raise InvalidInput(field, f"cannot use {self.root}: {exc.strerror}") from None
        return self


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace `path` atomically with `text`, readable by its owner only (or `mode`)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
