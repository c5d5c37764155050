"""Tiny real guests: Debian's cloud kernel plus a busybox initramfs, booted by QEMU under TCG.

The guest has no disk and no NIC. Its /init mounts proc, sys and dev, loads the ACPI button
driver so `virsh shutdown` powers it off, prints MARKER on the serial console and waits. That
is enough to prove the whole path works: libvirt defined it, QEMU ran it, a kernel booted.

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

# PID 1 of the guest. It must never exit (the kernel would panic), hence the final loop.
INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in /lib/modules/*.ko; do [ -e "$m" ] && insmod "$m"; done
[ -e /lib/modules/button.ko ] && acpid -c /etc/acpi -l /dev/null
# A hostname handed over in cloud-init's NoCloud form in the SMBIOS serial (vm clone does).
s=$(cat /sys/class/dmi/id/product_serial 2>/dev/null)
case "$s" in *h=*) h=${s##*h=}; h=${h%%;*}; hostname "$h"; echo "@HOSTNAME@ $h";; esac
echo "@MARKER@"
while :; do sleep 3600; done
""".replace("@MARKER@", MARKER).replace("@HOSTNAME@", "virtfleet-tiny-guest hostname")
HOSTNAME_LINE = "virtfleet-tiny-guest hostname "

POWER_BUTTON = """#!/bin/sh
poweroff -f
"""

# Kernel modules the power button needs; built as modules in Debian's cloud kernel.
MODULES = ("kernel/drivers/input/evdev.ko", "kernel/drivers/acpi/button.ko")


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
        stamp = hashlib.sha256(INIT.encode()).hexdigest()[:16]  # a new /init means a rebuild
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
    """evdev and button from the kernel package, decompressed if packed (.ko.xz)."""
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
    # Without both, the guest still boots; it just ignores `virsh shutdown` (destroy works).
    return found if len(found) == len(MODULES) else {}


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


def build_initramfs(tree: Path, modules: dict[str, bytes]) -> Path:
    """A gzip'd newc cpio archive of busybox, /init and the power-button handler."""
    busybox = shutil.which("busybox")
    if busybox is None:
        raise LabError("guest image: busybox is not installed (apt-get install busybox-static)")
    if not _is_static(Path(busybox)):
        raise LabError(f"guest image: {busybox} is not static (apt-get install busybox-static)")
    for sub in ("bin", "proc", "sys", "dev", "lib/modules", "etc/acpi/PWRF"):
        (tree / sub).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(busybox, tree / "bin/busybox")
    (tree / "bin/busybox").chmod(0o755)
    (tree / "init").write_text(INIT)
    (tree / "init").chmod(0o755)
    handler = tree / "etc/acpi/PWRF/00000080"  # busybox acpid's name for the power button
    handler.write_text(POWER_BUTTON)
    handler.chmod(0o755)
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
