"""`vm create` on a real lab hypervisor: volume, domain, boot, and the guest's console output."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from tests.integration.conftest import LabFixture
from tests.unit.cli import run
from virtfleet.errors import VirtfleetError
from virtfleet.lab import guest
from virtfleet.virt import storage
from virtfleet.virt.host import Host
from virtfleet.xml.storage import Pool

pytestmark = pytest.mark.integration


@pytest.fixture
def pool_host(lab: LabFixture, tmp_path: Path) -> Iterator[Host]:
    """The lab's third hypervisor with a transient 'default' dir pool in tmp_path."""
    images = tmp_path / "images"
    images.mkdir()
    p = Pool()
    p.type, p.name, p.target_path = "dir", "default", str(images)
    with Host.open(lab.hosts[2].uri) as h:
        h.conn.storagePoolCreateXML(p.to_xml(), 0)
        try:
            yield h
        finally:
            with contextlib.suppress(libvirt.libvirtError):  # already gone
                h.conn.storagePoolLookupByName("default").destroy()


def test_create_boot_and_read_the_console(lab: LabFixture, pool_host: Host,
                                          tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    assert run(db, "apply", "-f", str(lab.fleet_file)).code == 0
    images = guest.ensure_images()
    name = f"itest-create-{os.getpid()}"
    hv = lab.hosts[2].name
    try:
        r = run(db, "vm", "create", name, "--host", hv, "--memory", "128M", "--vcpus", "1",
                "--disk", "size=64M", "--kernel", str(images.kernel), "--initrd",
                str(images.initrd), "--cmdline", "console=ttyS0", "--no-start",
                "--virt-type", "qemu", "--app", "web", "--json")
        assert r.code == 0, r.err
        made = r.json()
        assert made["host"] == hv and made["virt_type"] == "qemu" and not made["started"]
        [disk] = made["disks"]
        assert Path(disk).exists()  # a real qcow2 volume in the pool's directory

        r = run(db, "vm", "start", name, "--console", "--until", guest.MARKER,
                "--timeout", "120")
        assert r.code == 0, r.err
        assert guest.MARKER in r.out and "Linux version" in r.out  # from the first byte

        # A second create with the same name is refused, and leaves nothing behind.
        r = run(db, "vm", "create", name, "--host", hv, "--memory", "64M", "--vcpus", "1",
                "--disk", "size=8M", "--pxe", "--virt-type", "qemu")
        assert r.code == 4 and "was just created" in r.err  # its claim is still held
        assert sorted(p.name for p in Path(disk).parent.iterdir()) == [Path(disk).name]
    finally:
        with contextlib.suppress(VirtfleetError):
            pool_host.destroy_domain(name)
        with contextlib.suppress(VirtfleetError):
            pool_host.undefine_domain(name)
        with contextlib.suppress(VirtfleetError):
            storage.delete_volume(pool_host, str(tmp_path / "images" / f"{name}.qcow2"))


def test_graphics_password_reaches_qemu_but_never_dumpxml(lab: LabFixture, pool_host: Host,
                                                         tmp_path: Path) -> None:
    """On a real libvirtd: the password is in the definition (secure XML), not in what
    `vm dumpxml` prints, nor in any process's argv while the CLI runs."""
    db = tmp_path / "store.db"
    assert run(db, "apply", "-f", str(lab.fleet_file)).code == 0
    name = f"itest-gfx-{os.getpid()}"
    secret = "Vn7-pw1"
    pw = tmp_path / "pw"
    pw.write_text(secret + "\n")
    pw.chmod(0o600)
    try:
        r = run(db, "vm", "create", name, "--host", lab.hosts[2].name, "--memory", "64M",
                "--vcpus", "1", "--disk", "size=8M", "--pxe", "--no-start", "--virt-type",
                "qemu", "--os-variant", "debian11", "--graphics", "vnc",
                "--graphics-password-file", str(pw))
        assert r.code == 0 and secret not in r.out + r.err, r.err
        shown = run(db, "vm", "dumpxml", name)
        assert shown.code == 0 and "<graphics" in shown.out and secret not in shown.out
        assert "http://debian.org/debian/11" in shown.out  # the OS variant, recorded
        secure = pool_host.conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)
        assert f"passwd='{secret}'" in secure
    finally:
        with contextlib.suppress(VirtfleetError):
            pool_host.undefine_domain(name)
        with contextlib.suppress(VirtfleetError):
            storage.delete_volume(pool_host, str(tmp_path / "images" / f"{name}.qcow2"))
