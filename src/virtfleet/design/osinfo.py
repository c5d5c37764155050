"""The OS a VM is designed for (`os_variant`, virt-install's `--os-variant`), from libosinfo:
what devices it drives.

Why libosinfo itself, through PyGObject, and not our own reader of osinfo-db's XML files: an
OS entry inherits most of what it supports from the entries it derives from, clones or upgrades
(rhel9.0 -> rhel8.x -> ...), and libosinfo is the one implementation of that resolution that
virt-install and virt-manager use. Asking it gives a VM the buses and models those tools would
give it, and follows osinfo-db updates (the Debian package) without code here changing. The
GObject binding is the library's only Python interface; PyGObject builds in the venv against
Debian's gobject-introspection (scripts/install-deps.sh).

The library is imported and its database loaded on first use only (about half a second): only
designing a VM pays for it, never CLI start-up or any other command.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from virtfleet.errors import InvalidInput, ToolFailed

FIELD = "os_variant"  # the request field an unknown OS is reported against
GENERIC = "generic"

# osinfo-db names devices by PCI (or USB) vendor/device id; these are the ones virt-install asks
# about (virtinst/osdict.py), each with its legacy and virtio-1.0 id where both exist.
_VIRTIO_DISK = ("http://pcisig.com/pci/1af4/1001", "http://pcisig.com/pci/1af4/1042")
_VIRTIO_NET = ("http://pcisig.com/pci/1af4/1000", "http://pcisig.com/pci/1af4/1041")
_VIRTIO_SCSI = ("http://pcisig.com/pci/1af4/1004", "http://pcisig.com/pci/1af4/1048")
_VIRTIO_RNG = ("http://pcisig.com/pci/1af4/1005", "http://pcisig.com/pci/1af4/1044")
_VIRTIO_BALLOON = ("http://pcisig.com/pci/1af4/1002", "http://pcisig.com/pci/1af4/1045")
_VIRTIO_SERIAL = ("http://pcisig.com/pci/1af4/1003", "http://pcisig.com/pci/1af4/1043")
_VIRTIO_GPU = ("http://pcisig.com/pci/1af4/1050",)
_VIRTIO1_NET = ("http://pcisig.com/pci/1af4/1041",)
_QEMU_XHCI = ("http://pcisig.com/pci/1b36/0004",)
_Q35 = ("http://qemu.org/chipset/x86/q35",)


@dataclass(frozen=True)
class OSVariant:
    """What one OS drives out of the box, as libosinfo reports it."""

    short_id: str
    id: str | None  # libosinfo's full id (http://redhat.com/rhel/9.0); None for generic
    family: str | None  # linux, winnt, win9x, solaris ...
    devices: frozenset[str] = frozenset()  # osinfo device ids, inherited ones included
    related: frozenset[str] = frozenset()  # short ids it derives from, clones or upgrades

    def _has(self, ids: tuple[str, ...]) -> bool:
        return any(i in self.devices for i in ids)

    @property
    def is_generic(self) -> bool:
        return self.short_id == GENERIC

    @property
    def is_windows(self) -> bool:
        return self.family in ("win9x", "winnt", "win16")

    @property
    def clock_offset(self) -> str:
        """Windows (and Solaris) keep the hardware clock in local time."""
        return "localtime" if self.is_windows or self.family == "solaris" else "utc"

    @property
    def virtio_disk(self) -> bool:
        return self._has(_VIRTIO_DISK)

    @property
    def virtio_net(self) -> bool:
        return self._has(_VIRTIO_NET)

    @property
    def virtio_scsi(self) -> bool:
        return self._has(_VIRTIO_SCSI)

    @property
    def virtio_rng(self) -> bool:
        return self._has(_VIRTIO_RNG)

    @property
    def virtio_balloon(self) -> bool:
        return self._has(_VIRTIO_BALLOON)

    @property
    def virtio_gpu(self) -> bool:
        return self._has(_VIRTIO_GPU)

    @property
    def virtio_serial(self) -> bool:
        # osinfo-db lacked virtio-serial for RHEL 6 and its clones until 2018; virt-install
        # still counts them in, and so does virtfleet.
        return self._has(_VIRTIO_SERIAL) or "rhel6.0" in self.related \
            or self.short_id == "rhel6.0"

    @property
    def usb3(self) -> bool:
        return self._has(_QEMU_XHCI)

    @property
    def q35(self) -> bool:
        """The q35 chipset, and (if it drives virtio at all) virtio 1.0, which q35's PCIe
        slots give: virt-install's test for choosing q35 over i440fx."""
        if self.virtio_net and not self._has(_VIRTIO1_NET):
            return False
        return self._has(_Q35)


def _libosinfo() -> Any:
    """The Libosinfo GObject module (imported here, on first use only)."""
    try:
        import gi

        gi.require_version("Libosinfo", "1.0")
        from gi.repository import Libosinfo
    except (ImportError, ValueError) as exc:
        raise ToolFailed(f"libosinfo is not available ({exc}); install Debian's "
                         "gir1.2-libosinfo-1.0 and osinfo-db, and PyGObject in the venv "
                         "(make deps)") from None
    return Libosinfo


@lru_cache(maxsize=1)
def _database() -> tuple[Any, dict[str, Any]]:
    """The loaded osinfo database and every OS in it by each of its short ids."""
    lib = _libosinfo()
    loader = lib.Loader()
    loader.process_default_path()
    db = loader.get_db()
    by_short: dict[str, Any] = {}
    for os_ in db.get_os_list().get_elements():
        for short in os_.get_short_id_list():
            by_short.setdefault(short, os_)
    return lib, by_short


def _related(lib: Any, os_: Any) -> frozenset[str]:
    seen: set[str] = set()
    todo = [os_]
    kinds = (lib.ProductRelationship.DERIVES_FROM, lib.ProductRelationship.CLONES,
             lib.ProductRelationship.UPGRADES)
    while todo:
        current = todo.pop()
        for kind in kinds:
            for other in current.get_related(kind).get_elements():
                short = other.get_short_id()
                if short not in seen:
                    seen.add(short)
                    todo.append(other)
    return frozenset(seen)


def known_variants() -> list[str]:
    """Every short id libosinfo knows, plus 'generic'."""
    return sorted([*_database()[1], GENERIC])


@lru_cache(maxsize=256)
def lookup(short_id: str) -> OSVariant:
    """The OS variant `short_id` (as `virt-install --os-variant` takes it), or InvalidInput."""
    if short_id == GENERIC:  # virt-install's own: an OS libosinfo knows nothing about
        return OSVariant(GENERIC, None, None)
    lib, by_short = _database()
    os_ = by_short.get(short_id)
    if os_ is None:
        near = difflib.get_close_matches(short_id, list(by_short), n=3, cutoff=0.75)
        hint = f" (did you mean {', '.join(near)}?)" if near else \
            " (see 'virt-install --osinfo list'; 'generic' if it is none of them)"
        raise InvalidInput(FIELD, f"{short_id!r} is not an OS libosinfo knows{hint}")
    devices = os_.get_all_devices(None)
    return OSVariant(
        short_id=short_id,
        id=os_.get_id(),
        family=os_.get_family(),
        devices=frozenset(devices.get_nth(i).get_id() for i in range(devices.get_length())),
        related=_related(lib, os_),
    )
