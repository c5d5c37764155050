"""Tiny real guests: Debian's cloud kernel plus a busybox initramfs, booted by QEMU under TCG.

The guest needs no disk and no NIC. Its /init mounts proc, sys and dev, loads the ACPI button
driver so `virsh shutdown` powers it off, prints MARKER on the serial console and leaves a shell
there. That is enough to prove the whole path works: libvirt defined it, QEMU ran it, a kernel
booted. Given more, it does more, as a cloud image would at first boot:

- a hostname in the SMBIOS serial (cloud-init's NoCloud `ds=nocloud;h=NAME`, as `vm clone`
  sets it) becomes its hostname;
- a virtio disk holding the tiny root filesystem (`root_disk()`) is mounted, and a sealed one
  (empty /etc/machine-id, as virt-sysprep leaves it) gets a machine-id of its own;
- each virtio NIC asks for a DHCP lease, sending the hostname, so the network's dnsmasq shows
  which guest holds which address.

Images are built once and cached in /var/cache/virtfleet/guest (outside the daemons' private
directories, so every lab hypervisor can read them).
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import lzma
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from virtfleet.errors import LabError
from virtfleet.lab.run import run
from virtfleet.lab.xmlbuild import el, to_bytes
from virtfleet.validate import check_name

CACHE_ENV = "VIRTFLEET_GUEST_CACHE"
DEFAULT_CACHE = Path("/var/cache/virtfleet/guest")
MARKER = "virtfleet-tiny-guest up"
KERNEL_META = "linux-image-cloud-amd64"
MEMORY_MIB = 96

# Kernel modules in load order (the cloud kernel package has them, without a modules.dep here):
# the power button, then virtio's PCI transport, the disk and the NIC. A module the package
# lacks is skipped; the guest then boots without what it gives.
MODULES = ("kernel/drivers/input/evdev.ko", "kernel/drivers/acpi/button.ko",
           "kernel/drivers/virtio/virtio_ring.ko", "kernel/drivers/virtio/virtio.ko",
           "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
           "kernel/drivers/virtio/virtio_pci_legacy_dev.ko", "kernel/drivers/virtio/virtio_pci.ko",
           "kernel/drivers/block/virtio_blk.ko", "kernel/net/core/failover.ko",
           "kernel/drivers/net/net_failover.ko", "kernel/drivers/net/virtio_net.ko")

# PID 1 of the guest. It must never exit (the kernel would panic), hence the final loop.
INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in @MODULES@; do [ -e /lib/modules/$m ] && insmod /lib/modules/$m; done
[ -e /lib/modules/button.ko ] && acpid -c /etc/acpi -l /dev/null
# A hostname handed over in cloud-init's NoCloud form in the SMBIOS serial (vm clone does).
s=$(cat /sys/class/dmi/id/product_serial 2>/dev/null)
case "$s" in *h=*) h=${s##*h=}; h=${h%%;*}; hostname "$h"; echo "@HOSTNAME@ $h";; esac
# A root disk: a sealed one (empty machine-id) gets its own, as systemd does at first boot.
if [ -e /sys/block/vda ]; then
  for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 0.2; done
  if mount -t ext4 /dev/vda /mnt 2>/dev/null; then
    id=/mnt/etc/machine-id; new=""
    if [ -f $id ] && [ ! -s $id ]; then
      tr -d - </proc/sys/kernel/random/uuid >$id; new=" (new)"
    fi
    [ -s $id ] && echo "@MACHINE_ID@ $(cat $id)$new"
    umount /mnt
  fi
fi
echo "@MARKER@"
# A lease on each NIC, in the background: a network without DHCP must not hold up the boot.
for i in /sys/class/net/eth*; do
  [ -e "$i" ] || continue
  i=${i##*/}; ip link set "$i" up
  udhcpc -i "$i" -n -q -t 30 -T 2 -s /etc/udhcpc.sh ${h:+-x hostname:$h} >/dev/null 2>&1 &
done
# A shell on the serial console, for `virtfleet vm console` (Ctrl+] leaves).
export PS1='\\h # '
while :; do setsid cttyhack sh; sleep 1; done
""".replace("@MARKER@", MARKER).replace("@HOSTNAME@", "virtfleet-tiny-guest hostname") \
    .replace("@MACHINE_ID@", "virtfleet-tiny-guest machine-id") \
    .replace("@MODULES@", " ".join(Path(m).name for m in MODULES))
HOSTNAME_LINE = "virtfleet-tiny-guest hostname "
MACHINE_ID_LINE = "virtfleet-tiny-guest machine-id "
DHCP_LINE = "virtfleet-tiny-guest dhcp "

# udhcpc's event script: configure the address it was given and say so on the console.
UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in bound|renew)
  ip addr flush dev "$interface"
  ip addr add "$ip/$mask" dev "$interface"
  echo "@DHCP@$interface $ip" >/dev/console;;
esac
""".replace("@DHCP@", DHCP_LINE)

POWER_BUTTON = """#!/bin/sh
poweroff -f
"""


# The tiny root disk (`root_disk()`): enough of a Linux root for libguestfs to inspect it, so
# virt-sysprep can seal it (an /etc with fstab and os-release, a /bin with a shell), plus what
# an installed system has and a template must not keep (a machine-id, a shell history, a log).
ROOT_DISK_MIB = 32
ROOT_FILES = {
    "etc/os-release": 'NAME="virtfleet tiny guest"\nID=virtfleet-tiny\nVERSION_ID="1"\n'
                      'PRETTY_NAME="virtfleet tiny guest (busybox)"\n',
    "etc/fstab": "/dev/vda / ext4 defaults 0 1\n",
    "etc/hostname": "tiny\n",
    "etc/hosts": "127.0.0.1 localhost\n",
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "etc/group": "root:x:0:\n",
    "root/.bash_history": "cat /etc/machine-id\n",
    "var/log/messages": "tiny: installed\n",
}
ROOT_DIRS = ("bin", "etc", "dev", "proc", "sys", "tmp", "mnt", "root", "var/log")


@dataclass(frozen=True)
class GuestImages:
    kernel: Path
    initrd: Path
    version: str  # the kernel package it came from


def cache_dir() -> Path:
    raw = os.environ.get(CACHE_ENV, "")
    return Path(raw) if raw else DEFAULT_CACHE


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One builder at a time (the demo and a test run may both want the images)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_images(progress: Callable[[str], None] = lambda _m: None) -> GuestImages:
    """The cached kernel and initramfs, built first if missing."""
    cache = cache_dir()
    kernel, initrd, version_file = cache / "vmlinuz", cache / "initrd.img", cache / "VERSION"
    with _locked(cache):
        stamp = _stamp(INIT, UDHCPC_SCRIPT, POWER_BUTTON, *MODULES)  # new contents: rebuild
        if kernel.is_file() and initrd.is_file() and version_file.is_file():
            package, _, built = version_file.read_text().strip().partition("\n")
            if built == stamp:
                return GuestImages(kernel, initrd, package)
        t0 = time.monotonic()
        package = kernel_package()
        progress(f"building the tiny guest from {package} (once; cached in {cache})")
        with tempfile.TemporaryDirectory(prefix="virtfleet-guest-") as tmp:
            work = Path(tmp)
            root = _fetch_kernel(package, work)
            vmlinuz = sorted((root / "boot").glob("vmlinuz-*"))
            if not vmlinuz:
                raise LabError(f"guest image: {package} has no /boot/vmlinuz-*")
            image = build_initramfs(work / "initramfs", _modules(root))
            shutil.copyfile(vmlinuz[0], work / "vmlinuz.new")
            for src, dest in ((work / "vmlinuz.new", kernel), (image, initrd)):
                staged = dest.with_suffix(".tmp")
                shutil.copyfile(src, staged)
                staged.chmod(0o644)
                os.replace(staged, dest)
        version_file.write_text(f"{package}\n{stamp}\n")
        progress(f"tiny guest images ready in {time.monotonic() - t0:.1f}s")
        return GuestImages(kernel, initrd, package)


def _stamp(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def root_disk(progress: Callable[[str], None] = lambda _m: None) -> Path:
    """The cached tiny root disk (qcow2, ext4 on the whole disk), built first if missing.

    mkfs.ext4 fills the filesystem from a directory (`-d`), so no mount, loop device or
    libguestfs appliance is needed: it takes a few milliseconds.
    """
    cache = cache_dir()
    out, stamp_file = cache / "root.qcow2", cache / "ROOT_VERSION"
    stamp = _stamp(str(ROOT_DISK_MIB), *ROOT_DIRS, *(f"{k}={v}" for k, v in ROOT_FILES.items()))
    with _locked(cache):
        if out.is_file() and stamp_file.is_file() and stamp_file.read_text().strip() == stamp:
            return out
        progress(f"building the tiny root disk (once; cached in {cache})")
        with tempfile.TemporaryDirectory(prefix="virtfleet-root-") as tmp:
            tree = Path(tmp) / "root"
            for sub in ROOT_DIRS:
                (tree / sub).mkdir(parents=True, exist_ok=True)
            for rel, text in ROOT_FILES.items():
                (tree / rel).write_text(text)
            # The identity virt-sysprep must empty, and each clone then makes its own.
            (tree / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
            shutil.copyfile(_static_busybox(), tree / "bin/busybox")
            (tree / "bin/busybox").chmod(0o755)
            (tree / "bin/sh").symlink_to("busybox")
            raw = Path(tmp) / "root.img"
            run([_sbin("mkfs.ext4"), "-q", "-F", "-L", "tiny-root", "-E", "root_owner=0:0",
                 "-d", str(tree), str(raw), f"{ROOT_DISK_MIB}M"], "root disk: mkfs.ext4")
            staged = out.with_suffix(".tmp")
            run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw),
                 str(staged)], "root disk: qemu-img convert")
            staged.chmod(0o644)
            os.replace(staged, out)
        stamp_file.write_text(stamp + "\n")
        return out


def _sbin(program: str) -> str:
    """A program from /sbin or /usr/sbin, which a non-login root PATH may lack."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    found = shutil.which(program, path=search)
    if found is None:
        raise LabError(f"root disk: {program} is not installed (apt-get install e2fsprogs)")
    return found


def kernel_package() -> str:
    """The versioned cloud kernel package the meta-package points at (apt-cache, no guessing)."""
    out = run(["apt-cache", "depends", KERNEL_META], "guest image: apt-cache depends",
              check=False).stdout
    for line in out.splitlines():
        key, _, value = line.strip().partition(":")
        value = value.strip()
        if key in ("Depends", "|Depends") and value.startswith("linux-image-") \
                and not value.startswith("<"):
            return value
    raise LabError(f"guest image: apt knows no {KERNEL_META}; run apt-get update (Debian 12)")


def _fetch_kernel(package: str, work: Path) -> Path:
    download = work / "deb"
    download.mkdir()
    if _has_user("_apt"):  # apt downloads as _apt; let it write here
        shutil.chown(download, user="_apt")
    run(["apt-get", "download", "-q", package], f"guest image: apt-get download {package}",
        cwd=download, timeout=600)
    debs = sorted(download.glob("*.deb"))
    if not debs:
        raise LabError(f"guest image: apt-get download {package} produced no .deb")
    root = work / "root"
    run(["dpkg-deb", "-x", str(debs[0]), str(root)], f"guest image: unpacking {debs[0].name}")
    return root


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _modules(root: Path) -> dict[str, bytes]:
    """MODULES from the kernel package, decompressed if packed (.ko.xz); missing ones left
    out (without evdev and button the guest ignores `virsh shutdown`; destroy still works)."""
    found: dict[str, bytes] = {}
    for moddir in sorted((root / "lib/modules").glob("*")) + sorted(
            (root / "usr/lib/modules").glob("*")):
        for rel in MODULES:
            name = Path(rel).name
            plain, packed = moddir / rel, moddir / (rel + ".xz")
            if plain.is_file():
                found[name] = plain.read_bytes()
            elif packed.is_file():
                found[name] = lzma.decompress(packed.read_bytes())
    return found


def _is_static(path: Path) -> bool:
    """An x86-64 ELF with no PT_INTERP program header needs no dynamic loader (or libc)."""
    data = path.read_bytes()
    if data[:5] != b"\x7fELF\x02":
        return False
    phoff = int.from_bytes(data[0x20:0x28], "little")
    phentsize = int.from_bytes(data[0x36:0x38], "little")
    phnum = int.from_bytes(data[0x38:0x3A], "little")
    for i in range(phnum):
        off = phoff + i * phentsize
        if int.from_bytes(data[off:off + 4], "little") == 3:  # PT_INTERP
            return False
    return True


def _static_busybox() -> Path:
    """busybox-static's binary: the guest has no libc to link against."""
    found = shutil.which("busybox")
    if found is None:
        raise LabError("guest image: busybox is not installed (apt-get install busybox-static)")
    if not _is_static(Path(found)):
        raise LabError(f"guest image: {found} is not static (apt-get install busybox-static)")
    return Path(found)


def build_initramfs(tree: Path, modules: dict[str, bytes]) -> Path:
    """A gzip'd newc cpio archive of busybox, /init, the power-button handler, udhcpc's event
    script and the kernel modules."""
    busybox = _static_busybox()
    for sub in ("bin", "proc", "sys", "dev", "mnt", "lib/modules", "etc/acpi/PWRF"):
        (tree / sub).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(busybox, tree / "bin/busybox")
    (tree / "bin/busybox").chmod(0o755)
    (tree / "init").write_text(INIT)
    (tree / "init").chmod(0o755)
    handler = tree / "etc/acpi/PWRF/00000080"  # busybox acpid's name for the power button
    handler.write_text(POWER_BUTTON)
    handler.chmod(0o755)
    (tree / "etc/udhcpc.sh").write_text(UDHCPC_SCRIPT)
    (tree / "etc/udhcpc.sh").chmod(0o755)
    for name, data in modules.items():
        (tree / "lib/modules" / name).write_bytes(data)
    members = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    archive = tree.parent / "initramfs.cpio"
    run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0", "-O", str(archive)],
        "guest image: cpio", cwd=tree, stdin="\n".join(members) + "\n")
    out = tree.parent / "initrd.img"
    with open(out, "wb") as f:
        f.write(gzip.compress(archive.read_bytes(), compresslevel=6))
    return out


# -- the domain ---------------------------------------------------------------------------------

def guest_name(host: str, n: int) -> str:
    return check_name("guest name", f"tiny-{host}-{n}")


def console_log_path(name: str) -> str:
    """Where the serial console is logged, as the guest's hypervisor sees it."""
    return f"/var/log/libvirt/qemu/{name}.console.log"


def domain_xml(name: str, images: GuestImages, memory_mib: int = MEMORY_MIB,
               virt_type: str = "qemu") -> str:
    """Domain XML for one tiny guest (TCG by default: KVM guests hang on this machine)."""
    check_name("guest name", name)
    dom = el(
        "domain",
        el("name", name),
        el("memory", memory_mib, unit="MiB"),
        el("currentMemory", memory_mib, unit="MiB"),
        el("vcpu", 1),
        el("os",
           el("type", "hvm", arch="x86_64", machine="pc"),
           el("kernel", str(images.kernel)),
           el("initrd", str(images.initrd)),
           el("cmdline", "console=ttyS0 quiet")),
        el("features", el("acpi")),
        el("on_poweroff", "destroy"),
        el("on_reboot", "restart"),
        el("on_crash", "destroy"),
        el("devices",
           el("serial",
              el("log", file=console_log_path(name), append="off"),
              el("target", port="0"),
              type="pty"),
           el("console", el("target", type="serial", port="0"), type="pty"),
           el("memballoon", model="none")),
        type=virt_type,
    )
    return to_bytes(dom).decode()


def seen_marker(log: Path) -> bool:
    try:
        return MARKER in log.read_text(errors="replace")
    except OSError:
        return False
