"""`vm undefine [--remove-all-storage | --storage vda,...]`: the definition goes, and the
store forgets the VM at once; its volumes go with it, but only those nothing else needs.

A volume is kept (and the undefine refused, nothing changed) when another domain on any
hypervisor of the pod uses it (shared storage), when other volumes are backed by it (a
template's or a snapshot chain's base), or when it is a template's image (`template delete`).
"""

from __future__ import annotations

from virtfleet.errors import Conflict, HypervisorError, InvalidInput
from virtfleet.inventory.records import HostRecord
from virtfleet.inventory.store import Store
from virtfleet.provision.templates import file_disks, is_template
from virtfleet.virt import storage
from virtfleet.virt.fanout import ConnectionPool, fan_out
from virtfleet.virt.guest import Guest, Removal
from virtfleet.virt.host import Host
from virtfleet.virt.storage import VolumeInfo


def volumes_to_remove(store: Store, pool: ConnectionPool, guest: Guest, record: HostRecord,
                      targets: list[str] | None) -> list[VolumeInfo]:
    """The volumes to delete with `guest` (all its disks if `targets` is None), or Conflict /
    InvalidInput naming what stands in the way."""
    domain = guest.domain()
    if is_template(domain):
        raise InvalidInput("remove_all_storage", f"{guest.name} is a template: use "
                           f"'virtfleet template delete {guest.name}'")
    disks = file_disks(domain)
    if targets is not None:
        known = {d.target_dev: d for d in disks} | {d.source: d for d in disks}
        unknown = [t for t in targets if t not in known]
        if unknown:
            raise InvalidInput("storage", f"{guest.name} has no disk {unknown[0]!r} (its "
                               "disks: " + ", ".join(str(d.target_dev) for d in disks) + ")")
        disks = [known[t] for t in dict.fromkeys(targets)]
    vols = []
    for d in disks:
        assert d.source is not None
        vol = storage.volume_at(guest.host, d.source)
        if vol is None:
            raise InvalidInput("storage", f"{d.source} is not a volume of a storage pool on "
                               f"{record.name}; remove it by hand if it should go")
        vols.append(vol)
    paths = {v.path for v in vols}

    def needs(h: Host) -> list[str]:
        found = []
        for d in h.list_domains():
            if h.label == record.name and d.name == guest.name:
                continue
            used = paths & set(Guest.lookup(h, d.name).disk_sources())
            found += [f"{p} is used by {d.name} on {h.label}" for p in sorted(used)]
        for p in sorted(paths):
            found += [f"{p} backs {v.path} on {h.label}" for v in storage.backed_by(h, p)]
        return found

    results = fan_out(store.hypervisors(pod=record.pod), needs, pool)
    failed = [r for r in results if r.error is not None]
    if failed:
        raise HypervisorError(f"cannot check {failed[0].host.name} for other users of "
                              f"{guest.name}'s storage ({failed[0].error}); nothing was changed")
    blockers = sorted({b for r in results for b in r.value or ()})
    if blockers:
        raise Conflict(f"{record.name}/{guest.name}: its storage is needed elsewhere: "
                       + "; ".join(blockers[:5]) + ("; ..." if len(blockers) > 5 else "")
                       + "; nothing was changed")
    return vols


def undefine_vm(store: Store, pool: ConnectionPool, guest: Guest, record: HostRecord,
                allow: Removal, targets: list[str] | None) -> list[str]:
    """Undefine a shut-off VM, with the volumes named by `targets` (None: all its disks; []:
    none). Returns the paths removed.

    A running VM is refused: libvirt would keep it running as a transient domain (with its
    disks in use) while virtfleet said it was undefined. Once undefined, the store forgets it
    (its observation, any claim for its name), so the name and its room are free again at
    once rather than after the next sync or a claim's expiry."""
    if guest.is_active():
        raise Conflict(f"{record.name}/{guest.name}: domain is running; destroy it or shut it "
                       "down first")
    vols = volumes_to_remove(store, pool, guest, record, targets) if targets != [] else []
    guest.undefine(allow)
    store.forget_vm(record.name, guest.name, guest.uuid)
    removed = []
    for v in vols:
        storage.delete_volume(guest.host, v.path)
        removed.append(v.path)
    return removed
