"""libvirt storage pool and volume XML: where a pool keeps its files, what backs it (a directory,
a filesystem on a device, an NFS export, an LVM volume group, an iSCSI target, a multipath
device set, a whole disk), and enough of a volume to make one.

`pool_definition` builds a pool document from virsh-like options and refuses, as InvalidInput
naming the option, anything libvirt would reject later or that could point a pool at the wrong
place (a relative target, a '..' in a path).
"""

from __future__ import annotations

import posixpath
import re

from virtfleet.errors import InvalidInput
from virtfleet.validate import check_name
from virtfleet.xml.model import Attr, Children, Text, XMLModel, to_int

# The order libvirt writes pool and volume elements in, per parent tag (see xml/model.py).
ORDERS: dict[str, tuple[str, ...]] = {
    "pool": ("name", "uuid", "capacity", "allocation", "available", "features", "source",
             "target"),
    "source": ("host", "device", "dir", "adapter", "name", "format", "initiator", "auth",
               "vendor", "product"),
    "volume": ("name", "key", "source", "capacity", "allocation", "physical", "target",
               "backingStore"),
    "target": ("path", "format", "permissions", "timestamps", "compat", "clusterSize",
               "nocow", "features"),
    "backingStore": ("path", "format", "permissions"),
}


class SourceDevice(XMLModel):
    TAG = "device"
    path = Attr("", "path", str)


class Pool(XMLModel):
    TAG = "pool"
    ORDERS = ORDERS
    type = Attr("", "type", str)  # dir, fs, netfs, logical, iscsi, mpath, disk
    name = Text("name", str)
    uuid = Text("uuid", str)
    capacity_bytes = Text("capacity", to_int("capacity"))
    allocation_bytes = Text("allocation", to_int("allocation"))
    available_bytes = Text("available", to_int("available"))
    target_path = Text("target/path", str)
    source_host = Attr("source/host", "name", str)
    source_port = Attr("source/host", "port", to_int("source/host port"))
    source_dir = Attr("source/dir", "path", str)
    source_devices = Children("source", SourceDevice)
    source_name = Text("source/name", str)  # the LVM volume group
    source_format = Attr("source/format", "type", str)  # xfs, nfs, lvm2, gpt ...
    initiator_iqn = Attr("source/initiator/iqn", "name", str)

    @property
    def source_device(self) -> str | None:
        """The first source device's path (for iSCSI: the target IQN)."""
        devs = list(self.source_devices)
        return devs[0].path if devs else None

    def source_text(self) -> str | None:
        """Where the pool's storage comes from, in the words an operator writes it."""
        if self.type == "netfs" and self.source_host and self.source_dir:
            return f"{self.source_host}:{self.source_dir}"
        if self.type == "iscsi" and self.source_host:
            return f"{self.source_host}/{self.source_device or '?'}"
        if self.type == "logical":
            devs = ",".join(d.path or "" for d in self.source_devices)
            return f"vg {self.source_name or self.name}" + (f" on {devs}" if devs else "")
        if self.type in ("fs", "disk") and self.source_device:
            return self.source_device
        return None


class Volume(XMLModel):
    TAG = "volume"
    ORDERS = ORDERS
    type = Attr("", "type", str)
    name = Text("name", str)
    key = Text("key", str)
    capacity_bytes = Text("capacity", to_int("capacity"))
    capacity_unit = Attr("capacity", "unit", str)
    allocation_bytes = Text("allocation", to_int("allocation"))
    path = Text("target/path", str)
    format = Attr("target/format", "type", str)
    mode = Text("target/permissions/mode", str)  # octal, as libvirt writes it: 0444
    backing_path = Text("backingStore/path", str)
    backing_format = Attr("backingStore/format", "type", str)


POOL_TYPES = ("dir", "fs", "netfs", "logical", "iscsi", "mpath", "disk")
FS_FORMATS = ("auto", "ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "gfs2", "ocfs2")
NETFS_FORMATS = ("nfs", "glusterfs", "cifs")
DISK_FORMATS = ("dos", "gpt", "dvh", "mac", "bsd", "pc98", "sun", "lvm2")
# IQN (RFC 3720): iqn.YYYY-MM.reversed.domain[:anything]; no spaces, quotes or path separators.
_IQN_RE = re.compile(r"^iqn\.\d{4}-\d{2}\.[a-z0-9][a-z0-9.-]*(?::[A-Za-z0-9.:_-]+)?$")
_HOST_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def check_abs_path(field: str, path: str) -> str:
    """An absolute, normalised path without '..': pools never reach outside what was named."""
    if not path.startswith("/"):
        raise InvalidInput(field, f"{path!r} must be an absolute path")
    if ".." in path.split("/"):
        raise InvalidInput(field, f"{path!r} must not contain '..'")
    if "\x00" in path or "\n" in path or len(path) > 1024:
        raise InvalidInput(field, "must be a path of at most 1024 characters without NUL or "
                           "newline")
    return posixpath.normpath(path)


def check_source_host(field: str, host: str) -> str:
    if not _HOST_RE.match(host):
        raise InvalidInput(field, f"{host!r} is not a host name or IPv4 address")
    return host


def _one_of(field: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InvalidInput(field, f"{value!r} is not one of {', '.join(allowed)}")
    return value


def _need(field: str, value: object, kind: str) -> None:
    if not value:
        raise InvalidInput(field, f"required for a {kind} pool")


def pool_definition(
    kind: str,
    name: str,
    *,
    target: str | None = None,
    source_host: str | None = None,
    source_path: str | None = None,
    source_devs: tuple[str, ...] = (),
    vg: str | None = None,
    iqn: str | None = None,
    fmt: str | None = None,
) -> Pool:
    """A pool document from `virsh pool-define-as`-like fields, each checked by its rule.
    Errors name the fields as a pool request does: `type` for `kind`, `format` for `fmt`, the
    others as their parameters."""
    _one_of("type", kind, POOL_TYPES)
    check_name("name", name)
    p = Pool()
    p.type, p.name = kind, name
    devs = tuple(check_abs_path("source_devs", d) for d in source_devs)
    if kind in ("dir", "fs", "netfs"):
        _need("target", target, kind)
        assert target is not None
        p.target_path = check_abs_path("target", target)
    if kind == "fs":
        _need("source_devs", devs, kind)
        p.source_devices.append(_dev(devs[0]))
        p.source_format = _one_of("format", fmt or "auto", FS_FORMATS)
    elif kind == "netfs":
        _need("source_host", source_host, kind)
        _need("source_path", source_path, kind)
        assert source_host is not None and source_path is not None
        p.source_host = check_source_host("source_host", source_host)
        p.source_dir = check_abs_path("source_path", source_path)
        p.source_format = _one_of("format", fmt or "nfs", NETFS_FORMATS)
    elif kind == "logical":
        vg_name = check_name("vg", vg or name)
        for d in devs:
            p.source_devices.append(_dev(d))
        p.source_name = vg_name
        p.source_format = "lvm2"
        p.target_path = f"/dev/{vg_name}"
    elif kind == "iscsi":
        _need("source_host", source_host, kind)
        _need("iqn", iqn, kind)
        assert source_host is not None and iqn is not None
        if not _IQN_RE.match(iqn):
            raise InvalidInput("iqn", f"{iqn!r} is not an iSCSI qualified name such as "
                               "iqn.2013-06.com.example:vms")
        p.source_host = check_source_host("source_host", source_host)
        p.source_devices.append(_dev(iqn))
        # Stable names: the same LUN has the same by-path name on every hypervisor.
        p.target_path = check_abs_path("target", target or "/dev/disk/by-path")
    elif kind == "mpath":
        p.target_path = check_abs_path("target", target or "/dev/mapper")
    elif kind == "disk":
        _need("source_devs", devs, kind)
        p.source_devices.append(_dev(devs[0]))
        p.source_format = _one_of("format", fmt or "gpt", DISK_FORMATS)
        p.target_path = check_abs_path("target", target or "/dev")
    if fmt is not None and kind in ("dir", "logical", "iscsi", "mpath"):
        raise InvalidInput("format", f"does not apply to a {kind} pool")
    return p


def _dev(path: str) -> SourceDevice:
    d = SourceDevice()
    d.path = path
    return d
