"""Settings: where the store is, how long a hypervisor may take, how many to ask at once.

Precedence: command-line flag, then environment (VIRTFLEET_*), then the default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from virtfleet.errors import InvalidInput

# What virtfleet sets LIBVIRT_LOG_OUTPUTS to for its own client library (virt/__init__.py).
# Daemons it starts (the lab's libvirtd) must not inherit it: libvirtd takes that variable over
# the log_outputs of its own libvirtd.conf.
QUIET_CLIENT_LOG = "4:file:/dev/null"

DB_ENV = "VIRTFLEET_DB"
# A VM's graphics password, for the CLI to read: never an option value, which `ps` shows.
GRAPHICS_PASSWORD_ENV = "VIRTFLEET_GRAPHICS_PASSWORD"


def default_db_path() -> Path:
    import platformdirs  # only when no store is named: not on every command's way

    return Path(platformdirs.user_data_dir("virtfleet")) / "virtfleet.db"


def db_url(value: str | None = None) -> str:
    """Turn --db / VIRTFLEET_DB (a file path or a SQLAlchemy URL) into a database URL."""
    raw = value if value else os.environ.get(DB_ENV, "")
    if not raw:
        path = default_db_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if "://" in raw:
        scheme = raw.split("://", 1)[0]
        if not (scheme.startswith("sqlite") or scheme.startswith("postgresql")):
            raise InvalidInput("db", f"URL scheme {scheme!r} is not sqlite or postgresql")
        return raw
    path = Path(raw).expanduser().resolve()
    if path.is_dir():
        raise InvalidInput("db", f"{raw!r} is a directory; give a file path or a database URL")
    if not path.parent.is_dir():
        raise InvalidInput("db", f"directory {str(path.parent)!r} does not exist")
    return f"sqlite:///{path}"


def _float_env(name: str, default: float, *, maximum: float | None = None,
               zero: bool = False) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(name, f"must be a number of seconds, not {raw!r}") from None
    if value < 0 or (value == 0 and not zero):
        raise InvalidInput(name, "must be 0 or more" if zero else "must be greater than 0")
    if maximum is not None and value > maximum:
        raise InvalidInput(name, f"must be at most {maximum:g} seconds")
    return value


def lease_ttl() -> float:
    """Seconds a controller's lease on a site lasts unless renewed (docs/scale-out.md):
    $VIRTFLEET_LEASE_TTL, default 6, at most 600."""
    return _float_env("VIRTFLEET_LEASE_TTL", 6.0, maximum=600)


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(name, f"must be a whole number, not {raw!r}") from None
    if value < 1:
        raise InvalidInput(name, "must be at least 1")
    return value


@dataclass(frozen=True)
class Timeouts:
    """How long virtfleet waits on hypervisors."""

    connect: float = 10.0  # opening a connection
    call: float = 30.0  # one host's whole share of a fleet query
    # libvirt keepalive on long-lived connections (the controller's): a probe after this many
    # idle seconds, and the connection is closed after `count` unanswered ones, so a hung
    # hypervisor is flagged within about interval * (count + 1) = 8 s (issue 12 asks for 10).
    keepalive_interval: int = 2
    keepalive_count: int = 3

    @classmethod
    def from_env(cls) -> Timeouts:
        return cls(
            connect=_float_env("VIRTFLEET_CONNECT_TIMEOUT", cls.connect),
            call=_float_env("VIRTFLEET_HOST_DEADLINE", cls.call),
            keepalive_interval=_int_env("VIRTFLEET_KEEPALIVE_INTERVAL", cls.keepalive_interval),
            keepalive_count=_int_env("VIRTFLEET_KEEPALIVE_COUNT", cls.keepalive_count),
        )


def fanout_concurrency() -> int:
    """How many hypervisors a fleet operation talks to at once."""
    # Each host's share of a query is a few round trips; more hosts in flight keep every
    # hypervisor busy. On the 1,500-host simulation 128 beat 32 and 64; at 512 the client's
    # threads start to cost more than they hide.
    return _int_env("VIRTFLEET_CONCURRENCY", 128)


def ssh_concurrency() -> int:
    """How many qemu+ssh hypervisors a fleet operation opens at once: VIRTFLEET_SSH_CONCURRENCY.

    Each qemu+ssh connection is an ssh process here and an sshd session, a shell and
    virt-ssh-helper on the host, and its key exchange costs CPU on both ends; this caps them
    below the general concurrency (bench/transport.py measured the default).
    """
    return _int_env("VIRTFLEET_SSH_CONCURRENCY", 32)


def virt_type_setting() -> str:
    """auto (KVM where the host can run it, else TCG), kvm or qemu: VIRTFLEET_VIRT_TYPE.

    A setting, not a constant: real estates have working KVM; some machines (CI, nested labs)
    list KVM but hang on it and need qemu.
    """
    value = os.environ.get("VIRTFLEET_VIRT_TYPE", "auto")
    if value not in ("auto", "kvm", "qemu"):
        raise InvalidInput("VIRTFLEET_VIRT_TYPE", f"{value!r} is not auto, kvm or qemu")
    return value


@dataclass(frozen=True)
class MigrationLimits:
    """How many migrations run at once, and how long one may take."""

    # Per source and per target host, as VDSM does (2 out, 2 in): each migration wants the
    # link and the hosts' CPUs to itself, and a host being emptied must not be swamped.
    max_outgoing: int = 2
    max_incoming: int = 2
    # Nova's live_migration_completion_timeout: seconds per GiB of memory (plus disks copied)
    # before a migration that has not converged is aborted, and the guest keeps running where
    # it was. Never less than min_seconds, so a tiny guest still has time to start.
    seconds_per_gib: float = 800.0
    min_seconds: float = 120.0

    @classmethod
    def from_env(cls) -> MigrationLimits:
        return cls(
            max_outgoing=_int_env("VIRTFLEET_MIGRATE_MAX_OUTGOING", cls.max_outgoing),
            max_incoming=_int_env("VIRTFLEET_MIGRATE_MAX_INCOMING", cls.max_incoming),
            seconds_per_gib=_float_env("VIRTFLEET_MIGRATE_SECONDS_PER_GIB",
                                       cls.seconds_per_gib),
            min_seconds=_float_env("VIRTFLEET_MIGRATE_MIN_SECONDS", cls.min_seconds),
        )

    def deadline(self, moved_bytes: int) -> float:
        """Seconds a migration moving `moved_bytes` (memory and copied disks) may take."""
        return max(self.min_seconds, self.seconds_per_gib * moved_bytes / 2**30)


@dataclass(frozen=True)
class HATimings:
    """How quickly the controller's HA monitor acts (docs/ha.md)."""

    # A suspect host whose BMC says its power is on gets this long for libvirtd to answer
    # again before it is powered off. Short: detection (keepalive, ~8 s) came first.
    grace: float = 10.0
    # A failed fence, or a VM that could not be placed or started, is tried again after this.
    retry: float = 10.0
    interval: float = 1.0  # between the monitor's passes
    probe: float = 2.0  # connect deadline when asking a non-answering host if it is back

    @classmethod
    def from_env(cls) -> HATimings:
        return cls(grace=_float_env("VIRTFLEET_HA_GRACE", cls.grace, maximum=3600, zero=True),
                   retry=_float_env("VIRTFLEET_HA_RETRY", cls.retry),
                   interval=_float_env("VIRTFLEET_HA_INTERVAL", cls.interval),
                   probe=_float_env("VIRTFLEET_HA_PROBE", cls.probe))

