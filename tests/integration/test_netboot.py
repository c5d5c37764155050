"""End to end: a QEMU machine network-boots through iPXE from `boot serve` on loopback,
installs (a marker on its disk), calls back, and ends up an enrolled hypervisor.

No bridges: QEMU user networking answers DHCP with the boot file URL and maps 10.0.2.2 to this
machine's loopback, where `boot serve` listens. The "installer" is Debian's cloud kernel with a
busybox initramfs whose /init does what an installer does with a kickstart: it reads inst.ks=
from /proc/cmdline, fetches the kickstart with its token, writes to the disk (/dev/vda), then
calls back with the fields the kickstart's %post would send. TCG, since KVM hangs here.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.integration.boot_lab import process, wait_for
from tests.integration.conftest import require_lab
from tests.unit.boot_fleet import boot_fleet, mac_of, write_fleet
from tests.unit.cli import run
from tests.unit.nodes import node_uri
from virtfleet.inventory.store import Store
from virtfleet.lab.guest import _is_static, cache_dir, kernel_package

pytestmark = pytest.mark.integration

MARKER = "VIRTFLEET-NETBOOT-INSTALLED"
# Load order matters: there is no modules.dep in the package (depmod makes it on install).
MODULES = ("drivers/virtio/virtio_ring.ko", "drivers/virtio/virtio.ko",
           "drivers/virtio/virtio_pci_modern_dev.ko", "drivers/virtio/virtio_pci_legacy_dev.ko",
           "drivers/virtio/virtio_pci.ko", "net/core/failover.ko",
           "drivers/net/net_failover.ko", "drivers/net/virtio_net.ko",
           "drivers/block/virtio_blk.ko")

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
fail() { echo "installer: FAILED: $*"; while :; do sleep 3600; done; }
for m in @MODULES@; do insmod /lib/modules/$m.ko || fail "insmod $m"; done
ks=$(sed -n 's/.*inst\.ks=\([^ ]*\).*/\1/p' /proc/cmdline)
[ -n "$ks" ] || fail "no inst.ks= on the kernel command line"
ifconfig lo up
ifconfig eth0 up
udhcpc -i eth0 -s /bin/dhcp-event -q -n -t 20 || fail "no DHCP lease"
wget -q -O /tmp/ks.cfg "$ks" || fail "cannot fetch the kickstart"
echo "installer: kickstart fetched"
# Do what the kickstart's %post does at the end: call home with its fields and URL.
cb=$(grep '^curl ' /tmp/ks.cfg)
url=${cb##* }
data=$(echo "$cb" | tr ' ' '\n' | grep -E '^(host|mac|status|token)=' | tr '\n' '&')
host=$(echo "$cb" | tr ' ' '\n' | sed -n 's/^host=//p')
[ -b /dev/vda ] || fail "no /dev/vda"
printf '%s %s\n' "@MARKER@" "$host" > /dev/vda || fail "cannot write /dev/vda"
sync
wget -q -O - --post-data "${data%&}" "$url" || fail "callback refused"
echo "installer: done"
while :; do sleep 3600; done
"""

DHCP_EVENT = """#!/bin/sh
case "$1" in bound|renew) ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}";; esac
"""


def _tools() -> None:
    for tool in ("qemu-system-x86_64", "qemu-img", "cpio", "apt-get", "dpkg-deb", "busybox"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (scripts/install-deps.sh)", pytrace=False)
    if not Path("/usr/lib/ipxe/qemu/pxe-virtio.rom").exists():
        pytest.fail("ipxe-qemu is not installed (pxe-virtio.rom)", pytrace=False)


def _sh(argv: list[str], cwd: Path | None = None, stdin: str | None = None) -> None:
    subprocess.run(argv, cwd=cwd, input=stdin, text=True, check=True, capture_output=True,
                   timeout=600)


def installer_images() -> tuple[Path, Path]:
    """(kernel, initrd) of the test installer, built once and cached beside the lab's guest."""
    package = kernel_package()
    cache = cache_dir() / "netboot" / package
    kernel, initrd = cache / "vmlinuz", cache / "installer.img"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if kernel.is_file() and initrd.is_file():
            return kernel, initrd
        with tempfile.TemporaryDirectory(prefix="vf-netboot-") as tmp:
            work = Path(tmp)
            deb = work / "deb"
            deb.mkdir()
            with contextlib.suppress(LookupError):
                shutil.chown(deb, user="_apt")  # apt downloads as _apt, where it exists
            _sh(["apt-get", "download", "-q", package], cwd=deb)
            root = work / "root"
            _sh(["dpkg-deb", "-x", str(next(deb.glob("*.deb"))), str(root)])
            [moddir] = list((root / "lib/modules").glob("*"))
            tree = work / "tree"
            for sub in ("bin", "proc", "sys", "dev", "tmp", "lib/modules"):
                (tree / sub).mkdir(parents=True)
            busybox = Path(shutil.which("busybox") or "")
            assert _is_static(busybox), "busybox is not static (apt-get install busybox-static)"
            shutil.copyfile(busybox, tree / "bin/busybox")
            names = []
            for rel in MODULES:
                shutil.copyfile(moddir / "kernel" / rel, tree / "lib/modules" / Path(rel).name)
                names.append(Path(rel).stem)
            (tree / "init").write_text(INIT.replace("@MODULES@", " ".join(names))
                                       .replace("@MARKER@", MARKER))
            (tree / "bin/dhcp-event").write_text(DHCP_EVENT)
            for exe in ("init", "bin/busybox", "bin/dhcp-event"):
                (tree / exe).chmod(0o755)
            members = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
            archive = work / "initrd.cpio"
            _sh(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0", "-O", str(archive)],
                cwd=tree, stdin="\n".join(members) + "\n")
            (work / "initrd.img").write_bytes(gzip.compress(archive.read_bytes(), 6))
            [vmlinuz] = list((root / "boot").glob("vmlinuz-*"))
            for src, dest in ((vmlinuz, kernel), (work / "initrd.img", initrd)):
                shutil.copyfile(src, dest.with_suffix(".tmp"))
                os.replace(dest.with_suffix(".tmp"), dest)
    return kernel, initrd


def test_qemu_network_installs_and_is_enrolled(tmp_path: Path) -> None:
    require_lab()
    _tools()
    kernel, initrd = installer_images()
    files = tmp_path / "files"
    files.mkdir()
    shutil.copyfile(kernel, files / "vmlinuz")
    shutil.copyfile(initrd, files / "installer.img")
    # The installed hypervisor's URI: a libvirt test-driver node, so `host check` has a real
    # libvirt to ask without a daemon inside the tiny guest.
    uri = node_uri(tmp_path, "empty.xml", "hv1.xml")
    fleet = write_fleet(tmp_path / "fleet.yaml", boot_fleet(
        [uri], kernel="vmlinuz", initrd="installer.img",
        kernel_args=("console=ttyS0", "panic=-1")))
    db = tmp_path / "store.db"
    serve_log, console = tmp_path / "serve.log", tmp_path / "console.log"
    disk = tmp_path / "disk.qcow2"
    _sh(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"])

    with process([sys.executable, "-m", "virtfleet.cli.main", "boot", "serve", "--fleet",
                  str(fleet), "--files", str(files), "--port", "0", "--token-ttl", "15m"],
                 serve_log, env={"VIRTFLEET_DB": str(db)}) as serve:
        def port() -> str | None:
            m = re.search(r"on http://127\.0\.0\.1:(\d+)/", serve_log.read_text())
            return m.group(1) if m else None
        wait_for("boot serve listening", lambda: port() is not None, [serve], [serve_log],
                 every=0.5)
        qemu = ["qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-m", "256",
                "-display", "none", "-monitor", "none", "-no-reboot",
                "-serial", f"file:{console}", "-boot", "n",
                "-netdev", f"user,id=n0,bootfile=http://10.0.2.2:{port()}/boot.ipxe",
                "-device", f"virtio-net-pci,netdev=n0,mac={mac_of(1)}",
                "-drive", f"file={disk},if=virtio,format=qcow2"]
        with process(qemu, tmp_path / "qemu.log") as vm:
            def state() -> str:
                # Read the store here: a CLI per poll would take CPU from the TCG guest.
                with Store(f"sqlite:///{db}") as store:
                    rec = store.install("hv1")
                return rec.state if rec is not None else "-"
            def finished() -> bool:
                # The installer says when it gives up: no need to wait out the deadline.
                if console.exists() and "installer: FAILED" in console.read_text(errors="replace"):
                    return True
                return state() in ("enrolled", "failed")
            wait_for("the install", finished, [vm], [serve_log, console, tmp_path / "qemu.log"],
                     timeout=300, every=0.5)
            assert "installer: FAILED" not in console.read_text(errors="replace"), \
                console.read_text(errors="replace")[-2000:]
        assert vm.poll() is not None  # ended by process(): no QEMU left behind

    [row] = run(db, "boot", "status", "--json").json()
    assert (row["host"], row["state"], row["error"]) == ("hv1", "enrolled", ""), row
    assert row["check_ok"] is True, row
    for key in ("booting_at", "installing_at", "installed_at", "enrolled_at"):
        assert row[key] is not None, key
    hosts = run(db, "host", "list", "--json").json()
    assert [(h["name"], h["uri"], h["site"], h["pod"]) for h in hosts] == \
           [("hv1", uri, "lab", "pod1")]
    served = serve_log.read_text()
    for path in (f"GET /hosts/{mac_of(1).replace(':', '-')}.ipxe 200", "GET /ks/hv1.ks 200",
                 "GET /files/vmlinuz 200", "GET /files/installer.img 200", "POST /callback 200"):
        assert path in served, path
    assert "token=" not in served  # the access log never shows a token

    raw = tmp_path / "disk.raw"
    _sh(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(disk), str(raw)])
    with raw.open("rb") as f:
        head = f.read(512)
    assert head.startswith(f"{MARKER} hv1\n".encode()), head[:80]
