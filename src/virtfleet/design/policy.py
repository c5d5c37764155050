"""A validated VMSpec becomes a libvirt Domain: the defaults and device layout live here.

Resolved facts come in from the caller (which host type, where each disk ended up, which MACs
are free fleet-wide); this module decides nothing that needs a hypervisor, so it is tested
without one and every result is checked against libvirt's schema.
"""

from __future__ import annotations

import secrets
import string
import uuid as uuidlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from virtfleet.design import defaults, osinfo
from virtfleet.design.osinfo import OSVariant
from virtfleet.design.spec import NicSpec, VMSpec
from virtfleet.errors import InvalidInput
from virtfleet.xml.domain import CharDevice, Console, Disk, Domain, FleetFacts, Graphics, Interface

VIRT_TYPES = ("kvm", "qemu")


def choose_virt_type(setting: str, host_types: Iterable[str], kvm_usable: bool) -> str:
    """`auto` takes KVM where the host can run it, TCG (`qemu`) otherwise, or the one type a
    host offers (the test driver's `test`)."""
    offered = set(host_types)
    if setting == "auto":
        if kvm_usable and "kvm" in offered:
            return "kvm"
        if "qemu" in offered:
            return "qemu"
        if len(offered) == 1:
            return offered.pop()
        raise InvalidInput("virt_type", f"the host offers no usable type ({sorted(offered)})")
    if setting not in VIRT_TYPES:
        raise InvalidInput("virt_type", f"{setting!r} is not auto, kvm or qemu")
    if setting not in offered or (setting == "kvm" and not kvm_usable):
        raise InvalidInput("virt_type", f"the host does not offer {setting}")
    return setting


def random_mac(taken: set[str]) -> str:
    """A QEMU-range MAC (52:54:00:xx:xx:xx) not in `taken` (MACs must be unique fleet-wide)."""
    for _ in range(1000):
        mac = "52:54:00:" + ":".join(f"{secrets.randbelow(256):02x}" for _ in range(3))
        if mac not in taken:
            return mac
    raise InvalidInput("mac", "could not find a free MAC address in 52:54:00:00:00:00/24")


_PREFIX = {"virtio": "vd", "sata": "sd", "scsi": "sd", "ide": "hd"}


def _target(bus: str, index: int) -> str:
    return _PREFIX[bus] + string.ascii_lowercase[index]


@dataclass(frozen=True)
class Placement:
    """What the caller resolved for this VM on its chosen host."""

    virt_type: str
    disk_paths: tuple[str, ...]  # one per spec disk, in order
    macs: tuple[str, ...]  # one per spec NIC, in order
    facts: dict[str, str] = field(default_factory=dict)  # site, pod, app, template, owner
    ha_priority: int | None = None  # <vf:ha priority="N"/>: an HA VM (docs/ha.md)
    uuid: str = field(default_factory=lambda: str(uuidlib.uuid4()))


def build_interface(spec: NicSpec, mac: str, os: OSVariant | None = None) -> Interface:
    """One <interface>: bridge (Linux or OVS), network (and portgroup), or SR-IOV hostdev;
    its model the one asked for, else the OS variant's (virtio without one)."""
    nic = Interface()
    nic.type = spec.kind
    if spec.kind == "hostdev":
        nic.managed = True  # libvirt detaches the VF from the host driver and gives it back
    nic.mac = mac
    if spec.kind == "bridge":
        nic.source_bridge = spec.source
    elif spec.kind == "network":
        nic.source_network = spec.source
        if spec.portgroup is not None:
            nic.portgroup = spec.portgroup
    else:
        nic.set_pci_address(spec.source)
    if spec.virtualport is not None:
        nic.virtualport = spec.virtualport
    if spec.kind != "hostdev":  # a VF is real hardware: no emulated model
        nic.model = spec.model or (defaults.nic_model(os, None) if os else "virtio")
    if spec.vlans:
        nic.set_vlans(list(spec.vlans), trunk=spec.trunk)
    return nic


def _disk(path: str, fmt: str, bus: str, target: str) -> Disk:
    disk = Disk()
    block = path.startswith("/dev/")
    disk.type, disk.device = ("block" if block else "file"), "disk"
    disk.driver_name, disk.format = "qemu", fmt
    if block:
        disk.source_dev = path
        # A whole device: no host page cache, native AIO, and TRIM passed down (virt-install).
        disk.cache, disk.io, disk.discard = "none", "native", "unmap"
    else:
        disk.source_file = path
        # Thin images give space back when the guest frees it: every qcow2, new or imported
        # (raw volumes virtfleet makes are fully allocated).
        if fmt == "qcow2":
            disk.discard = "unmap"
    disk.target_dev, disk.target_bus = target, bus
    return disk


def build_domain(spec: VMSpec, where: Placement) -> Domain:
    """The domain virt-install would define for the same request and OS variant, with
    virtfleet's differences (docs/vms.md): graphics on localhost, a SATA CD-ROM, a serial
    console, host-model CPUs, virtfleet's facts in the metadata."""
    if len(where.disk_paths) != len(spec.disks):
        raise ValueError("one resolved path per disk")  # a caller bug, not user input
    if len(where.macs) != len(spec.nics):
        raise ValueError("one MAC per NIC")
    os = osinfo.lookup(spec.os_variant)
    d = Domain()
    d.type = where.virt_type
    d.name = spec.name
    d.uuid = where.uuid
    if os.id is not None:  # what virt-manager and virt-xml read back; generic leaves none
        d.os_id = os.id
    d.memory_kib = d.current_memory_kib = spec.memory_mib * 1024
    d.vcpus = spec.vcpus
    d.os.type = "hvm"
    d.os.arch = "x86_64"
    boot = spec.boot
    if boot.method == "kernel":
        d.os.kernel, d.os.initrd, d.os.cmdline = boot.kernel, boot.initrd, boot.cmdline
    else:
        d.os.boot = {"cdrom": ["cdrom", "hd"], "pxe": ["network", "hd"],
                     "import": ["hd"]}[boot.method]
    graphics = spec.graphics.type
    defaults.set_platform(d, os, where.virt_type, graphics)
    counters: dict[str, int] = {}
    buses = [defaults.disk_bus(os, ds.bus) for ds in spec.disks]
    for disk_spec, path, bus in zip(spec.disks, where.disk_paths, buses, strict=True):
        prefix = _PREFIX[bus]
        target = _target(bus, counters.get(prefix, 0))
        counters[prefix] = counters.get(prefix, 0) + 1
        d.devices.disks.append(_disk(path, disk_spec.format, bus, target))
    if boot.method == "cdrom" and boot.cdrom:
        # SATA on every machine (virt-install uses IDE on i440fx): one CD-ROM that works on
        # q35 too, where there is no IDE.
        cd = Disk()
        cd.type, cd.device = "file", "cdrom"
        cd.driver_name, cd.format = "qemu", "raw"
        cd.source_file = boot.cdrom
        cd.target_dev, cd.target_bus = _target("sata", counters.get("sd", 0)), "sata"
        cd.readonly = True
        d.devices.disks.append(cd)
    for nic_spec, mac in zip(spec.nics, where.macs, strict=True):
        d.devices.interfaces.append(build_interface(nic_spec, mac, os))
    if spec.serial_console:
        serial = CharDevice()
        serial.type, serial.target_port = "pty", 0
        d.devices.serials.append(serial)
        console = Console()
        console.type, console.target_type, console.target_port = "pty", "serial", 0
        d.devices.consoles.append(console)
    g = spec.graphics
    if g.type != "none":
        gfx = Graphics()
        gfx.type, gfx.autoport = g.type, True
        gfx.set_listen_address(g.listen)
        if g.password is not None:
            gfx.passwd = g.password.get_secret_value()
        d.devices.graphics.append(gfx)
    defaults.add_devices(d, os, graphics, scsi_disks="scsi" in buses)
    if where.facts or where.ha_priority is not None:
        facts = FleetFacts()
        for key, value in where.facts.items():
            if key not in ("site", "pod", "app", "template", "owner"):
                raise ValueError(f"unknown fact {key!r}")
            setattr(facts, key, value)
        facts.ha_priority = where.ha_priority
        d.set_facts(facts)
    return d
