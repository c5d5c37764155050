"""libvirt errors -> virtfleet errors, in one place.

libvirt reports everything as libvirtError with a numeric code and the subsystem it came from.
What a caller needs to know is simpler: was the object missing, did the request clash with the
object's state, is the host unreachable (worth retrying, and a reason to mark it down), or did
the hypervisor refuse for another reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import libvirt

from virtfleet.errors import (
    Conflict,
    HostUnavailable,
    HypervisorError,
    NotFound,
    OperationTimeout,
    VirtfleetError,
)

_NOT_FOUND = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_NETWORK,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
    libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT,
    libvirt.VIR_ERR_NO_NODE_DEVICE,
    libvirt.VIR_ERR_NO_INTERFACE,
    libvirt.VIR_ERR_NO_SECRET,
    libvirt.VIR_ERR_NO_NWFILTER,
}
_CONFLICT = {
    libvirt.VIR_ERR_OPERATION_INVALID,  # e.g. starting a running domain
    libvirt.VIR_ERR_DOM_EXIST,
    libvirt.VIR_ERR_STORAGE_VOL_EXIST,
    libvirt.VIR_ERR_RESOURCE_BUSY,
    libvirt.VIR_ERR_MIGRATE_UNSAFE,  # storage libvirt cannot prove shared
    libvirt.VIR_ERR_CPU_INCOMPATIBLE,  # the target cannot give the guest its CPU
}
_UNREACHABLE = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_AUTH_FAILED,
    libvirt.VIR_ERR_AUTH_CANCELLED,
    libvirt.VIR_ERR_AUTH_UNAVAILABLE,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_INVALID_CONN,
}
# Subsystems whose failures mean the transport, not the request, went wrong.
_TRANSPORT_DOMAINS = {libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE, libvirt.VIR_FROM_SSH}


def map_error(exc: libvirt.libvirtError, host: str, vm: str | None = None) -> VirtfleetError:
    """Translate one libvirtError raised while talking to `host` (about its VM `vm`)."""
    code = exc.get_error_code()
    domain = exc.get_error_domain()
    text = (exc.get_error_message() or str(exc)).strip().splitlines()[0] if str(exc) else ""
    msg = text or f"libvirt error {code}"
    if code == libvirt.VIR_ERR_OPERATION_TIMEOUT:
        return OperationTimeout(msg, host=host, vm=vm)
    if code in _NOT_FOUND:
        return NotFound(msg, host=host, vm=vm)
    if code in _CONFLICT:
        return Conflict(msg, host=host, vm=vm)
    if code in _UNREACHABLE or (
        domain in _TRANSPORT_DOMAINS and code in (libvirt.VIR_ERR_SYSTEM_ERROR,
                                                  libvirt.VIR_ERR_INTERNAL_ERROR)
    ):
        return HostUnavailable(msg, host=host, vm=vm)
    return HypervisorError(msg, host=host, vm=vm)


def map_connect_error(exc: libvirt.libvirtError, host: str, uri: str,
                      probe_seconds: float) -> VirtfleetError:
    """A failed open of `uri`: ssh's or the TLS handshake's reason in one line when the
    transport failed (libvirt's own text is long or vague there), else as map_error says."""
    from virtfleet.transport.diagnose import explain
    from virtfleet.transport.paths import TransportDir

    mapped = map_error(exc, host)
    if not isinstance(mapped, HostUnavailable):
        return mapped
    detail = explain(exc.get_error_message() or str(exc), uri, host, TransportDir.from_env(),
                     probe_seconds)
    return HostUnavailable(detail, host=host) if detail else mapped


@contextmanager
def libvirt_errors(host: str, vm: str | None = None) -> Iterator[None]:
    """Run a block of libvirt calls; any libvirtError leaves it as a virtfleet error."""
    try:
        yield
    except libvirt.libvirtError as exc:
        raise map_error(exc, host, vm) from None


T = TypeVar("T")


def or_none(lookup: Callable[[], T], *missing: int) -> T | None:
    """What `lookup` finds, or None when libvirt answers one of `missing` (VIR_ERR_NO_NETWORK,
    ...): absence is an answer, not an error. Any other libvirtError is raised as it is."""
    try:
        return lookup()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in missing:
            return None
        raise
