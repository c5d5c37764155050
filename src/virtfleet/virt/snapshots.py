"""Snapshots of one VM, with virsh's meanings: a restore point before a risky change.

Internal snapshots live inside qcow2 images, so every disk that would be snapshotted must be
qcow2: a raw disk is refused before anything is taken, with the disk named. A snapshot taken
"before a code deployment" and a revert "when it goes wrong" are the use case, so revert works
on running and shut-off VMs alike, and delete never removes more than asked (--children).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import libvirt

from virtfleet.errors import Conflict, InvalidInput, NotFound
from virtfleet.validate import check_name
from virtfleet.virt.errors import libvirt_errors
from virtfleet.virt.guest import Guest
from virtfleet.xml.snapshot import Snapshot

MAX_DESCRIPTION = 1024


@dataclass(frozen=True)
class SnapshotInfo:
    """`virsh snapshot-info` (plus its description)."""

    name: str
    domain: str
    current: bool
    state: str
    location: str  # internal / external
    parent: str | None
    children: int
    descendants: int
    created: int  # seconds since the epoch
    description: str | None

    def as_json(self) -> dict[str, object]:
        return dict(self.__dict__)


class Snapshots:
    def __init__(self, guest: Guest) -> None:
        self.guest = guest
        self._label = f"{guest.host.label}/{guest.name}"

    def _call(self, fn: Any) -> Any:
        with libvirt_errors(self._label):
            return fn()

    def _handle(self, name: str | None) -> Any:
        """The snapshot `name`, or the current one when name is None."""
        dom = self.guest.handle
        try:
            if name is None:
                return dom.snapshotCurrent(0)
            return dom.snapshotLookupByName(name, 0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                what = f"snapshot {name!r}" if name else "current snapshot"
                raise NotFound(f"{self._label}: no {what}") from None
            with libvirt_errors(self._label):
                raise

    def create(self, name: str | None = None, description: str | None = None) -> str:
        """Take an internal snapshot of every qcow2 disk (and memory, if running)."""
        if name is not None:
            check_name("name", name)
        if description is not None and (len(description) > MAX_DESCRIPTION
                                        or any(ch in description for ch in "\x00\r")):
            raise InvalidInput("description", f"must be at most {MAX_DESCRIPTION} "
                               "characters of text")
        modes = {}
        for disk in self.guest.domain().devices.disks:
            if disk.device != "disk":
                continue  # a CD-ROM is not snapshotted, as virsh shows (hdc snapshot='no')
            target = disk.target_dev or "?"
            if disk.format != "qcow2":
                raise Conflict(f"{self._label}: disk {target} is {disk.format or 'raw'}; "
                               "internal snapshots need qcow2 (convert it, or snapshot "
                               "externally)")
            modes[target] = "internal"
        snap = Snapshot()
        # virsh's default name, the creation time in seconds, so operators see the names they know.
        snap.name = name or str(int(time.time()))
        if description:
            snap.description = description
        if modes:
            snap.set_disk_modes(modes)
        made = self._call(lambda: self.guest.handle.snapshotCreateXML(snap.to_xml(), 0))
        return str(made.getName())

    def list(self) -> list[SnapshotInfo]:
        """Every snapshot, parents before children (a tree in list order)."""
        snaps = self._call(lambda: self.guest.handle.listAllSnapshots(0))
        infos = {s.getName(): self._info(s) for s in snaps}
        ordered: list[SnapshotInfo] = []

        def walk(parent: str | None) -> None:
            for info in sorted((i for i in infos.values() if i.parent == parent),
                               key=lambda i: (i.created, i.name)):
                ordered.append(info)
                walk(info.name)

        walk(None)
        return ordered

    def _info(self, snap: Any) -> SnapshotInfo:
        doc = Snapshot.parse(self._call(lambda: snap.getXMLDesc(0)))
        modes = set(doc.disk_modes().values()) - {"no"}
        return SnapshotInfo(
            name=str(snap.getName()), domain=self.guest.name,
            current=bool(self._call(snap.isCurrent)), state=doc.state or "-",
            location="external" if "external" in modes else "internal",
            parent=doc.parent,
            children=int(self._call(lambda: snap.numChildren(0))),
            descendants=int(self._call(lambda: snap.numChildren(
                libvirt.VIR_DOMAIN_SNAPSHOT_LIST_DESCENDANTS))),
            created=doc.creation_time or 0, description=doc.description,
        )

    def info(self, name: str | None) -> SnapshotInfo:
        return self._info(self._handle(name))

    def dumpxml(self, name: str | None) -> str:
        snap = self._handle(name)
        return str(self._call(lambda: snap.getXMLDesc(0)))

    def revert(self, name: str | None) -> str:
        """Back to the snapshot; the VM ends in the state the snapshot was taken in."""
        snap = self._handle(name)
        self._call(lambda: self.guest.handle.revertToSnapshot(snap, 0))
        return str(snap.getName())

    def delete(self, name: str | None, children: bool = False) -> str:
        """Delete one snapshot (its children are re-parented), or it and all below it."""
        snap = self._handle(name)
        flags = libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN if children else 0
        snap_name = str(snap.getName())
        self._call(lambda: snap.delete(flags))
        return snap_name
