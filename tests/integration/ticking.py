"""Ticking guests and the machine's own truth about them, shared by the lab tests that move or
restart guests (test_migrate.py, test_ha.py).

The guests print "vf-tick N" on their serial console every second. Truth comes from the
machine, not from virtfleet: the QEMU processes with a guest's `-uuid` across every lab
namespace (read from /proc, each placed in its hypervisor by its network namespace), and what
the guest writes on its serial console.
"""

from __future__ import annotations

import calendar
import contextlib
import gzip
import os
import re
import select
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.integration.conftest import LabFixture
from virtfleet.config import Timeouts
from virtfleet.errors import HostUnavailable, OperationTimeout, VirtfleetError
from virtfleet.lab import guest
from virtfleet.lab.guests import outer_log
from virtfleet.lab.state import LabHost
from virtfleet.virt.host import Host
from virtfleet.xml.domain import Domain

TICK_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "virtfleet-tiny-guest up"
i=0
while :; do i=$((i+1)); echo "vf-tick $i"; sleep 1; done
"""
TICK = re.compile(r"vf-tick (\d+)")


# ------------------------------------------------------------------ ground truth


@dataclass(frozen=True)
class Qemu:
    pid: int
    netns: int  # inode of its network namespace: which lab hypervisor runs it
    incoming: bool


def qemus(uuid: str) -> list[Qemu]:
    """Every QEMU process on this machine whose -uuid is `uuid`."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            ns = os.stat(entry / "ns" / "net").st_ino
        except OSError:
            continue
        if not args or b"qemu-system" not in args[0]:
            continue
        if any(a == b"-uuid" and b == uuid.encode() for a, b in zip(args, args[1:], strict=False)):
            out.append(Qemu(int(entry.name), ns, b"-incoming" in args))
    return out


def ns_of(host: LabHost) -> int:
    return os.stat(f"/run/netns/{host.netns}").st_ino


class Watcher:
    """Samples the QEMU processes of one UUID until stopped; records every breach of 'one
    running copy' (two processes are allowed only as source + the target's incoming)."""

    def __init__(self, uuid: str, source: LabHost, target: LabHost) -> None:
        self.uuid, self.source, self.target = uuid, ns_of(source), ns_of(target)
        self.samples = 0
        self.doubles = 0
        self.breaches: list[list[Qemu]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            seen = qemus(self.uuid)
            self.samples += 1
            if len(seen) == 2:
                self.doubles += 1
                by_ns = {q.netns: q for q in seen}
                if set(by_ns) != {self.source, self.target} or not by_ns[self.target].incoming:
                    self.breaches.append(seen)
            elif len(seen) > 2:
                self.breaches.append(seen)
            time.sleep(0.05)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def answering(host: LabHost) -> bool:
    """Whether the hypervisor's libvirtd answers now (a short connect deadline)."""
    try:
        Host.open(host.uri, Timeouts(connect=2.0), label=host.name).close()
        return True
    except (HostUnavailable, OperationTimeout):
        return False


def wait_answering(host: LabHost, timeout: float = 60.0, every: float = 0.2) -> None:
    """Until the hypervisor's libvirtd answers, asked every `every` seconds; past `timeout`,
    the last connect's error."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            Host.open(host.uri, Timeouts(connect=2.0), label=host.name).close()
            return
        except (HostUnavailable, OperationTimeout):
            if time.monotonic() >= deadline:
                raise
            time.sleep(every)


def ticks(log: Path) -> list[int]:
    try:
        return [int(n) for n in TICK.findall(log.read_text(errors="replace"))]
    except OSError:
        return []


def wait_for(cond: object, timeout: float = 60.0,
             what: str | Callable[[], str] = "") -> None:
    """Wait until `cond()`; `what` names it in the failure, and may be a function so what it
    shows (a log, a state) is read at the time of the failure, not at the start."""
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(0.2)


# ------------------------------------------------------------------ the guests


def tick_images_in(work: Path) -> guest.GuestImages:
    """The tiny guest's kernel, and its initramfs with a ticking /init appended (a later
    cpio archive's files replace an earlier one's), built in `work`."""
    base = guest.ensure_images()
    work.mkdir(exist_ok=True)
    (work / "init").write_text(TICK_INIT)
    (work / "init").chmod(0o755)
    cpio = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], cwd=work,
                          input=b"init\n", capture_output=True, check=True).stdout
    initrd = work / "initrd-tick.img"
    initrd.write_bytes(base.initrd.read_bytes() + gzip.compress(cpio))
    return guest.GuestImages(base.kernel, initrd, base.version)


def pod_dir(lab: LabFixture, host: LabHost) -> Path:
    return Path(lab.state.pods[host.pod])


def make_guest(lab: LabFixture, images: guest.GuestImages, host: LabHost, name: str, *,
               disk: bool = True, start: bool = True) -> str:
    """A ticking guest on `host`, its disk (with known contents) on its pod's shared
    directory. Returns its UUID."""
    doc = Domain.parse(guest.domain_xml(name, images))
    if disk:
        raw = Path(lab.state.state_dir) / f"{name}.raw"
        raw.write_bytes(os.urandom(2 << 20) + bytes(6 << 20))
        img = pod_dir(lab, host) / f"{name}.qcow2"
        subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw),
                        str(img)], check=True)
        raw.unlink()
        from lxml import etree

        devices = doc.element.find("devices")
        assert devices is not None
        el = etree.SubElement(devices, "disk", type="file", device="disk")
        etree.SubElement(el, "driver", name="qemu", type="qcow2")
        etree.SubElement(el, "source", file=str(img))
        etree.SubElement(el, "target", dev="vda", bus="virtio")
    with Host.open(host.uri, label=host.name) as h:
        h.define_domain(doc.to_xml())
        uuid = str(h.lookup_domain(name).UUIDString())
        if start:
            outer_log(host, name).unlink(missing_ok=True)
            h.start_domain(name)
    if start:
        wait_for(lambda: len(ticks(outer_log(host, name))) >= 2, 120, f"{name} to tick")
    return uuid


def remove_guests(lab: LabFixture, names: list[str]) -> None:
    for host in lab.hosts:
        with Host.open(host.uri, label=host.name) as h:
            for name in names:
                if not h.has_domain(name):
                    continue
                with contextlib.suppress(VirtfleetError):
                    h.destroy_domain(name)
                if h.has_domain(name):  # a transient copy is gone once destroyed
                    h.undefine_domain(name)
    for host in lab.hosts:
        for name in names:
            (pod_dir(lab, host) / f"{name}.qcow2").unlink(missing_ok=True)


@contextlib.contextmanager
def guests(lab: LabFixture, names: list[str]) -> Iterator[None]:
    remove_guests(lab, names)
    try:
        yield
    finally:
        remove_guests(lab, names)


def where(lab: LabFixture, name: str) -> dict[str, tuple[str, bool]]:
    """Every lab hypervisor that defines `name`: its state and whether it is persistent."""
    found = {}
    for host in lab.hosts:
        with Host.open(host.uri, label=host.name) as h:
            if h.has_domain(name):
                dom = h.lookup_domain(name)
                found[host.name] = (next(d.state for d in h.list_domains() if d.name == name),
                                    bool(dom.isPersistent()))
    return found


@dataclass
class Life:
    """One QEMU process of a guest, as the sampler saw it."""

    pid: int
    netns: int
    incoming: bool
    first: float  # time.time() of the first and last samples that saw it
    last: float
    died: float | None = None  # when it exited, to the millisecond (from its pidfd)


class _Deaths:
    """Exact exit times of watched processes: a thread blocks in poll() on their pidfds (a
    pidfd becomes readable the moment its process exits), so a death is timed to the
    millisecond rather than to the next 50 ms sample."""

    def __init__(self) -> None:
        self.died: dict[int, float] = {}
        self._fds: dict[int, int] = {}  # fd -> pid
        self._poll = select.poll()
        self._wake_r, self._wake_w = os.pipe()
        self._poll.register(self._wake_r, select.POLLIN)
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def watch(self, pid: int) -> None:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self.died.setdefault(pid, time.time())
            return
        self._fds[fd] = pid
        self._poll.register(fd, select.POLLIN)
        os.write(self._wake_w, b"w")  # poll() again with the new fd

    def _run(self) -> None:
        while not self._stop:
            for fd, _ev in self._poll.poll():
                at = time.time()
                if fd == self._wake_r:
                    os.read(self._wake_r, 64)
                    continue
                pid = self._fds.pop(fd, None)
                self._poll.unregister(fd)
                os.close(fd)
                if pid is not None:
                    self.died.setdefault(pid, at)

    def close(self) -> None:
        self._stop = True
        os.write(self._wake_w, b"q")
        self._thread.join()
        for fd in list(self._fds):
            os.close(fd)
        os.close(self._wake_r)
        os.close(self._wake_w)


class Timeline:
    """Samples the QEMU processes of several UUIDs every 50 ms until stopped: every process's
    first and last sighting and its exact death, and every sample that saw more than one
    process for a UUID."""

    def __init__(self, uuids: list[str]) -> None:
        self.uuids = list(uuids)
        self.samples = 0
        self.lives: dict[str, dict[int, Life]] = {u: {} for u in uuids}
        self.doubles: dict[str, list[list[Qemu]]] = {u: [] for u in uuids}
        self._deaths = _Deaths()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for u in self.uuids:
                seen = qemus(u)
                at = time.time()
                for q in seen:
                    life = self.lives[u].get(q.pid)
                    if life is None:
                        self.lives[u][q.pid] = Life(q.pid, q.netns, q.incoming, at, at)
                        self._deaths.watch(q.pid)
                    else:
                        life.last = at
                if len(seen) > 1:
                    self.doubles[u].append(seen)
            self.samples += 1
            time.sleep(0.05)

    def __enter__(self) -> Timeline:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._deaths.close()
        for lives in self.lives.values():
            for life in lives.values():
                life.died = self._deaths.died.get(life.pid)

    def order(self, uuid: str) -> list[Life]:
        """The UUID's processes in the order they were first seen."""
        return sorted(self.lives[uuid].values(), key=lambda lf: lf.first)


QEMU_START = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})\+0000: starting up", re.M)


def start_attempts(host: LabHost, name: str) -> list[float]:
    """When the host's libvirtd started a QEMU for `name` (each attempt, failed ones too), from
    its QEMU log, as time.time() values."""
    log = host.log_dir / "qemu" / f"{name}.log"
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    out = []
    for stamp in QEMU_START.findall(text):
        t = time.strptime(stamp.split(".")[0], "%Y-%m-%d %H:%M:%S")
        out.append(calendar.timegm(t) + int(stamp.split(".")[1]) / 1000)
    return out
