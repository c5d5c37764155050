"""The VM service: virsh's verbs for a VM named anywhere in the fleet, and making and removing
VMs the way virt-install and `virsh undefine` do.

    with VMService(store) as vms:
        vms.act(ActRequest("start", vm="web01"))                # raises what refused it
        done = vms.act(ActRequest("shutdown", scope=Scope(pod="p1")))  # a result per VM
        made = vms.create(CreateRequest(name="web02", memory="4G", vcpus=2, pod="p1", ...))

A VM is found by name (fleet/locate.py) and locked for the operation (provision/locks.py), so a
second operator's verb on the same VM gets 'busy' instead of racing the first. A verb on many
VMs acts on every VM in scope whose state it applies to; one VM's failure is its own result,
a host that does not answer is a failure of the result, and the others go on.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from virtfleet.design.policy import VIRT_TYPES
from virtfleet.design.spec import VMSpec, check_osinfo, spec_form
from virtfleet.errors import Conflict, InvalidInput, NotFound, VirtfleetError
from virtfleet.fleet.locate import VMFinder, locate_vm, lock_key
from virtfleet.fleet.scope import Progress, Scope
from virtfleet.ha.definitions import requested_mark
from virtfleet.inventory.records import HostFailure, HostRecord
from virtfleet.provision.create import Created, create_vm, reserve_and_read
from virtfleet.provision.locks import vm_lock
from virtfleet.provision.remove import undefine_vm
from virtfleet.provision.templates import is_template
from virtfleet.validate import check_name
from virtfleet.virt import console
from virtfleet.virt.guest import DomInfo, Guest, Removal
from virtfleet.virt.host import Host

__all__ = ["ActRequest", "ActResult", "Console", "ConsoleRequest", "CreateRequest", "Created",
           "DomInfo", "Undefined", "UndefineRequest", "VMInfo", "VMResult", "VMService",
           "VMStats", "VERBS"]


# ------------------------------------------------------------------ the verbs


def _running(state: str) -> bool:
    return state in ("running", "idle", "paused", "in shutdown", "pmsuspended")


def _refuse_template(g: Guest) -> None:
    if is_template(g.domain()):
        raise Conflict(f"{g.host.label}/{g.name} is a template: templates are never started "
                       f"(their images are read-only); clone it: virtfleet vm clone {g.name} NEW")


def _start(g: Guest, _req: ActRequest) -> str:
    _refuse_template(g)
    g.start()
    return "started"


def _shutdown(g: Guest, req: ActRequest) -> str:
    how = g.shutdown(timeout=req.timeout, force=req.force)
    return "is shut off" if how == "shut off" else "destroyed after the shutdown timeout"


def _simple(call: Callable[[Guest], None], done: str) -> Callable[[Guest, ActRequest], str]:
    def run(g: Guest, _req: ActRequest) -> str:
        call(g)
        return done
    return run


@dataclass(frozen=True)
class Verb:
    """A lifecycle verb: which states it applies to (for many VMs) and how it acts on one,
    saying how it ended ("started", "is shut off")."""

    applies: Callable[[str], bool]
    run: Callable[[Guest, ActRequest], str]
    skips_templates: bool = False  # for many VMs: templates are left alone, not refused


VERBS: dict[str, Verb] = {
    "start": Verb(lambda s: s in ("shut off", "crashed"), _start, skips_templates=True),
    "shutdown": Verb(_running, _shutdown),
    "destroy": Verb(_running, _simple(Guest.destroy, "destroyed")),
    "reboot": Verb(lambda s: s == "running", _simple(Guest.reboot, "is being rebooted")),
    "suspend": Verb(lambda s: s == "running", _simple(Guest.suspend, "suspended")),
    "resume": Verb(lambda s: s == "paused", _simple(Guest.resume, "resumed")),
}


# ------------------------------------------------------------------ requests


@dataclass(frozen=True)
class ActRequest:
    """A lifecycle verb on one VM (`vm`; `scope.host` only says where it is), or on every VM
    in `scope` that the verb applies to (start: shut-off ones; shutdown: running ones)."""

    verb: str
    vm: str | None = None
    scope: Scope = Scope()
    timeout: float = 120.0  # shutdown: seconds to wait for the guest to power off
    force: bool = False  # shutdown: destroy a VM still running after `timeout`

    def check(self) -> None:
        if self.verb not in VERBS:
            raise InvalidInput("verb", f"{self.verb!r} is not one of {', '.join(VERBS)}")
        if self.vm is not None:
            check_name("vm", self.vm)
            if self.scope.site or self.scope.pod or self.scope.group or self.scope.all:
                raise InvalidInput("scope", "a VM is found by its name; a site, pod or group "
                                   "selects many VMs")
        if self.timeout < 0:
            raise InvalidInput("timeout", "must be zero or more seconds")


@dataclass(frozen=True)
class ConsoleRequest:
    """A VM's serial console; with `start`, the VM is started paused, the console opened,
    then the CPUs run, so nothing of the boot is missed."""

    vm: str
    host: str | None = None
    start: bool = False
    force: bool = False  # take the console from another client

    def check(self) -> None:
        check_name("vm", self.vm)
        if self.start and self.force:
            raise InvalidInput("force", "a VM just started has no other console client")


@dataclass(frozen=True)
class CreateRequest:
    """A new VM in virt-install's words (`disks`: "size=80G,format=qcow2" or "path=IMAGE";
    `networks`: "bridge=br0,vlan=42" or "network=default"), on a named `host` or where the
    scheduler puts it in a `pod` or `site`."""

    name: str
    memory: str  # 32G, 512M; a bare number is MiB
    vcpus: int
    disks: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    cdrom: str | None = None
    pxe: bool = False
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    import_disk: str | None = None
    os_variant: str | None = None
    graphics: str | None = None
    graphics_password: str | None = field(default=None, repr=False)
    password_from_env: bool = False  # the password applies only if the VM has a display
    serial_console: bool = True
    autostart: bool = False
    start: bool = True
    virt_type: str | None = None  # auto, kvm, qemu (default: the VIRTFLEET_VIRT_TYPE setting)
    app: str | None = None  # application group: a host group placement isolates, or a label
    owner: str | None = None
    host: str | None = None
    pod: str | None = None
    site: str | None = None
    ha: bool = False  # restarted elsewhere in its pod when its host fails (docs/ha.md)
    ha_priority: int | None = None  # with `ha`: 0-1000, higher first (default 100)

    def check(self) -> VMSpec:
        """Every field checked, cheap and certain first, in the stages `spec_form` lists:
        each value alone in `vm create`'s order, then how they go together, then libosinfo.
        The VM's validated design."""
        form = spec_form(name=self.name, memory=self.memory, vcpus=self.vcpus,
                         disks=list(self.disks), networks=list(self.networks),
                         graphics=self.graphics, cdrom=self.cdrom, pxe=self.pxe,
                         kernel=self.kernel, initrd=self.initrd, cmdline=self.cmdline,
                         import_disk=self.import_disk, serial_console=self.serial_console,
                         autostart=self.autostart, os_variant=self.os_variant,
                         graphics_password=self.graphics_password,
                         password_from_env=self.password_from_env)
        if self.virt_type is not None and self.virt_type not in ("auto", *VIRT_TYPES):
            raise InvalidInput("virt_type", f"{self.virt_type!r} is not auto, kvm or qemu")
        for key, value in (*self.facts.items(), ("host", self.host), ("pod", self.pod),
                           ("site", self.site)):
            if value is not None:
                check_name(key, value)
        spec = form.together()
        if sum(x is not None for x in (self.host, self.pod, self.site)) != 1:
            raise InvalidInput("host/pod/site", "give exactly one place for the VM")
        self.ha_mark()
        return check_osinfo(spec)

    def ha_mark(self) -> int | None:
        """The restart priority the VM is marked HA with; None: not marked."""
        return requested_mark(self.ha, self.ha_priority, self.autostart)

    @property
    def facts(self) -> dict[str, str]:
        """What virtfleet records in the VM's metadata."""
        return {k: v for k, v in (("app", self.app), ("owner", self.owner)) if v is not None}


@dataclass(frozen=True)
class UndefineRequest:
    """Remove a VM's definition; its disks go only if named (`storage`: target devs or paths)
    or all of them (`remove_all_storage`), and only if nothing else needs them."""

    vm: str
    host: str | None = None
    remove_managed_save: bool = False
    remove_snapshots: bool = False
    remove_nvram: bool = False
    remove_all_storage: bool = False
    storage: tuple[str, ...] = ()

    def check(self) -> None:
        check_name("vm", self.vm)
        if self.remove_all_storage and self.storage:
            raise InvalidInput("storage", "name disks, or remove all storage; not both")

    @property
    def targets(self) -> list[str] | None:
        """The disks to delete: None for all of them."""
        return None if self.remove_all_storage else list(self.storage)


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class VMResult:
    """One VM's part in a verb: how it ended, or (ok false) why not."""

    host: str
    name: str
    result: str
    ok: bool

    def as_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ActResult:
    verb: str
    vms: tuple[VMResult, ...]
    failed: tuple[HostFailure, ...] = ()  # hosts that did not answer
    asked: int = 1  # hosts asked

    @property
    def ok(self) -> bool:
        return not self.failed and all(v.ok for v in self.vms)

    def as_json(self) -> dict[str, object]:
        return {"verb": self.verb, "ok": self.ok, "vms": [v.as_json() for v in self.vms],
                "failed": [f.as_json() for f in self.failed]}


@dataclass(frozen=True)
class VMInfo:
    """`virsh dominfo`, and the hypervisor the VM is on."""

    host: str
    info: DomInfo

    def as_json(self) -> dict[str, object]:
        return {"host": self.host, **self.info.as_json()}


@dataclass(frozen=True)
class VMStats:
    """`virsh domstats`: every statistic the hypervisor reports for the VM."""

    host: str
    name: str
    stats: dict[str, Any]

    def as_json(self) -> dict[str, object]:
        return {"host": self.host, "name": self.name, **self.stats}


@dataclass(frozen=True)
class Undefined:
    host: str
    name: str
    removed: tuple[str, ...]  # the volumes deleted with it

    def as_json(self) -> dict[str, object]:
        return {"host": self.host, "name": self.name, "removed": list(self.removed)}


@dataclass(frozen=True)
class GraphicsDisplay:
    """A running VM's VNC or SPICE display, where the web console's relay connects."""

    host: str
    vm: str
    kind: str  # vnc, spice
    address: str  # where the controller connects (never given to a browser)
    port: int


GRAPHICS_WORDS = {"vnc": "VNC", "spice": "SPICE"}


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


class Console:
    """A VM's open serial console: a terminal attaches to it, a script reads it to a line."""

    def __init__(self, guest: Guest, stream: Any) -> None:
        self.host = guest.host.label
        self.vm = guest.name
        self._stream = stream

    def attach(self) -> None:
        """Interactive on this process's terminal until Ctrl+] (or the VM closes it)."""
        console.attach(self._stream)

    def read_until(self, marker: str, timeout: float, echo_fd: int | None = None) -> bytes:
        """The output up to `marker` (copied to `echo_fd` as it comes); OperationTimeout
        after `timeout` seconds."""
        return console.read_until(self._stream, marker.encode(), timeout,
                                  f"{self.host}/{self.vm}", echo_fd=echo_fd)

    def pump(self, deliver: Callable[[bytes], None]) -> None:
        """The output, chunk by chunk, to `deliver` from a worker thread; b"" at the end."""
        console.pump(self._stream, deliver)

    def send(self, data: bytes) -> None:
        console.send(self._stream, data, self.host, self.vm)

    def close(self) -> None:
        console.close(self._stream)


# ------------------------------------------------------------------ the service


class VMService(VMFinder):
    def _hosts(self, scope: Scope) -> list[HostRecord]:
        return self.store.hypervisors(site=scope.site, pod=scope.pod, host=scope.host,
                                      group=scope.group)

    def act(self, req: ActRequest, *, progress: Progress | None = None) -> ActResult:
        """One VM: raises what refused or failed it. Many: a result per VM and per host that
        did not answer."""
        req.check()
        verb = VERBS[req.verb]
        if req.vm is not None:
            with self.held(req.vm, req.scope.host, req.verb) as guest:
                done = verb.run(guest, req)
            return ActResult(req.verb, (VMResult(guest.host.label, guest.name, done, True),))

        def on_host(h: Host) -> list[VMResult]:
            return [r for d in h.list_domains() if verb.applies(d.state)
                    for r in self._one_of_many(h, d.name, verb, req)]

        answers = self.ask(self._hosts(req.scope), req.verb, on_host, progress)
        return ActResult(req.verb, tuple(v for _h, vs in answers.values for v in vs),
                         tuple(answers.failures), len(answers))

    def _one_of_many(self, h: Host, name: str, verb: Verb, req: ActRequest) -> list[VMResult]:
        """One VM's part in a verb on many: its failure is its row, not the host's."""
        try:
            guest = Guest.lookup(h, name)
            if verb.skips_templates and is_template(guest.domain()):
                return []
            with vm_lock(self.store, lock_key(guest), req.verb):
                return [VMResult(h.label, name, verb.run(guest, req), True)]
        except VirtfleetError as exc:
            return [VMResult(h.label, name, exc.in_row(h.label, name), False)]

    @contextmanager
    def console(self, req: ConsoleRequest) -> Iterator[Console]:
        """The VM's console while the caller uses it; a VM started here stays locked for
        `start` until then."""
        req.check()
        if not req.start:
            guest = self.guest(req.vm, req.host)
            yield Console(guest, console.open_console(guest, req.force))
            return
        with self.held(req.vm, req.host, "start") as guest:
            _refuse_template(guest)
            guest.start(paused=True)
            stream = console.open_console(guest)
            guest.resume()
            yield Console(guest, stream)

    def graphics_display(self, vm: str, host: str | None = None,
                         kind: str = "vnc") -> GraphicsDisplay:
        """Where the VM's running VNC or SPICE display (`kind`) listens, from its live XML, as
        the controller reaches it: a display on every address (0.0.0.0, ::) is asked for on
        the hypervisor's own address; one on the hypervisor's loopback cannot be reached.
        A SPICE display must have a plain port: the browser's client speaks no TLS to it (the
        browser's own connection to the controller is the one to protect)."""
        check_name("vm", vm)
        if kind not in GRAPHICS_WORDS:
            raise InvalidInput("kind", f"one of {', '.join(GRAPHICS_WORDS)}")
        word = GRAPHICS_WORDS[kind]
        guest = self.guest(vm, host)
        devices = guest.domain().devices
        graphics = list(devices.graphics) if devices is not None else []
        found = [g for g in graphics if g.type == kind]
        label = guest.host.label
        if not found:
            other = next((g.type for g in graphics if g.type in GRAPHICS_WORDS), None)
            if other is not None:
                raise NotFound(f"{label}/{vm} has no {word} display: its screen is "
                               f"{GRAPHICS_WORDS[other]} (/console/{other})")
            raise NotFound(f"{label}/{vm} has no {word} display (no <graphics type='{kind}'>)")
        g = found[0]
        port = g.port
        if port is None or port <= 0:
            if kind == "spice" and (g.tls_port or 0) > 0:
                raise Conflict(f"{label}/{vm}: its SPICE display takes TLS only, which the "
                               f"browser's SPICE client does not speak (use virt-viewer)")
            raise Conflict(f"{label}/{vm} has no {word} display running (is the VM running?)")
        address = g.listen_address or g.listen or ""
        remote = urlsplit(guest.host.uri).hostname
        if address in ("", "0.0.0.0", "::"):
            address = remote or "127.0.0.1"
        elif _loopback(address) and remote and not _loopback(remote):
            raise Conflict(f"{label}/{vm}: its {word} display listens on {label}'s loopback "
                           f"({address}), which the controller cannot reach")
        return GraphicsDisplay(label, vm, kind, address, port)

    def info(self, vm: str, host: str | None = None) -> VMInfo:
        guest = self.guest(vm, host)
        return VMInfo(guest.host.label, guest.info())

    def dumpxml(self, vm: str, host: str | None = None) -> str:
        """The domain XML as libvirt shows it, without secrets such as graphics passwords."""
        return self.guest(vm, host).xml()

    def stats(self, vm: str, host: str | None = None) -> VMStats:
        guest = self.guest(vm, host)
        return VMStats(guest.host.label, guest.name, guest.stats())

    def set_autostart(self, vm: str, on: bool, host: str | None = None) -> None:
        """Start the VM when its hypervisor boots (`virsh autostart [--disable]`). Refused
        for an HA VM: a hypervisor that comes back must not start by itself a VM that may run
        elsewhere by then (docs/ha.md)."""
        with self.held(vm, host, "autostart") as guest:
            if on:
                facts = guest.domain().facts
                app = facts.app if facts is not None else None
                if (facts is not None and facts.ha_priority is not None) or (
                        app is not None and app in self.store.group_ha()):
                    raise Conflict("it is HA: its libvirt autostart stays off, or a hypervisor "
                                   "that comes back would start it while it runs elsewhere "
                                   "('virtfleet ha unset' it first)", host=guest.host.label,
                                   vm=vm)
            guest.set_autostart(on)

    def create(self, req: CreateRequest,
               progress: Callable[[str], None] | None = None) -> Created:
        """Make the VM on its host, or nothing (provision/create.py); `progress` hears where
        it goes and each step the journal records."""
        spec = req.check()
        with vm_lock(self.store, f"create/{spec.name}", "create"):  # two creates of one name
            target, reading = reserve_and_read(self.store, self.pool, spec, host=req.host,
                                               site=req.site, pod=req.pod, group=req.app,
                                               policy=self.policy)
            if progress is not None:
                progress(f"placed {spec.name} on {target.name}")
            return create_vm(spec, target, self.store, self.pool, start=req.start,
                             virt_type=req.virt_type, facts=req.facts, progress=progress,
                             ha_priority=req.ha_mark(), reading=reading)

    def undefine(self, req: UndefineRequest) -> Undefined:
        """Undefine a shut-off VM and the volumes named (provision/remove.py)."""
        req.check()
        record = locate_vm(req.vm, self.store, self.pool, host=req.host)
        guest = Guest.lookup(self.pool.get(record), req.vm)
        allow = Removal(managed_save=req.remove_managed_save, snapshots=req.remove_snapshots,
                        nvram=req.remove_nvram)
        with vm_lock(self.store, lock_key(guest), "undefine"):
            removed = undefine_vm(self.store, self.pool, guest, record, allow, req.targets)
        return Undefined(record.name, req.vm, tuple(removed))
