"""Templates: a shut-off VM's disks, sealed by virt-sysprep, kept read-only for clones.

`template create NAME --from VM` leaves the VM as it was. Its disk volumes are fetched over the
libvirt connection (sparse), optionally tuned with virt-customize, sealed with virt-sysprep on
this machine, and sent back as new volumes in the same pools with file mode 0444. A domain
named NAME, marked role=template in virtfleet's metadata, holds the template's hardware; it is
never started (clones are). A template cannot be deleted while linked clones use its images.
"""

from __future__ import annotations

import dataclasses
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from virtfleet.errors import Conflict, HypervisorError, InvalidInput, NotFound
from virtfleet.fleet.locate import VMNotFound, locate_vm
from virtfleet.inventory.records import HostRecord, Made
from virtfleet.inventory.store import Store
from virtfleet.provision import guestfs
from virtfleet.provision.journal import journaled
from virtfleet.virt import storage
from virtfleet.virt.fanout import ConnectionPool, fan_out
from virtfleet.virt.guest import Guest, Removal
from virtfleet.virt.host import Host
from virtfleet.virt.storage import VolumeInfo
from virtfleet.xml.domain import TEMPLATE_ROLE, Disk, Domain, FleetFacts

READ_ONLY = "0444"


@dataclass(frozen=True)
class Template:
    record: HostRecord  # the hypervisor that holds it
    domain: Domain
    disks: tuple[VolumeInfo, ...]  # its images, in the domain's disk order

    @property
    def name(self) -> str:
        return str(self.domain.name)

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "host": self.record.name, "site": self.record.site,
                "pod": self.record.pod, "vcpus": self.domain.vcpus,
                "memory_mib": (self.domain.memory_kib or 0) // 1024,
                "disks": [{"path": d.path, "format": d.format, "capacity_bytes":
                           d.capacity_bytes} for d in self.disks]}


def is_template(domain: Domain) -> bool:
    facts = domain.facts
    return facts is not None and facts.role == TEMPLATE_ROLE


def file_disks(domain: Domain) -> list[Disk]:
    """The domain's disks (not CD-ROMs) that are image files or volumes."""
    return [d for d in domain.devices.disks if d.device in (None, "disk") and d.source]


def _volumes(host: Host, domain: Domain, field: str) -> tuple[VolumeInfo, ...]:
    """The domain's disk volumes, each with the format the DOMAIN declares.

    A pool reports a file's format by reading its first bytes, and a guest can write a qcow2
    header into its raw disk, naming any host file as backing. So the declared format is the
    one used, and an image whose bytes say otherwise, or that has a backing file, is refused.
    """
    out = []
    for d in file_disks(domain):
        assert d.source is not None
        vol = storage.volume_at(host, d.source)
        if vol is None:
            raise InvalidInput(field, f"{domain.name}: disk {d.source} is not a volume of any "
                               f"storage pool on {host.label}")
        declared = d.format or "raw"
        if vol.backing_path is not None:
            raise InvalidInput(field, f"{domain.name}: disk {d.source} has a backing file "
                               f"({vol.backing_path}); a template is made from standalone "
                               "images (a full clone of this VM is one)")
        if (vol.format or "raw") != declared:
            raise InvalidInput(field, f"{domain.name}: disk {d.source} is declared {declared} "
                               f"but its content reads as {vol.format}; refusing (a guest "
                               "can write a format header into a raw disk)")
        out.append(dataclasses.replace(vol, format=declared))
    if not out:
        raise InvalidInput(field, f"{domain.name} has no disk image to make a template from")
    return tuple(out)


def find_template(store: Store, pool: ConnectionPool, name: str, host: str | None = None,
                  field: str = "template") -> Template:
    try:
        record = locate_vm(name, store, pool, host=host)
    except VMNotFound as exc:
        raise NotFound(f"no template named {name!r}{exc.searched} (see 'virtfleet template "
                       "list')") from None
    h = pool.get(record)
    domain = Guest.lookup(h, name).domain()
    if not is_template(domain):
        raise InvalidInput(field, f"{name!r} is a VM, not a template (make one with "
                           f"'virtfleet template create NAME --from {name}')")
    return Template(record, domain, _volumes(h, domain, field))


def templates_on(host: Host) -> list[str]:
    """Names of the templates defined on one hypervisor (they are never running)."""
    out = []
    for d in host.list_domains():
        if d.state == "shut off" and is_template(Guest.lookup(host, d.name).domain()):
            out.append(d.name)
    return out


def _template_domain(source: Domain, name: str, images: list[str]) -> Domain:
    """The template's hardware: the VM's, under a new name, on the sealed read-only images,
    with nothing a clone must not share (UUID, MACs, NVRAM, an SMBIOS serial)."""
    doc = Domain.parse(source.to_xml())
    doc.name = name
    doc.uuid = str(uuid.uuid4())
    doc.id = None
    for disk, path in zip(file_disks(doc), images, strict=True):
        disk.source_pool = disk.source_volume = disk.source_dev = None
        disk.type = "file"
        disk.source_file = path
        disk.readonly = True
    for nic in doc.devices.interfaces:
        nic.mac = None
    for el in (doc.element.find("os/nvram"), doc.element.find("sysinfo")):
        if el is not None:
            parent = el.getparent()
            assert parent is not None
            parent.remove(el)
    facts = doc.facts or FleetFacts()
    facts.role = TEMPLATE_ROLE
    doc.set_facts(facts)
    return doc


def create_template(store: Store, pool: ConnectionPool, name: str, source: str, *,
                    host: str | None = None, profile: str | None = None,
                    progress: Callable[[str], None] = lambda _m: None) -> Template:
    """Seal a copy of shut-off VM `source`'s disks into template `name`, or make nothing."""
    from virtfleet.provision.create import check_name_free

    if profile is not None and profile not in guestfs.PROFILES:
        raise InvalidInput("profile", f"{profile!r} is not one of: "
                           + ", ".join(sorted(guestfs.PROFILES)))
    record = locate_vm(source, store, pool, host=host)
    h = pool.get(record)
    guest = Guest.lookup(h, source)
    if guest.state != "shut off":
        raise Conflict(f"{record.name}/{source} is {guest.state}: shut it down first (a "
                       "template is sealed from a VM that is not running)")
    vm = guest.domain()
    if is_template(vm):
        raise InvalidInput("source", f"{source!r} is already a template")
    check_name_free(name, store, store.hypervisors(pod=record.pod), pool)
    disks = _volumes(h, vm, "source")
    with journaled(store, pool, "template", f"{record.name}/{name}") as op, \
            tempfile.TemporaryDirectory(prefix="virtfleet-template-") as tmp:
        local = []
        for i, vol in enumerate(disks):
            copy = str(Path(tmp) / f"disk{i}")
            progress(f"fetching {vol.path} from {record.name}")
            storage.download(h, vol.path, copy)
            local.append((copy, vol.format or "raw"))
        if profile is not None:
            progress(f"applying the {profile} profile (virt-customize)")
            guestfs.customize(local, profile)
        progress("sealing (virt-sysprep)")
        guestfs.seal(local)
        images = []
        for i, ((copy, fmt), vol) in enumerate(zip(local, disks, strict=True)):
            target = f"{name}.{fmt}" if i == 0 else f"{name}-disk{i}.{fmt}"
            progress(f"storing {target} in pool {vol.pool} on {record.name}")
            with op.making(Made("poolvol", record.name, f"{vol.pool}/{target}")):
                images.append(storage.upload(h, vol.pool, target, copy, fmt, mode=READ_ONLY))
        doc = _template_domain(vm, name, images)
        with op.making(Made("vm", record.name, f"{name}/{doc.uuid}")):
            h.define_domain(doc.to_xml())
    return find_template(store, pool, name, host=record.name)


def linked_clones(store: Store, pool: ConnectionPool, tpl: Template) -> dict[str, list[str]]:
    """Each volume backed by the template's images -> the VMs using it ("web01 on hv2"), over
    every hypervisor of its pod (a linked clone elsewhere would not see the image; on shared
    storage one volume shows on several). A host that cannot be asked makes it an error: an
    unanswered host may hold clones."""
    hosts = store.hypervisors(pod=tpl.record.pod)
    paths = {d.path for d in tpl.disks}

    def clones(h: Host) -> list[tuple[str, list[str]]]:
        found = [v.path for p in sorted(paths) for v in storage.backed_by(h, p)]
        if not found:
            return []
        users: dict[str, list[str]] = {v: [] for v in found}
        for d in h.list_domains():
            for src in Guest.lookup(h, d.name).disk_sources():
                if src in users:
                    users[src].append(f"{d.name} on {h.label}")
        return list(users.items())

    results = fan_out(hosts, clones, pool)
    failed = [r for r in results if r.error is not None]
    if failed:
        raise HypervisorError(f"cannot check {failed[0].host.name} for linked clones of "
                              f"{tpl.name} ({failed[0].error}); nothing was removed")
    out: dict[str, list[str]] = {}
    for r in results:
        for path, users in r.value or ():
            out.setdefault(path, []).extend(users)
    return dict(sorted(out.items()))


def describe_clones(clones: dict[str, list[str]], limit: int = 5) -> str:
    shown = [f"{path} ({', '.join(users) if users else 'no VM uses it'})"
             for path, users in list(clones.items())[:limit]]
    more = len(clones) - limit
    return ", ".join(shown) + (f" and {more} more (see 'virtfleet template info')"
                               if more > 0 else "")


def delete_template(store: Store, pool: ConnectionPool, name: str,
                    host: str | None = None) -> Template:
    tpl = find_template(store, pool, name, host=host)
    found = linked_clones(store, pool, tpl)
    if found:
        raise Conflict(f"template {name!r} has {len(found)} linked clone(s), which need its "
                       f"image: {describe_clones(found)}; delete them first (full clones do "
                       "not need it); nothing was removed")
    h = pool.get(tpl.record)
    Guest.lookup(h, name).undefine(Removal())
    for vol in tpl.disks:
        storage.delete_volume(h, vol.path)
    return tpl
