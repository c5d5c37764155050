"""Storage pools and volumes on one hypervisor: find a pool, make and remove volumes, and keep
paths inside their pools."""

from __future__ import annotations

import contextlib
import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libvirt

from virtfleet.errors import Conflict, InvalidInput, NotFound
from virtfleet.units import human_bytes
from virtfleet.virt.errors import libvirt_errors, or_none
from virtfleet.virt.host import Host
from virtfleet.xml.domain import Domain
from virtfleet.xml.storage import Pool, Volume


@dataclass(frozen=True)
class PoolInfo:
    name: str
    type: str
    path: str | None  # where its volumes appear as files, if it has a target path
    active: bool
    capacity_bytes: int
    available_bytes: int


def pools(host: Host) -> list[PoolInfo]:
    out = []
    with libvirt_errors(host.label):
        for p in host.conn.listAllStoragePools(0):
            doc = Pool.parse(p.XMLDesc(0))
            active = bool(p.isActive())
            _state, capacity, _alloc, available = p.info() if active else (0, 0, 0, 0)
            out.append(PoolInfo(str(p.name()), doc.type or "", doc.target_path, active,
                                int(capacity), int(available)))
    return out


def pool(host: Host, name: str) -> PoolInfo:
    for p in pools(host):
        if p.name == name:
            if not p.active:
                raise Conflict(f"storage pool {name!r} is not active", host=host.label)
            return p
    raise NotFound(f"has no storage pool {name!r}", host=host.label)


def confine(host: Host, field: str, path: str) -> PoolInfo:
    """The pool whose directory holds `path`; InvalidInput if the path is outside every pool.

    Paths from users never name arbitrary files on a hypervisor: an image must live in one of
    its storage pools, where the operator decided VM files belong.
    """
    norm = posixpath.normpath(path)
    for p in pools(host):
        if p.path and p.active and norm.startswith(posixpath.normpath(p.path) + "/"):
            return p
    raise InvalidInput(field, f"{path!r} is not inside any active storage pool of "
                       f"{host.label}")


def check_fits(pool_name: str, available_bytes: int, capacity_bytes: int, field: str,
               on: str | None = None) -> None:
    """The one rule for a new volume's size, whatever its format: its capacity fits in what
    the pool has free now. A thin qcow2 grows to its capacity as the guest writes, and a pool
    that fills pauses every VM writing to it (on a pod's shared pool, the whole pod), so a disk
    that could never be filled is a typo to refuse, not a risk to take (docs/storage.md)."""
    if capacity_bytes > available_bytes:
        where = f" on {on}" if on else ""
        raise InvalidInput(field, f"{human_bytes(capacity_bytes)} is more than the "
                           f"{human_bytes(available_bytes)} free in pool {pool_name!r}{where}")


def create_volume(host: Host, pool_name: str, name: str, capacity_bytes: int, fmt: str,
                  field: str = "disks.size") -> str:
    """A new empty volume; returns its path. Conflict if the name is taken; InvalidInput
    naming `field` if its capacity is more than the pool has free (check_fits)."""
    check_fits(pool_name, pool(host, pool_name).available_bytes, capacity_bytes, field,
               on=host.label)
    vol = _new_volume(name, capacity_bytes, fmt)
    with libvirt_errors(host.label):
        p = host.conn.storagePoolLookupByName(pool_name)
        _absent(host, p, name)
        return str(p.createXML(vol.to_xml(), 0).path())


def _new_volume(name: str, capacity_bytes: int, fmt: str, *, sparse: bool = False,
                mode: str | None = None) -> Volume:
    vol = Volume()
    vol.name = name
    vol.capacity_bytes = capacity_bytes
    vol.capacity_unit = "bytes"
    vol.format = fmt
    if sparse:  # no preallocation: holes in what is copied in stay holes
        vol.allocation_bytes = 0
    vol.mode = mode
    return vol


def delete_volume(host: Host, path: str) -> None:
    with libvirt_errors(host.label):
        host.conn.storageVolLookupByPath(path).delete(0)


def delete_named(host: Host, pool_name: str, name: str) -> None:
    """Delete volume `name` of pool `pool_name`; NotFound if either is missing."""
    with libvirt_errors(host.label):
        host.conn.storagePoolLookupByName(pool_name).storageVolLookupByName(name).delete(0)


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    pool: str
    path: str
    format: str | None
    capacity_bytes: int
    backing_path: str | None
    mode: str | None  # file mode, for pools that keep volumes as files


def _vol_info(vol: Any) -> VolumeInfo:
    doc = Volume.parse(vol.XMLDesc(0))
    return VolumeInfo(str(vol.name()), str(vol.storagePoolLookupByVolume().name()),
                      str(vol.path()), doc.format, int(doc.capacity_bytes or 0),
                      doc.backing_path, doc.mode)


def volume_at(host: Host, path: str) -> VolumeInfo | None:
    """The volume whose file is `path`, or None if no pool of `host` has it (which is also
    how a linked clone's host proves it sees its template's image: same path, same file)."""
    with libvirt_errors(host.label):
        vol = _lookup_path(host, path)
        if vol is None:  # a file put there by another tool shows up once its pool is refreshed
            for p in pools(host):
                if p.active and p.path and posixpath.normpath(path).startswith(
                        posixpath.normpath(p.path) + "/"):
                    host.conn.storagePoolLookupByName(p.name).refresh(0)
            vol = _lookup_path(host, path)
        return None if vol is None else _vol_info(vol)


def _lookup_path(host: Host, path: str) -> Any | None:
    return or_none(lambda: host.conn.storageVolLookupByPath(path), libvirt.VIR_ERR_NO_STORAGE_VOL)


def volumes(host: Host, pool_name: str, refresh: bool = True) -> list[VolumeInfo]:
    with libvirt_errors(host.label):
        p = host.conn.storagePoolLookupByName(pool_name)
        if refresh:  # files made by other tools (qemu-img, another daemon) show up
            p.refresh(0)
        return [_vol_info(v) for v in p.listAllVolumes(0)]


def backed_by(host: Host, path: str) -> list[VolumeInfo]:
    """Every volume in the host's active pools whose backing file is `path`."""
    out: list[VolumeInfo] = []
    for p in pools(host):
        if p.active:
            out.extend(v for v in volumes(host, p.name) if v.backing_path == path)
    return out


def disk_users(host: Host, path: str, pool_name: str, name: str) -> list[str]:
    """The domains of `host`, running or only defined, that have volume `name` of pool
    `pool_name` as a disk (a CD-ROM too): by its path, or as <source pool= volume=>."""
    with libvirt_errors(host.label):
        xmls = [(str(d.name()), str(d.XMLDesc(0))) for d in host.conn.listAllDomains(0)]
    return sorted(vm for vm, xml in xmls if any(
        path in (d.source_file, d.source_dev)
        or (d.source_pool == pool_name and d.source_volume == name)
        for d in Domain.parse(xml).devices.disks))


def _absent(host: Host, p: Any, name: str) -> None:
    if or_none(lambda: p.storageVolLookupByName(name), libvirt.VIR_ERR_NO_STORAGE_VOL) is None:
        return
    raise Conflict(f"volume {name!r} already exists in pool {p.name()!r}", host=host.label)


def create_overlay(host: Host, pool_name: str, name: str, backing: VolumeInfo) -> str:
    """A qcow2 volume whose reads fall through to `backing` (a linked clone's disk); returns
    its path. The backing format is written into the overlay, so QEMU never probes it."""
    return OverlayPool(host, pool_name).create(name, backing)


class OverlayPool:
    """One pool of one host that linked clones' disks go into, looked up once for a batch:
    each overlay is then one createXML and its path."""

    def __init__(self, host: Host, pool_name: str) -> None:
        self.host, self.name = host, pool_name
        with libvirt_errors(host.label):
            self._pool = host.conn.storagePoolLookupByName(pool_name)

    def create(self, name: str, backing: VolumeInfo) -> str:
        """The overlay `name` on `backing`; Conflict if the pool has a volume of that name
        (libvirt refuses it, so that is asked only when it did)."""
        vol = _new_volume(name, backing.capacity_bytes, "qcow2")
        vol.backing_path = backing.path
        vol.backing_format = backing.format or "raw"
        try:
            made = self._pool.createXML(vol.to_xml(), 0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_STORAGE_VOL_EXIST or self._has(name):
                raise Conflict(f"volume {name!r} already exists in pool {self.name!r}",
                               host=self.host.label) from None
            with libvirt_errors(self.host.label):
                raise
        with libvirt_errors(self.host.label):
            return str(made.path())

    def _has(self, name: str) -> bool:
        try:
            self._pool.storageVolLookupByName(name)
        except libvirt.libvirtError:
            return False
        return True


def clone_volume(host: Host, pool_name: str, source: VolumeInfo, name: str,
                 mode: str | None = None) -> str:
    """An independent copy of `source` in `pool_name` on the same host; returns its path.

    Reflink first (instant on XFS/btrfs for raw images); libvirt refuses the flag where the
    filesystem or the format cannot do it, and then copies.
    """
    vol = _new_volume(name, source.capacity_bytes, source.format or "raw", sparse=True,
                      mode=mode)
    with libvirt_errors(host.label):
        p = host.conn.storagePoolLookupByName(pool_name)
        _absent(host, p, name)
        src = host.conn.storageVolLookupByPath(source.path)
        try:
            made = p.createXMLFrom(vol.to_xml(), src, libvirt.VIR_STORAGE_VOL_CREATE_REFLINK)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT,
                                            libvirt.VIR_ERR_INVALID_ARG,
                                            libvirt.VIR_ERR_SYSTEM_ERROR):
                raise
            _remove_if_made(p, name)
            made = p.createXMLFrom(vol.to_xml(), src, 0)
        return str(made.path())


def _remove_if_made(p: Any, name: str) -> None:
    or_none(lambda: p.storageVolLookupByName(name).delete(0), libvirt.VIR_ERR_NO_STORAGE_VOL)


def download(host: Host, path: str, dest: str) -> None:
    """Copy a volume's content to a local file over the libvirt connection, holes kept."""
    with libvirt_errors(host.label):
        vol = host.conn.storageVolLookupByPath(path)
        stream = host.conn.newStream(0)
        vol.download(stream, 0, 0, libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        _pump(stream, fd, lambda: stream.sparseRecvAll(_write_chunk, _write_hole, fd))


def upload(host: Host, pool_name: str, name: str, src: str, fmt: str,
           mode: str | None = None) -> str:
    """A new volume holding a local file's content (holes kept); returns its path."""
    # `fmt` is what the caller says the bytes are; never what a probe of them says.
    vol = _new_volume(name, os.path.getsize(src), fmt, sparse=True, mode=mode)
    with libvirt_errors(host.label):
        p = host.conn.storagePoolLookupByName(pool_name)
        _absent(host, p, name)
        made = p.createXML(vol.to_xml(), 0)
        try:
            stream = host.conn.newStream(0)
            made.upload(stream, 0, 0, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
            fd = os.open(src, os.O_RDONLY)
            _pump(stream, fd,
                  lambda: stream.sparseSendAll(_read_chunk, _what_is_here, _skip_hole, fd))
            p.refresh(0)  # the pool's view of its size and allocation
            return str(made.path())
        except BaseException:
            made.delete(0)
            raise


def copy_volume(source: Host, path: str, target: Host, pool_name: str, name: str,
                fmt: str) -> str:
    """A new volume on `target` holding the content of the volume at `path` on `source`,
    streamed from one libvirt connection into the other (holes kept, nothing staged on this
    machine); returns its path. A failure removes the new volume."""
    with libvirt_errors(source.label):
        vol = source.conn.storageVolLookupByPath(path)
        size = int(vol.info()[2]) or int(vol.info()[1])  # allocation, else capacity
        inbound = source.conn.newStream(0)
        vol.download(inbound, 0, 0, libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM)
    new = _new_volume(name, max(size, 1), fmt, sparse=True)
    with libvirt_errors(target.label):
        p = target.conn.storagePoolLookupByName(pool_name)
        _absent(target, p, name)
        made = p.createXML(new.to_xml(), 0)
        try:
            outbound = target.conn.newStream(0)
            made.upload(outbound, 0, 0, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
            try:
                inbound.sparseRecvAll(_send_chunk, _send_hole, outbound)
                inbound.finish()
                outbound.finish()
            except BaseException:
                for stream in (inbound, outbound):
                    _abort(stream)
                raise
            p.refresh(0)
            return str(made.path())
        except BaseException:
            made.delete(0)
            raise


def _abort(stream: Any) -> None:
    with contextlib.suppress(libvirt.libvirtError):  # one that broke: the error raised says why
        stream.abort()


def _send_chunk(_stream: Any, data: bytes, outbound: Any) -> int:
    sent = 0
    while sent < len(data):  # virStreamSend may take less than it was given
        sent += int(outbound.send(data[sent:]))
    return sent


def _send_hole(_stream: Any, length: int, outbound: Any) -> int:
    outbound.sendHole(length, 0)
    return 0


def _pump(stream: Any, fd: int, move: Callable[[], object]) -> None:
    """Run one whole transfer over `stream`; a failure aborts the stream so the volume is
    never left half-written on the host, and the file is closed either way."""
    try:
        move()
        stream.finish()
    except BaseException:
        stream.abort()
        raise
    finally:
        os.close(fd)


# The callbacks libvirt's sparse streams call, with the file descriptor as opaque.
def _write_chunk(_stream: Any, data: bytes, fd: int) -> int:
    return os.write(fd, data)


def _write_hole(_stream: Any, length: int, fd: int) -> int:
    os.lseek(fd, length, os.SEEK_CUR)
    os.ftruncate(fd, os.lseek(fd, 0, os.SEEK_CUR))
    return 0


def _read_chunk(_stream: Any, nbytes: int, fd: int) -> bytes:
    return os.read(fd, nbytes)


def _what_is_here(_stream: Any, fd: int) -> tuple[bool, int]:
    """(in a data section?, bytes until it ends), from SEEK_DATA/SEEK_HOLE."""
    cur = os.lseek(fd, 0, os.SEEK_CUR)
    try:
        try:
            data = os.lseek(fd, cur, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole (or nothing) from here to the end
            return False, os.fstat(fd).st_size - cur
        if data > cur:
            return False, data - cur
        return True, os.lseek(fd, cur, os.SEEK_HOLE) - cur
    finally:
        os.lseek(fd, cur, os.SEEK_SET)  # the probes moved the offset; libvirt reads from here


def _skip_hole(_stream: Any, length: int, fd: int) -> int:
    os.lseek(fd, length, os.SEEK_CUR)
    return 0
