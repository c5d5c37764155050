"""The HA service: which VMs are HA, where HA acts, and what it sees (docs/ha.md).

    service = HAService(store, pool)
    service.mark(MarkRequest(vm="web01", priority=200))   # `ha set`: <vf:ha/>, autostart off
    service.unmark("web01")                                # `ha unset`
    service.enable(EnableRequest(pod="or-pod1"))           # every host must have a usable BMC
    service.disable("or-pod1")
    service.status()                                       # hosts' states, HA VMs' placement
    service.power("hv3", on=True)                          # `ha power --on`: through its BMC

Marking writes the VM's own metadata (so the mark travels with the VM, wherever it is defined
or restarted) and records the VM with its persistent definition in the store, which the
controller keeps current from then on. The fencing and restarting itself is the controller's
(ha/monitor.py): this service only prepares and reports.
"""

from __future__ import annotations

import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from virtfleet.errors import Conflict, InvalidInput
from virtfleet.fleet.locate import locate_vm
from virtfleet.ha.credentials import BmcConfigError
from virtfleet.ha.definitions import check_priority, remember
from virtfleet.ha.fence import FenceFailed, PowerResult
from virtfleet.ha.fencer import BmcFencer
from virtfleet.ha.states import State
from virtfleet.inventory.fleetfile import HA_PRIORITY_DEFAULT
from virtfleet.inventory.ha import Recovery
from virtfleet.inventory.store import Store
from virtfleet.provision.locks import vm_lock
from virtfleet.validate import check_name
from virtfleet.virt import ha as vha
from virtfleet.virt.fanout import ConnectionPool
from virtfleet.virt.guest import Guest
from virtfleet.xml.domain import Domain, FleetFacts

# ------------------------------------------------------------------ requests


@dataclass(frozen=True)
class MarkRequest:
    """Make a VM HA, with a restart priority (higher first)."""

    vm: str
    priority: int = HA_PRIORITY_DEFAULT

    def check(self) -> None:
        check_name("vm", self.vm)
        check_priority("priority", self.priority)


@dataclass(frozen=True)
class EnableRequest:
    """Turn HA on for a pod. With `check_bmcs`, each hypervisor's BMC must answer a power
    status call first (its address, user, password and agent work)."""

    pod: str
    check_bmcs: bool = True

    def check(self) -> None:
        check_name("pod", self.pod)


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class Marked:
    vm: str
    host: str
    uuid: str
    priority: int | None  # None: no longer HA (after unmark, no group policy either)
    source: str  # "marked", "group NAME" or "none"
    autostart_turned_off: bool = False

    def as_json(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Enabled:
    pod: str
    hosts: tuple[str, ...]
    was_enabled: bool
    checked: tuple[PowerResult, ...] = ()

    def as_json(self) -> dict[str, object]:
        return {"pod": self.pod, "hosts": list(self.hosts), "was_enabled": self.was_enabled,
                "bmcs": [c.as_json() for c in self.checked]}


@dataclass(frozen=True)
class HostStatus:
    host: str
    pod: str
    ha: bool  # HA on for its pod
    state: str  # ok, suspect, fencing, fenced, restarting, recovered, fence-failed, maintenance
    since: datetime | None
    detail: str
    bmc: bool

    def as_json(self) -> dict[str, object]:
        return {"host": self.host, "pod": self.pod, "ha": self.ha, "state": self.state,
                "since": self.since.isoformat() if self.since else None,
                "detail": self.detail, "bmc": self.bmc}


@dataclass(frozen=True)
class VMStatus:
    vm: str
    uuid: str
    priority: int
    source: str  # marked, or group NAME
    host: str | None  # where it is (last seen) defined
    state: str  # its libvirt state there as last seen; "down" while its host is not ok
    detail: str = ""

    def as_json(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Status:
    hosts: tuple[HostStatus, ...]
    vms: tuple[VMStatus, ...]
    recoveries: tuple[Recovery, ...] = ()  # unfinished
    controller: int | None = None  # the pid of the live controller watching; None: none
    pods: tuple[str, ...] = field(default=())  # pods with HA on

    def as_json(self) -> dict[str, object]:
        return {"controller_pid": self.controller, "pods": list(self.pods),
                "hosts": [h.as_json() for h in self.hosts],
                "vms": [v.as_json() for v in self.vms],
                "recoveries": [r.as_json() for r in self.recoveries]}


# ------------------------------------------------------------------ the service


class HAService:
    """Without a `pool`, the service opens its own connections and close() ends them."""

    def __init__(self, store: Store, pool: ConnectionPool | None = None) -> None:
        self.store = store
        self._own_pool = pool is None
        self.pool = pool if pool is not None else ConnectionPool()
        self.seconds = self.pool.timeouts.call

    def close(self) -> None:
        if self._own_pool:
            self.pool.close()

    def __enter__(self) -> HAService:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- which VMs ----------------------------------------------------------------------

    def mark(self, req: MarkRequest) -> Marked:
        """Make `req.vm` HA: its metadata says so, its autostart is off, and the store has it
        with its definition."""
        req.check()
        return self._set(req.vm, req.priority)

    def unmark(self, vm: str) -> Marked:
        """Take a VM's own HA mark away (its group's policy, if any, still applies)."""
        check_name("vm", vm)
        return self._set(vm, None)

    def _set(self, vm: str, priority: int | None) -> Marked:
        source = locate_vm(vm, self.store, self.pool)
        verb = "ha set" if priority is not None else "ha unset"
        with vm_lock(self.store, f"{source.name}/{vm}", verb):
            h = self.pool.get(source)
            uuid = Guest.lookup(h, vm).uuid
            found = vha.definition(h, uuid, self.seconds)
            if found is None:
                raise Conflict("it is transient: HA restarts a VM from its persistent "
                               "definition (virsh define)", host=source.name, vm=vm)
            facts = Domain.parse(found.xml).facts or FleetFacts()
            facts.ha_priority = priority
            vha.set_facts(h, uuid, facts.to_xml(), self.seconds)
            after = vha.definition(h, uuid, self.seconds)
            assert after is not None
            now = remember(self.store, h, source.name, after, self.seconds, datetime.now(UTC))
        how = ("marked" if now.marked is not None else f"group {now.app}"
               if now.priority is not None else "none")
        return Marked(vm, source.name, uuid, now.priority, how, now.autostart_turned_off)

    # -- where ----------------------------------------------------------------------------

    def enable(self, req: EnableRequest) -> Enabled:
        """Turn HA on for a pod whose every hypervisor can be fenced; refused (nothing
        changed) naming the first one that cannot."""
        req.check()
        hosts = self.store.hypervisors(pod=req.pod)
        if len(hosts) < 2:
            raise InvalidInput("pod", f"{req.pod} has {len(hosts)} hypervisor(s): HA restarts "
                               "a failed hypervisor's VMs on the others of its pod")
        bmcs = self.store.hypervisor_bmcs()
        for h in hosts:
            if h.name not in bmcs:
                raise BmcConfigError(h.name, "", f"missing: HA in pod {req.pod} fences a "
                                     "failed hypervisor through its BMC before restarting "
                                     "its VMs elsewhere, and this one has no bmc: block in "
                                     "the fleet file (add one, then apply)")
        checked: tuple[PowerResult, ...] = ()
        if req.check_bmcs:
            fencer = BmcFencer(self.store)
            with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as ex:
                checked = tuple(ex.map(lambda h: fencer.status(h.name), hosts))
            for c in checked:
                if not c.ok:
                    raise FenceFailed(c.host, c.agent, "status", c.message, retryable=True)
        was = not self.store.enable_ha(req.pod, datetime.now(UTC), socket.gethostname(),
                                       os.getpid())
        return Enabled(req.pod, tuple(h.name for h in hosts), was, checked)

    def power(self, host: str, on: bool = False) -> PowerResult:
        """A hypervisor's power through its BMC (the fleet file's `bmc:`): its status, or,
        with `on`, powered on and confirmed by a status call. Power-on is the operator's way
        back for a fenced host; its HA VMs stay shut off there (autostart is off) and the
        controller reconciles them. There is no power-off here: that is fencing, HA's own.
        Raises FenceFailed when the BMC gives no answer."""
        check_name("host", host)
        self.store.hypervisors(host=host)  # NotFound for a host the inventory lacks
        fencer = BmcFencer(self.store)
        if not fencer.has_bmc(host):
            raise BmcConfigError(host, "", "missing: this hypervisor has no bmc: block in the "
                                 "fleet file (add one, then apply)")
        return (fencer.on(host) if on else fencer.status(host)).raise_for_error()

    def disable(self, pod: str) -> bool:
        """Turn HA off for a pod (a recovery under way there pauses); False if it was off."""
        check_name("pod", pod)
        return self.store.disable_ha(pod)

    # -- what HA sees -----------------------------------------------------------------------

    def status(self, pod: str | None = None) -> Status:
        from virtfleet.controller.client import is_live

        if pod is not None:
            check_name("pod", pod)
        records = self.store.hypervisors(pod=pod)
        pods = self.store.ha_pods()
        bmcs = self.store.hypervisor_bmcs()
        saved = self.store.ha_hosts()
        hosts = []
        for r in records:
            s = saved.get(r.name)
            state = s.state if s is not None else State.OK.value
            if state == State.OK.value and r.maintenance:
                state = "maintenance"
            hosts.append(HostStatus(r.name, r.pod, r.pod in pods, state,
                                    s.since if s is not None else None,
                                    s.detail if s is not None else "", r.name in bmcs))
        by_host = {h.host: h for h in hosts}
        seen = {(v.host, v.domain.uuid): v.domain.state for v in self.store.fleet_vms(pod=pod)}
        vms = []
        for vm in self.store.ha_vms():
            if vm.priority is None or (pod is not None and vm.host not in by_host):
                continue
            host = by_host.get(vm.host) if vm.host is not None else None
            state = seen.get((vm.host, vm.uuid), "unknown") if vm.host else "undefined"
            detail = ""
            if host is not None and host.state not in (State.OK.value, "maintenance"):
                detail = f"its host is {host.state}" + (f": {host.detail}" if host.detail
                                                        else "")
                state = "down"
            vms.append(VMStatus(vm.name, vm.uuid, vm.priority,
                                "marked" if vm.marked_priority is not None else
                                f"group {vm.app}", vm.host, state, detail))
        vms.sort(key=lambda v: (-v.priority, v.vm))
        rec = self.store.controller()
        names = {r.name for r in records}
        running = tuple(r for r in self.store.recoveries(running=True)
                        if pod is None or r.host in names)
        return Status(tuple(hosts), tuple(vms), running,
                      rec.pid if rec is not None and is_live(rec) else None,
                      tuple(sorted(p for p in pods if pod is None or p == pod)))

