"""One VM on one hypervisor: virsh's lifecycle verbs, with the safety checks a fleet needs.

Every method maps libvirt errors through virt/errors.py. `undefine` refuses what would lose
data (a managed-save image, snapshots, NVRAM, a disk another domain uses) unless the caller
names exactly what may go.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libvirt

from virtfleet.errors import Conflict, OperationTimeout
from virtfleet.virt.errors import libvirt_errors
from virtfleet.virt.host import STATE_WORDS, Host
from virtfleet.xml.domain import Domain


@dataclass(frozen=True)
class DomInfo:
    """`virsh dominfo`."""

    id: int | None
    name: str
    uuid: str
    os_type: str
    state: str
    vcpus: int
    max_memory_kib: int
    used_memory_kib: int
    cpu_time_s: float
    persistent: bool
    autostart: bool
    managed_save: bool
    snapshots: int

    def as_json(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Removal:
    """What an undefine may take with it; anything present but not allowed makes it refuse."""

    managed_save: bool = False
    snapshots: bool = False
    nvram: bool = False


class Guest:
    def __init__(self, host: Host, dom: Any) -> None:
        self.host = host
        self._dom = dom
        self.name = str(dom.name())
        self.uuid = str(dom.UUIDString())

    @property
    def handle(self) -> Any:
        """The raw libvirt domain, for the other modules of virt/ only."""
        return self._dom

    @classmethod
    def lookup(cls, host: Host, name: str) -> Guest:
        return cls(host, host.lookup_domain(name))

    def _call(self, fn: Callable[[], Any]) -> Any:
        with libvirt_errors(self.host.label, self.name):
            return fn()

    @property
    def state(self) -> str:
        state, _reason = self._call(self._dom.state)
        return STATE_WORDS.get(state, "no state")

    def is_active(self) -> bool:
        return bool(self._call(self._dom.isActive))

    def start(self, paused: bool = False) -> None:
        """Start; `paused` holds the CPUs until resume(), so a console attached in between
        misses nothing of the boot."""
        # Checked here so every driver gives the same answer (QEMU and the test driver report
        # this case with different error codes).
        if self.is_active():
            raise Conflict(f"{self.host.label}/{self.name}: domain is already running")
        flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
        self._call(lambda: self._dom.createWithFlags(flags))

    def destroy(self) -> None:
        self._call(self._dom.destroy)

    def reboot(self) -> None:
        self._call(lambda: self._dom.reboot(0))

    def suspend(self) -> None:
        self._call(self._dom.suspend)

    def resume(self) -> None:
        self._call(self._dom.resume)

    def set_autostart(self, on: bool) -> None:
        self._call(lambda: self._dom.setAutostart(1 if on else 0))

    def shutdown(self, timeout: float, force: bool, poll: float = 0.5) -> str:
        """ACPI shutdown, wait up to `timeout` s; then destroy if `force`. Returns how it ended:
        'shut off' (the guest powered off) or 'destroyed' (forced)."""
        if not self.is_active():
            raise Conflict(f"{self.host.label}/{self.name}: domain is not running")
        self._call(self._dom.shutdown)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_active():
                return "shut off"
            time.sleep(poll)
        if not self.is_active():
            return "shut off"
        if not force:
            raise OperationTimeout(
                f"still running {timeout:g}s after an ACPI shutdown (does the guest run "
                "acpid?); use `force` to destroy it", host=self.host.label, vm=self.name)
        self.destroy()
        return "destroyed"

    def xml(self) -> str:
        """The domain XML as libvirt shows it, never with secrets (no VIR_DOMAIN_XML_SECURE)."""
        return str(self._call(lambda: self._dom.XMLDesc(0)))

    def domain(self) -> Domain:
        return Domain.parse(self.xml())

    def info(self) -> DomInfo:
        state, max_kib, used_kib, vcpus, cpu_ns = self._call(self._dom.info)
        persistent = bool(self._call(self._dom.isPersistent))
        dom_id = int(self._call(self._dom.ID))
        return DomInfo(
            id=dom_id if dom_id >= 0 else None, name=self.name, uuid=self.uuid,
            os_type=str(self._call(self._dom.OSType)), state=STATE_WORDS.get(state, "no state"),
            vcpus=int(vcpus), max_memory_kib=int(max_kib), used_memory_kib=int(used_kib),
            cpu_time_s=cpu_ns / 1e9, persistent=persistent,
            autostart=bool(self._call(self._dom.autostart)) if persistent else False,
            managed_save=self.has_managed_save(), snapshots=self.snapshot_count(),
        )

    def stats(self) -> dict[str, Any]:
        """`virsh domstats`: every statistics group the driver offers, one flat dict."""
        def get() -> dict[str, Any]:
            [(_dom, values)] = self.host.conn.domainListGetStats([self._dom], 0, 0)
            return dict(values)
        return dict(self._call(get))

    def has_managed_save(self) -> bool:
        return bool(self._call(lambda: self._dom.hasManagedSaveImage(0)))

    def snapshot_count(self) -> int:
        return int(self._call(lambda: self._dom.snapshotNum(0)))

    def disk_sources(self) -> list[str]:
        return [d.source for d in self.domain().devices.disks
                if d.source is not None and d.device == "disk"]

    def undefine(self, allow: Removal) -> None:
        """Undefine, refusing if it would lose something `allow` does not name."""
        d = self.domain()
        reasons = []
        if self.has_managed_save() and not allow.managed_save:
            reasons.append("a managed-save image (`remove_managed_save`)")
        if self.snapshot_count() and not allow.snapshots:
            reasons.append(f"{self.snapshot_count()} snapshot(s) (`remove_snapshots`)")
        has_nvram = d.element.find("os/nvram") is not None
        if has_nvram and not allow.nvram:
            reasons.append("UEFI NVRAM (`remove_nvram`)")
        if reasons:
            raise Conflict("undefine would lose " + ", ".join(reasons) + "; name what may go",
                           host=self.host.label, vm=self.name)
        flags = 0
        if allow.managed_save:
            flags |= libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        if allow.snapshots:
            flags |= libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        if has_nvram and allow.nvram:
            flags |= libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
        self._call(lambda: self._dom.undefineFlags(flags))
