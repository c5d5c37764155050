"""The snapshot service: virsh's snapshot-create/list/info/dumpxml/revert/delete for a VM named
anywhere in the fleet (internal snapshots, in the VM's qcow2 images: virt/snapshots.py).

    with SnapshotService(store) as snaps:
        name = snaps.create(SnapshotRequest(vm="web01", name="before-deploy"))
        snaps.revert("web01", name)

A snapshot is named, or None for the VM's current one. What changes the VM (create, revert,
delete) holds it for the operation, like every VM verb.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from virtfleet.fleet.locate import VMFinder
from virtfleet.validate import check_name
from virtfleet.virt.snapshots import SnapshotInfo, Snapshots

__all__ = ["SnapshotInfo", "SnapshotRequest", "SnapshotService"]

T = TypeVar("T")


@dataclass(frozen=True)
class SnapshotRequest:
    """A new snapshot of `vm` (`name`: default the time, as virsh names it)."""

    vm: str
    name: str | None = None
    description: str | None = None
    host: str | None = None  # the VM's hypervisor, if its name is on several

    def check(self) -> None:
        check_name("vm", self.vm)


class SnapshotService(VMFinder):
    def _on(self, vm: str, host: str | None, operation: str | None,
            work: Callable[[Snapshots], T]) -> T:
        if operation is None:
            return work(Snapshots(self.guest(vm, host)))
        with self.held(vm, host, operation) as guest:
            return work(Snapshots(guest))

    def create(self, req: SnapshotRequest) -> str:
        """Take an internal snapshot; raw disks are refused. Returns its name."""
        req.check()
        return self._on(req.vm, req.host, "snapshot create",
                        lambda s: s.create(req.name, req.description))

    def snapshots(self, vm: str, host: str | None = None) -> list[SnapshotInfo]:
        """Every snapshot, parents before their children."""
        return self._on(vm, host, None, lambda s: s.list())

    def info(self, vm: str, snapshot: str | None, host: str | None = None) -> SnapshotInfo:
        return self._on(vm, host, None, lambda s: s.info(snapshot))

    def dumpxml(self, vm: str, snapshot: str | None, host: str | None = None) -> str:
        return self._on(vm, host, None, lambda s: s.dumpxml(snapshot))

    def revert(self, vm: str, snapshot: str | None, host: str | None = None) -> str:
        """Back to the snapshot's disks (and state); returns its name."""
        return self._on(vm, host, "snapshot revert", lambda s: s.revert(snapshot))

    def delete(self, vm: str, snapshot: str | None, children: bool = False,
               host: str | None = None) -> str:
        """Delete one snapshot (its children re-parented), or with `children` all below it
        too; returns its name."""
        return self._on(vm, host, "snapshot delete", lambda s: s.delete(snapshot, children))
