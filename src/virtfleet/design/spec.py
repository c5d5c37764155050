"""A VM request in virt-install's words, validated before anything is made.

A VM request's disks, NICs and graphics arrive as virt-install-style strings
(`size=80G,format=qcow2`, `bridge=br0,vlan=42`, `spice`); `parse_*` turn each into a typed
spec, refusing anything ambiguous with a one-line error naming the request's field
(`disks[1].size`, `networks[0]`: the CLI words them as its options). A bus or model left out
is the OS variant's (design/defaults.py), as virt-install picks it.

A graphics password never comes through argv, where every user of the machine reads it in
`ps`: the CLI reads it from a file, stdin or the environment and hands it to `vm_spec`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, SecretStr

from virtfleet.config import GRAPHICS_PASSWORD_ENV
from virtfleet.design import osinfo
from virtfleet.design.defaults import check_buses
from virtfleet.design.sizes import parse_bytes, parse_mib
from virtfleet.errors import InvalidInput
from virtfleet.validate import check_name

MAX_VCPUS = 512
MAX_MEMORY_MIB = 16 * 2**20  # 16 TiB: anything larger is a typo
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_BRIDGE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")  # Linux interface names: 15 characters
_OS_VARIANT_RE = re.compile(r"^[a-z][a-z0-9.-]{0,63}$")
# Without --os-variant, a VM is designed for libosinfo's generic recent Linux: virtio disks and
# NICs on q35, what virtfleet always assumed. (virt-install 4 refuses to guess instead.)
DEFAULT_OS_VARIANT = "linux2022"
DISK_BUSES = ("virtio", "sata", "scsi", "ide")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DiskSpec(_Spec):
    """A new volume (`size`), or an existing image to use as is (`path`, --import)."""

    size_bytes: int | None = None
    path: str | None = None
    format: Literal["qcow2", "raw"] = "qcow2"
    pool: str | None = None
    bus: Literal["virtio", "sata", "scsi", "ide"] | None = None  # None: the OS variant's


class NicSpec(_Spec):
    """One NIC: on a host bridge (Linux or Open vSwitch), on a libvirt network (optionally a
    portgroup of it), or an SR-IOV VF passed through by PCI address (`hostdev`)."""

    kind: Literal["bridge", "network", "hostdev"]
    source: str  # bridge name, network name, or PCI address 0000:03:10.1
    vlans: tuple[int, ...] = ()  # one tag: access port; several: trunk
    trunk: bool = False
    portgroup: str | None = None
    virtualport: Literal["openvswitch"] | None = None
    model: Literal["virtio", "e1000", "e1000e", "rtl8139"] | None = None  # None: the OS's
    mac: str | None = None

    @property
    def vlan(self) -> int | None:
        """The access VLAN, if the NIC has exactly one untrunked tag."""
        return self.vlans[0] if len(self.vlans) == 1 and not self.trunk else None


class GraphicsSpec(_Spec):
    type: Literal["spice", "vnc", "none"] = "none"
    listen: str = "127.0.0.1"
    password: SecretStr | None = None  # never printed: SecretStr hides it from repr and str


class BootSpec(_Spec):
    """How the first boot finds an OS: an ISO, the network, a kernel, or an existing disk."""

    method: Literal["cdrom", "pxe", "kernel", "import"]
    cdrom: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None


class VMSpec(_Spec):
    name: str
    memory_mib: int
    vcpus: int
    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    graphics: GraphicsSpec = GraphicsSpec()
    boot: BootSpec
    serial_console: bool = True
    autostart: bool = False
    os_variant: str = DEFAULT_OS_VARIANT  # a libosinfo short id, or 'generic'

    def disk_field(self, i: int) -> str:
        """The request field that asked for `disks[i]` of this spec: the imported image
        (`import_disk`) comes first, before the request's own `disks`."""
        if self.boot.method == "import":
            return "import_disk" if i == 0 else f"disks[{i - 1}]"
        return f"disks[{i}]"


def _options(field: str, text: str, *, positional: str | None = None) -> dict[str, str]:
    """'a=1,b=2' (and, if `positional` is set, a leading bare word) -> {'a': '1', 'b': '2'}."""
    out: dict[str, str] = {}
    for i, part in enumerate(p.strip() for p in text.split(",")):
        if not part:
            raise InvalidInput(field, f"empty item in {text!r}")
        key, eq, value = part.partition("=")
        if not eq:
            if i == 0 and positional is not None:
                out[positional] = key
                continue
            raise InvalidInput(field, f"{part!r} is not key=value")
        if key in out:
            raise InvalidInput(field, f"{key!r} given twice")
        out[key] = value
    return out


def _no_extra(field: str, opts: dict[str, str], allowed: set[str]) -> None:
    unknown = sorted(set(opts) - allowed)
    if unknown:
        raise InvalidInput(field, f"unknown key {unknown[0]!r} (known: "
                           f"{', '.join(sorted(allowed))})")


def check_path(field: str, path: str) -> str:
    """An absolute path with no '..' and nothing a shell or XML would read specially."""
    p = PurePosixPath(path)
    if not p.is_absolute() or ".." in p.parts:
        raise InvalidInput(field, f"{path!r} must be an absolute path without '..'")
    if any(ch in path for ch in "\n\r\t\x00<>&'\"`$;|"):
        raise InvalidInput(field, f"{path!r} contains characters not allowed in a path")
    return str(p)


def parse_disk(text: str, field: str = "disks[0]") -> DiskSpec:
    """One `disks` item; `field` is where it stands in the request (its keys are named
    `disks[1].size`, `disks[1].path`, `disks[1].pool`)."""
    opts = _options(field, text)
    _no_extra(field, opts, {"size", "path", "format", "pool", "bus"})
    if ("size" in opts) == ("path" in opts):
        raise InvalidInput(field, "give exactly one of size=SIZE (a new volume) or path=PATH")
    fmt = opts.get("format", "qcow2")
    if fmt not in ("qcow2", "raw"):
        raise InvalidInput(field, f"format {fmt!r} is not qcow2 or raw")
    bus = opts.get("bus")
    if bus is not None and bus not in DISK_BUSES:
        raise InvalidInput(field, f"bus {bus!r} is not virtio, sata, scsi or ide")
    return DiskSpec(
        size_bytes=parse_bytes(f"{field}.size", opts["size"], default_unit="g")
        if "size" in opts else None,
        path=check_path(f"{field}.path", opts["path"]) if "path" in opts else None,
        format=fmt,  # type: ignore[arg-type]
        pool=check_name(f"{field}.pool", opts["pool"]) if "pool" in opts else None,
        bus=bus,  # type: ignore[arg-type]
    )


_PCI_RE = re.compile(r"^(?:([0-9a-f]{4}):)?([0-9a-f]{2}):([01][0-9a-f])\.([0-7])$")
_MODELS = ("virtio", "e1000", "e1000e", "rtl8139")


def _vlans(field: str, text: str) -> tuple[int, ...]:
    """'42' or '10:20:30' -> VLAN ids, each 1-4094."""
    out = []
    for part in text.split(":"):
        if not part.isdigit() or not 1 <= int(part) <= 4094:
            raise InvalidInput(field, f"vlan {part!r} is not an id from 1 to 4094")
        out.append(int(part))
    if len(set(out)) != len(out):
        raise InvalidInput(field, f"vlan {text!r} repeats an id")
    return tuple(out)


def parse_network(text: str, field: str = "networks[0]") -> NicSpec:
    """virt-install's --network words: bridge=BR | network=NET[,portgroup=PG] |
    hostdev=PCI, then vlan=ID[:ID...], trunk=yes, virtualport=openvswitch, model=, mac=.
    `field` is where the NIC stands in the request."""
    # virt-install also takes bridge:br0, so commands copied from it keep working.
    text = re.sub(r"^(bridge|network|hostdev):", r"\1=", text)
    opts = _options(field, text)
    _no_extra(field, opts, {"bridge", "network", "hostdev", "vlan", "trunk", "portgroup",
                             "virtualport", "model", "mac"})
    kinds = [k for k in ("bridge", "network", "hostdev") if k in opts]
    if len(kinds) != 1:
        raise InvalidInput(field, "give exactly one of bridge=BRIDGE, network=NETWORK or "
                           "hostdev=PCI-ADDRESS")
    kind = kinds[0]
    source = opts[kind]
    if kind == "bridge" and not _BRIDGE_RE.match(source):
        raise InvalidInput(field, f"bridge {source!r} is not an interface name "
                           "(letters, digits, '.', '_', '-'; at most 15 characters)")
    if kind == "network":
        check_name(f"{field}.network", source)
    if kind == "hostdev":
        m = _PCI_RE.match(source.lower())
        if m is None:
            raise InvalidInput(field, f"hostdev {source!r} is not a PCI address like "
                               "0000:03:10.1")
        source = f"{m.group(1) or '0000'}:{m.group(2)}:{m.group(3)}.{m.group(4)}"
    vlans = _vlans(field, opts["vlan"]) if "vlan" in opts else ()
    trunk = opts.get("trunk", "no")
    if trunk not in ("yes", "no"):
        raise InvalidInput(field, f"trunk {trunk!r} is not yes or no")
    if trunk == "yes" and not vlans:
        raise InvalidInput(field, "trunk=yes needs vlan=ID:ID:... (the VLANs it carries)")
    if len(vlans) > 1 and trunk != "yes":
        raise InvalidInput(field, "several VLANs make a trunk: add trunk=yes")
    if kind == "hostdev" and trunk == "yes":
        raise InvalidInput(field, "an SR-IOV VF takes one VLAN tag, not a trunk")
    portgroup = opts.get("portgroup")
    if portgroup is not None:
        if kind != "network":
            raise InvalidInput(field, "portgroup goes with network=NETWORK")
        if not _BRIDGE_RE.match(portgroup):
            raise InvalidInput(field, f"portgroup {portgroup!r} is not a valid name "
                               "(letters, digits, '.', '_', '-'; at most 15 characters)")
    virtualport = opts.get("virtualport")
    if virtualport is not None:
        if virtualport != "openvswitch":
            raise InvalidInput(field, f"virtualport {virtualport!r} is not openvswitch")
        if kind != "bridge":
            raise InvalidInput(field, "virtualport=openvswitch goes with bridge=BRIDGE "
                               "(a network brings its own)")
    model = opts.get("model")
    if model is not None and model not in _MODELS:
        raise InvalidInput(field, f"model {model!r} is not {', '.join(_MODELS[:-1])} or "
                           f"{_MODELS[-1]}")
    if kind == "hostdev" and "model" in opts:
        raise InvalidInput(field, "a passed-through VF has no emulated model")
    mac = opts.get("mac")
    if mac is not None:
        mac = mac.lower()
        if not _MAC_RE.match(mac) or int(mac[:2], 16) & 1:
            raise InvalidInput(field, f"mac {opts['mac']!r} is not a unicast MAC address")
    return NicSpec(kind=kind, source=source, vlans=vlans,  # type: ignore[arg-type]
                   trunk=trunk == "yes", portgroup=portgroup,
                   virtualport=virtualport, model=model, mac=mac)  # type: ignore[arg-type]


def parse_graphics(text: str, field: str = "graphics") -> GraphicsSpec:
    opts = _options(field, text, positional="type")
    if "password" in opts:  # refused whatever its value: it is already in `ps` by now
        raise InvalidInput(field, "password= would show the password to every user of this "
                           "machine in ps; give it with --graphics-password-file FILE (or - for "
                           f"stdin) or in {GRAPHICS_PASSWORD_ENV}")
    _no_extra(field, opts, {"type", "listen"})
    kind = opts.get("type", "spice")
    if kind not in ("spice", "vnc", "none"):
        raise InvalidInput(field, f"{kind!r} is not spice, vnc or none")
    listen = opts.get("listen", "127.0.0.1")
    try:
        ipaddress.ip_address(listen)
    except ValueError:
        raise InvalidInput(field, f"listen {listen!r} is not an IP address") from None
    return GraphicsSpec(type=kind, listen=listen)  # type: ignore[arg-type]


def check_graphics_password(field: str, password: str, kind: str) -> SecretStr:
    """A graphics password as the protocol takes it; the rule named, never the value."""
    if kind == "none":
        raise InvalidInput(field, "a password needs spice or vnc graphics (`graphics`)")
    if not password:
        raise InvalidInput(field, "the password is empty")
    limit = 8 if kind == "vnc" else 64  # VNC authentication uses only the first 8 bytes
    if len(password.encode()) > limit:
        raise InvalidInput(field, f"a {kind} password is at most {limit} bytes"
                           + (" (VNC ignores the rest)" if kind == "vnc" else ""))
    if any(ord(ch) < 0x20 or ord(ch) == 0x7f for ch in password):
        raise InvalidInput(field, "the password contains control characters")
    return SecretStr(password)


@dataclass(frozen=True)
class SpecForm:
    """A VM request whose every value was checked on its own (`spec_form`); `together()`
    checks how they combine, `vm_spec` then asks libosinfo."""

    name: str
    memory_mib: int
    vcpus: int
    disks: tuple[DiskSpec, ...]
    nics: tuple[NicSpec, ...]
    cdrom: str | None
    pxe: bool
    kernel: str | None
    initrd: str | None
    cmdline: str | None
    import_disk: str | None
    os_variant: str
    graphics: GraphicsSpec
    graphics_password: str | None = field(repr=False)
    password_from_env: bool
    serial_console: bool
    autostart: bool

    def together(self) -> VMSpec:
        """Stage 2 (see spec_form): one way to boot, initrd and cmdline with a kernel, a disk
        unless booted from the network, a password only with a display."""
        methods = [m for m, given in (("cdrom", self.cdrom), ("pxe", self.pxe),
                                      ("kernel", self.kernel), ("import", self.import_disk))
                   if given]
        if len(methods) != 1:
            raise InvalidInput("cdrom/pxe/kernel/import_disk",
                               "give exactly one way to boot the new VM")
        if (self.initrd or self.cmdline) and not self.kernel:
            raise InvalidInput("initrd/cmdline", "only go with `kernel`")
        disks = list(self.disks)
        if self.import_disk:
            disks.insert(0, DiskSpec(path=self.import_disk,
                                     format="qcow2" if self.import_disk.endswith(".qcow2")
                                     else "raw"))
        if not disks and methods[0] != "pxe":
            raise InvalidInput("disks", "a VM that does not boot from the network needs a disk")
        gfx = self.graphics
        if self.graphics_password is not None and not (self.password_from_env
                                                       and gfx.type == "none"):
            gfx = gfx.model_copy(update={"password": check_graphics_password(
                "graphics_password", self.graphics_password, gfx.type)})
        boot = BootSpec(method=methods[0],  # type: ignore[arg-type]
                        cdrom=self.cdrom, kernel=self.kernel, initrd=self.initrd,
                        cmdline=self.cmdline)
        return VMSpec(name=self.name, memory_mib=self.memory_mib, vcpus=self.vcpus,
                      disks=tuple(disks), nics=self.nics, graphics=gfx, boot=boot,
                      serial_console=self.serial_console, autostart=self.autostart,
                      os_variant=self.os_variant)


def spec_form(*, name: str, memory: str, vcpus: int, disks: list[str], networks: list[str],
              graphics: str | None = None, cdrom: str | None = None, pxe: bool = False,
              kernel: str | None = None, initrd: str | None = None, cmdline: str | None = None,
              import_disk: str | None = None, serial_console: bool = True,
              autostart: bool = False, os_variant: str | None = None,
              graphics_password: str | None = None,
              password_from_env: bool = False) -> SpecForm:
    """Stage 1 of checking a VM request: each value on its own, in the order `vm create`
    takes them (name, memory, vcpus, disks, networks, cdrom, kernel, initrd, cmdline, import,
    os variant's form, graphics). The stages, cheap and certain first (docs/vms.md):

    1. each value on its own (here, then the request's own: virt type, groups, place);
    2. how the values go together (`SpecForm.together`, then the request's place and HA);
    3. libosinfo: the OS variant is one it knows, the buses suit it (`check_osinfo`; loading
       its database costs a quarter of a second);
    4. the store, 5. the hypervisors in scope, 6. the scheduler (provision/create.py).
    """
    check_name("name", name)
    memory_mib = parse_mib("memory", memory)
    if memory_mib > MAX_MEMORY_MIB:
        raise InvalidInput("memory", f"{memory!r} is more than {MAX_MEMORY_MIB // 2**20} TiB")
    if not 1 <= vcpus <= MAX_VCPUS:
        raise InvalidInput("vcpus", f"must be from 1 to {MAX_VCPUS}")
    disk_specs = tuple(parse_disk(d, f"disks[{i}]") for i, d in enumerate(disks))
    nics = tuple(parse_network(n, f"networks[{i}]") for i, n in enumerate(networks))
    paths = {f: check_path(f, v) if v else None
             for f, v in (("cdrom", cdrom), ("kernel", kernel), ("initrd", initrd))}
    if cmdline is not None and any(ch in cmdline for ch in "\n\r\x00"):
        raise InvalidInput("cmdline", "must be one line")
    imported = check_path("import_disk", import_disk) if import_disk else None
    variant = os_variant if os_variant is not None else DEFAULT_OS_VARIANT
    if not _OS_VARIANT_RE.match(variant):
        raise InvalidInput(osinfo.FIELD, f"{variant!r} is not an osinfo short id such as "
                           "rhel9.0, win2k19 or generic")
    gfx = parse_graphics(graphics) if graphics else GraphicsSpec()
    return SpecForm(name=name, memory_mib=memory_mib, vcpus=vcpus, disks=disk_specs, nics=nics,
                    cdrom=paths["cdrom"], pxe=pxe, kernel=paths["kernel"],
                    initrd=paths["initrd"], cmdline=cmdline, import_disk=imported,
                    os_variant=variant, graphics=gfx, graphics_password=graphics_password,
                    password_from_env=password_from_env, serial_console=serial_console,
                    autostart=autostart)


def check_osinfo(spec: VMSpec) -> VMSpec:
    """Stage 3: the OS variant is one libosinfo knows, and the disks' buses suit it."""
    check_buses(osinfo.lookup(spec.os_variant), [(spec.disk_field(i), d.bus)
                                                 for i, d in enumerate(spec.disks)])
    return spec


def vm_spec(*, name: str, memory: str, vcpus: int, disks: list[str], networks: list[str],
            graphics: str | None = None, cdrom: str | None = None, pxe: bool = False,
            kernel: str | None = None, initrd: str | None = None, cmdline: str | None = None,
            import_disk: str | None = None, serial_console: bool = True,
            autostart: bool = False, os_variant: str | None = None,
            graphics_password: str | None = None, password_from_env: bool = False) -> VMSpec:
    """A whole VM request, every field checked in stages (`spec_form`); an error names the
    field by these parameters' names (`disks[1].size`).

    `graphics_password` comes from a file, stdin or the environment, never an option value.
    One that came from the environment (`password_from_env`) is for VMs with a display: an
    exported password does not stop a VM without one."""
    return check_osinfo(spec_form(
        name=name, memory=memory, vcpus=vcpus, disks=disks, networks=networks,
        graphics=graphics, cdrom=cdrom, pxe=pxe, kernel=kernel, initrd=initrd,
        cmdline=cmdline, import_disk=import_disk, serial_console=serial_console,
        autostart=autostart, os_variant=os_variant, graphics_password=graphics_password,
        password_from_env=password_from_env).together())
