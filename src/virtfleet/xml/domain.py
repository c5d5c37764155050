"""libvirt domain XML: the parts virtfleet reads and writes, everything else kept as is.

Policy (what a VM spec becomes) lives in design/; these classes only map XML to typed values.
virtfleet's own facts about a VM (site, pod, application, template, owner) are stored in the
domain's <metadata> under virtfleet's namespace, as VDSM does, so they travel with the domain;
the OS it was designed for is stored there in libosinfo's namespace, as virt-install does.
"""

from __future__ import annotations

from typing import ClassVar, overload

from virtfleet.errors import InvalidInput
from virtfleet.xml.model import (
    Attr,
    Child,
    Children,
    Flag,
    Text,
    XMLModel,
    fmt_on_off,
    fmt_yes_no,
    on_off,
    place,
    to_int,
    yes_no,
)
from virtfleet.xml.vlan import VlanTagged

VF_NS = "urn:x-virtfleet:domain:1"
TEMPLATE_ROLE = "template"  # FleetFacts.role of a sealed template (docs/templates.md)
LIBOSINFO_NS = "http://libosinfo.org/xmlns/libvirt/domain/1.0"

# The order libvirt writes each element's children in (its domain formatter), per parent tag,
# so an element virtfleet adds lands where `virsh dumpxml` would show it.
ORDERS: dict[str, tuple[str, ...]] = {
    "domain": (
        "name", "uuid", "genid", "title", "description", "metadata", "maxMemory", "memory",
        "currentMemory", "blkiotune", "memtune", "memoryBacking", "vcpu", "vcpus", "iothreads",
        "iothreadids", "defaultiothread", "cputune", "numatune", "resource", "sysinfo",
        "bootloader", "bootloader_args", "os", "idmap", "features", "cpu", "clock",
        "on_poweroff", "on_reboot", "on_crash", "on_lockfailure", "pm", "perf", "devices",
        "seclabel", "keywrap", "launchSecurity"),
    "metadata": (f"{{{LIBOSINFO_NS}}}libosinfo", f"{{{VF_NS}}}instance"),
    "os": ("type", "firmware", "loader", "nvram", "kernel", "initrd", "cmdline", "shim", "dtb",
           "acpi", "boot", "bootmenu", "smbios", "bios"),
    "features": ("acpi", "apic", "pae", "hap", "viridian", "privnet", "hyperv", "kvm", "xen",
                 "pvspinlock", "capabilities", "pmu", "vmport", "gic", "smm", "ioapic"),
    "hyperv": ("relaxed", "vapic", "spinlocks", "vpindex", "runtime", "synic", "stimer",
               "reset", "vendor_id", "frequencies", "reenlightenment", "tlbflush", "ipi",
               "evmcs"),
    "cpu": ("model", "vendor", "topology", "cache", "maxphysaddr", "feature", "numa"),
    "pm": ("suspend-to-mem", "suspend-to-disk"),
    "sysinfo": ("bios", "system", "baseBoard", "chassis", "processor", "memory", "oemStrings"),
    "devices": (
        "emulator", "disk", "controller", "lease", "filesystem", "interface", "smartcard",
        "serial", "parallel", "console", "channel", "input", "tpm", "graphics", "sound",
        "audio", "video", "hostdev", "redirdev", "redirfilter", "hub", "watchdog",
        "memballoon", "rng", "panic", "shmem", "memory", "iommu", "vsock", "crypto"),
    "disk": ("driver", "auth", "source", "backingStore", "backenddomain", "geometry", "blockio",
             "mirror", "target", "iotune", "readonly", "shareable", "transient", "serial",
             "wwn", "vendor", "product", "encryption", "boot", "alias", "address"),
    "interface": ("mac", "source", "vlan", "virtualport", "ip", "route", "script",
                  "backenddomain", "target", "guest", "model", "driver", "backend",
                  "filterref", "bandwidth", "coalesce", "link", "mtu", "teaming", "rom",
                  "boot", "alias", "address"),
    "graphics": ("listen", "channel", "image", "streaming", "clipboard", "mouse",
                 "filetransfer", "gl", "audio"),
    "controller": ("model", "driver", "master", "target", "alias", "address"),
    "channel": ("source", "target", "alias", "address"),
    "serial": ("source", "protocol", "log", "target", "alias", "address"),
    "console": ("source", "protocol", "log", "target", "alias", "address"),
    "rng": ("rate", "backend", "alias", "address"),
    "video": ("driver", "model", "alias", "address"),
}
PREFIXES = {VF_NS: "vf", LIBOSINFO_NS: "libosinfo"}

# libvirt's memory units (docs: formatdomain "Memory Allocation"); 'k' and 'KiB' are 1024.
_UNIT_BYTES = {
    "b": 1, "bytes": 1,
    "KB": 10**3, "k": 2**10, "KiB": 2**10,
    "MB": 10**6, "M": 2**20, "MiB": 2**20,
    "GB": 10**9, "G": 2**30, "GiB": 2**30,
    "TB": 10**12, "T": 2**40, "TiB": 2**40,
}


class _DomainPart(XMLModel):
    """Any model inside a domain document: libvirt's element order, the domain's prefixes."""

    ORDERS = ORDERS
    PREFIXES = PREFIXES


class MemoryKiB:
    """An element holding a memory size with a `unit` attribute, read and written in KiB."""

    def __init__(self, path: str) -> None:
        self.path = path

    @overload
    def __get__(self, obj: None, owner: type) -> MemoryKiB: ...
    @overload
    def __get__(self, obj: XMLModel, owner: type) -> int | None: ...

    def __get__(self, obj: XMLModel | None, owner: type) -> MemoryKiB | int | None:
        if obj is None:
            return self
        el = obj.find(self.path)
        if el is None or not (el.text or "").strip():
            return None
        unit = el.get("unit", "KiB")
        if unit not in _UNIT_BYTES:
            raise InvalidInput(self.path, f"unknown memory unit {unit!r}")
        return to_int(self.path)(el.text or "") * _UNIT_BYTES[unit] // 1024

    def __set__(self, obj: XMLModel, kib: int | None) -> None:
        if kib is None:
            obj.prune(self.path)
            return
        el = obj.ensure(self.path)
        el.set("unit", "KiB")
        el.text = str(kib)


class OS(_DomainPart):
    TAG = "os"
    type = Text("type", str)
    arch = Attr("type", "arch", str)
    machine = Attr("type", "machine", str)
    kernel = Text("kernel", str)
    initrd = Text("initrd", str)
    cmdline = Text("cmdline", str)
    smbios_mode = Attr("smbios", "mode", str)

    @property
    def boot(self) -> list[str]:
        """Boot device order: hd, cdrom, network, fd."""
        return [str(b.get("dev")) for b in self.findall("boot")]

    @boot.setter
    def boot(self, devices: list[str]) -> None:
        self.drop("boot")
        for dev in devices:
            self.add("", "boot", dev=dev)


class Features(_DomainPart):
    TAG = "features"
    acpi = Flag("acpi")
    apic = Flag("apic")
    vmport = Attr("vmport", "state", on_off, fmt_on_off)
    # Hyper-V enlightenments: what Windows guests use to run well under KVM.
    hyperv_relaxed = Attr("hyperv/relaxed", "state", on_off, fmt_on_off)
    hyperv_vapic = Attr("hyperv/vapic", "state", on_off, fmt_on_off)
    hyperv_spinlocks = Attr("hyperv/spinlocks", "state", on_off, fmt_on_off)
    hyperv_spinlock_retries = Attr("hyperv/spinlocks", "retries", to_int("spinlocks retries"))


class Clock(_DomainPart):
    """<clock>: the offset, and the timers virt-install tunes (by name: a predicate path)."""

    TAG = "clock"
    offset = Attr("", "offset", str)  # utc, localtime
    rtc_tickpolicy = Attr("timer[@name='rtc']", "tickpolicy", str)
    pit_tickpolicy = Attr("timer[@name='pit']", "tickpolicy", str)
    hpet_present = Attr("timer[@name='hpet']", "present", yes_no, fmt_yes_no)
    hypervclock_present = Attr("timer[@name='hypervclock']", "present", yes_no, fmt_yes_no)


MAX_CHAIN = 32  # backing images read below one disk (a chain deeper than this is cut)


class Disk(_DomainPart):
    TAG = "disk"
    type = Attr("", "type", str)  # file, block, volume, network
    device = Attr("", "device", str)  # disk, cdrom
    driver_name = Attr("driver", "name", str)
    format = Attr("driver", "type", str)  # qcow2, raw
    cache = Attr("driver", "cache", str)
    io = Attr("driver", "io", str)  # native, threads
    discard = Attr("driver", "discard", str)  # unmap: the guest's TRIM frees space below
    source_file = Attr("source", "file", str)
    source_dev = Attr("source", "dev", str)
    source_pool = Attr("source", "pool", str)
    source_volume = Attr("source", "volume", str)
    target_dev = Attr("target", "dev", str)
    target_bus = Attr("target", "bus", str)
    readonly = Flag("readonly")

    @property
    def source(self) -> str | None:
        """The path or volume the disk reads, whatever its type."""
        return self.source_file or self.source_dev or self.source_volume

    @property
    def backing_store(self) -> list[tuple[str, str | None]]:
        """The images below the disk's own, nearest first, as libvirt reports them in a
        running domain's <backingStore> chain: (path or device, format). Empty when libvirt
        gave none (a shut-off domain's XML has no chain)."""
        out: list[tuple[str, str | None]] = []
        node = self.find("backingStore")
        while node is not None and len(out) < MAX_CHAIN:
            source, fmt = node.find("source"), node.find("format")
            where = source.get("file") or source.get("dev") if source is not None else None
            if not where:
                break  # the chain's empty terminator
            out.append((where, fmt.get("type") if fmt is not None else None))
            node = node.find("backingStore")
        return out


class Interface(_DomainPart, VlanTagged):
    TAG = "interface"
    type = Attr("", "type", str)  # bridge, network, direct, hostdev
    mac = Attr("mac", "address", str)
    source_bridge = Attr("source", "bridge", str)
    source_network = Attr("source", "network", str)
    source_dev = Attr("source", "dev", str)  # direct (macvtap): the host NIC it sits on
    model = Attr("model", "type", str)
    virtualport = Attr("virtualport", "type", str)  # openvswitch, 802.1Qbh ...
    portgroup = Attr("source", "portgroup", str)
    managed = Attr("", "managed", yes_no, fmt_yes_no)  # hostdev: libvirt (un)binds the VF

    @property
    def pci_address(self) -> str | None:
        """type='hostdev': the VF's PCI address as 0000:03:10.1."""
        a = self.find("source/address[@type='pci']")
        if a is None:
            return None
        return "{:04x}:{:02x}:{:02x}.{:x}".format(
            *(int(str(a.get(k, "0")), 16) for k in ("domain", "bus", "slot", "function")))

    def set_pci_address(self, address: str) -> None:
        """Point a hostdev interface at a PCI function given as [DDDD:]BB:SS.F."""
        *dom, bus, slot_fn = address.split(":")
        slot, fn = slot_fn.split(".")
        self.drop("source/address")
        self.add("source", "address", type="pci", domain=f"0x{dom[0] if dom else '0000'}",
                 bus=f"0x{bus}", slot=f"0x{slot}", function=f"0x{fn}")


class Graphics(_DomainPart):
    TAG = "graphics"
    type = Attr("", "type", str)  # spice, vnc
    autoport = Attr("", "autoport", yes_no, fmt_yes_no)
    listen = Attr("", "listen", str)
    port = Attr("", "port", int)  # live XML: the display's TCP port (-1 until it runs)
    tls_port = Attr("", "tlsPort", int)  # SPICE's TLS port, in the same way
    listen_address = Attr("listen[@type='address']", "address", str)
    # The password is write-only in virtfleet: libvirt hides it from XMLDesc unless asked for
    # secure XML, and virtfleet never asks, prints, logs or stores it.
    passwd = Attr("", "passwd", str)

    def set_listen_address(self, address: str) -> None:
        self.listen = address
        self.drop("listen")
        self.listen_address = address


class CharDevice(_DomainPart):
    """<serial> (and, below, <console> and <channel>): type pty, target port."""

    TAG = "serial"
    type = Attr("", "type", str)
    target_port = Attr("target", "port", to_int("serial target port"))
    target_type = Attr("target", "type", str)


class Console(CharDevice):
    TAG = "console"


class Channel(CharDevice):
    """A guest channel: the guest agent's (unix socket) or SPICE's agent (spicevmc)."""

    TAG = "channel"
    source_mode = Attr("source", "mode", str)  # bind: libvirt makes the socket
    target_name = Attr("target", "name", str)  # org.qemu.guest_agent.0, com.redhat.spice.0


class Controller(_DomainPart):
    TAG = "controller"
    type = Attr("", "type", str)  # usb, pci, sata, scsi, virtio-serial
    model = Attr("", "model", str)  # qemu-xhci, ich9-ehci1, pcie-root, pcie-root-port ...
    ports = Attr("", "ports", to_int("controller ports"))
    master_startport = Attr("master", "startport", to_int("master startport"))


class Input(_DomainPart):
    TAG = "input"
    type = Attr("", "type", str)  # tablet, mouse, keyboard
    bus = Attr("", "bus", str)  # usb, ps2, virtio


class Sound(_DomainPart):
    TAG = "sound"
    model = Attr("", "model", str)  # ich9, ich6


class Video(_DomainPart):
    TAG = "video"
    model = Attr("model", "type", str)  # virtio, qxl, vga, cirrus


class RedirDev(_DomainPart):
    """A USB redirection channel: the SPICE client's USB devices appear in the guest."""

    TAG = "redirdev"
    bus = Attr("", "bus", str)
    type = Attr("", "type", str)  # spicevmc


class MemBalloon(_DomainPart):
    TAG = "memballoon"
    model = Attr("", "model", str)  # virtio, none


class Rng(_DomainPart):
    TAG = "rng"
    model = Attr("", "model", str)  # virtio
    backend_model = Attr("backend", "model", str)  # random
    backend = Text("backend", str)  # /dev/urandom


class Devices(_DomainPart):
    TAG = "devices"
    emulator = Text("emulator", str)
    disks = Children("", Disk)
    controllers = Children("", Controller)
    interfaces = Children("", Interface)
    serials = Children("", CharDevice)
    consoles = Children("", Console)
    channels = Children("", Channel)
    inputs = Children("", Input)
    graphics = Children("", Graphics)
    sounds = Children("", Sound)
    videos = Children("", Video)
    redirdevs = Children("", RedirDev)
    memballoons = Children("", MemBalloon)
    rngs = Children("", Rng)


class FleetFacts(XMLModel):
    """virtfleet's own facts about a VM, in the domain's <metadata>."""

    TAG = f"{{{VF_NS}}}instance"
    NSMAP: ClassVar[dict[str, str] | None] = {"vf": VF_NS}
    ORDERS = {TAG: tuple(f"{{{VF_NS}}}{t}" for t in
                         ("site", "pod", "app", "template", "owner", "role", "ha"))}
    site = Text(f"{{{VF_NS}}}site", str)
    pod = Text(f"{{{VF_NS}}}pod", str)
    app = Text(f"{{{VF_NS}}}app", str)
    template = Text(f"{{{VF_NS}}}template", str)  # on a clone: the template it came from
    owner = Text(f"{{{VF_NS}}}owner", str)
    role = Text(f"{{{VF_NS}}}role", str)  # "template" on a sealed template; unset on VMs
    # <vf:ha priority="N"/>: restarted on another hypervisor of its pod when its own fails
    # (docs/ha.md); higher priorities first.
    ha_priority = Attr(f"{{{VF_NS}}}ha", "priority", to_int("ha priority"))


class Domain(_DomainPart):
    TAG = "domain"
    type = Attr("", "type", str)  # kvm, qemu, test
    id = Attr("", "id", to_int("domain id"))
    name = Text("name", str)
    uuid = Text("uuid", str)
    title = Text("title", str)
    description = Text("description", str)
    # The OS the domain was designed for, as libosinfo's full id (what virt-install records).
    os_id = Attr(f"metadata/{{{LIBOSINFO_NS}}}libosinfo/{{{LIBOSINFO_NS}}}os", "id", str)
    memory_kib = MemoryKiB("memory")
    current_memory_kib = MemoryKiB("currentMemory")
    vcpus = Text("vcpu", to_int("vcpu"))
    cpu_mode = Attr("cpu", "mode", str)  # host-model, host-passthrough, custom
    on_poweroff = Text("on_poweroff", str)
    on_reboot = Text("on_reboot", str)
    on_crash = Text("on_crash", str)
    suspend_to_mem = Attr("pm/suspend-to-mem", "enabled", yes_no, fmt_yes_no)
    suspend_to_disk = Attr("pm/suspend-to-disk", "enabled", yes_no, fmt_yes_no)
    os = Child("os", OS)
    features = Child("features", Features)
    clock = Child("clock", Clock)
    devices = Child("devices", Devices)

    @property
    def facts(self) -> FleetFacts | None:
        """virtfleet's metadata, or None if the domain has none (made outside virtfleet)."""
        el = self.find(f"metadata/{FleetFacts.TAG}")
        return None if el is None else FleetFacts(el)

    def set_facts(self, facts: FleetFacts) -> None:
        self.drop(f"metadata/{FleetFacts.TAG}")
        place(self.ensure("metadata"), facts.element, ORDERS)

    @property
    def smbios_serial(self) -> str | None:
        return self.sysinfo_entry("system", "serial")

    def sysinfo_entry(self, section: str, name: str) -> str | None:
        el = self.find(f"sysinfo[@type='smbios']/{section}/entry[@name='{name}']")
        return None if el is None else el.text

    def set_smbios_serial(self, serial: str) -> None:
        """Hand the guest a string through the SMBIOS system serial number, where cloud-init
        reads its NoCloud seed ("ds=nocloud;h=HOSTNAME") without anything written to a disk."""
        if self.find("os") is None:
            raise InvalidInput("domain", "has no <os> element")
        self.drop("sysinfo[@type='smbios']")
        self.ensure("sysinfo[@type='smbios']/system/entry[@name='serial']").text = serial
        self.os.smbios_mode = "sysinfo"
