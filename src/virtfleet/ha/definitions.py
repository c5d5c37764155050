"""Keeping each HA VM's last persistent definition in the store, from what its host says.

A dead hypervisor cannot be asked for a VM's definition, so the controller keeps a copy: read
again on every define event (and on each full sync of a host), with secrets, since a console
password must survive a restart elsewhere. A VM is HA when its own metadata says so
(`<vf:ha priority="N"/>`, set by `virtfleet ha set` or by `vm create/clone --ha`) or its
group (its `app`) has an HA policy in the fleet file. While at it, an HA VM found with libvirt
autostart on gets it turned off: a host that comes back must never start by itself what may
run elsewhere by then.

`remember` is the one way a VM's HA standing gets into the store outside the controller (`ha
set`, and a VM created or cloned HA); `requested_mark` checks what a create or clone asks for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from virtfleet.errors import InvalidInput, VirtfleetError
from virtfleet.inventory.fleetfile import HA_PRIORITY_DEFAULT, HA_PRIORITY_MAX
from virtfleet.inventory.ha import HAVM
from virtfleet.inventory.records import HostRecord
from virtfleet.inventory.store import Store
from virtfleet.virt import ha as vha
from virtfleet.virt.fanout import ConnectionPool, fan_out
from virtfleet.virt.host import Host
from virtfleet.xml.domain import Domain

log = logging.getLogger("virtfleet.ha")


def ha_of(xml: str, groups: dict[str, int]) -> tuple[int | None, str | None, int | None]:
    """(marked priority, app, effective priority) of a domain definition; the effective one
    is None when the VM is not HA."""
    facts = Domain.parse(xml).facts
    marked = facts.ha_priority if facts is not None else None
    app = facts.app if facts is not None else None
    effective = marked if marked is not None else groups.get(app) if app else None
    return marked, app, effective


def check_priority(field: str, priority: int) -> None:
    if isinstance(priority, bool) or not 0 <= priority <= HA_PRIORITY_MAX:
        raise InvalidInput(field, f"must be a whole number from 0 to {HA_PRIORITY_MAX} "
                           "(higher restarts first)")


def requested_mark(ha: bool, priority: int | None, autostart: bool = False) -> int | None:
    """The HA mark a create or clone request asks for (`ha`, `ha_priority`): None for none.
    Refused: a priority without `ha`, one out of range, and `ha` with `autostart` (a host that
    comes back must never start by itself a VM that may run elsewhere by then)."""
    if not ha:
        if priority is not None:
            raise InvalidInput("ha_priority", "applies only to an HA VM (give `ha` too)")
        return None
    if autostart:
        raise InvalidInput("autostart", "an HA VM keeps libvirt autostart off: a hypervisor "
                           "that comes back must not start it by itself (the controller "
                           "restarts it elsewhere)")
    if priority is None:
        return HA_PRIORITY_DEFAULT
    check_priority("ha_priority", priority)
    return priority


@dataclass(frozen=True)
class Remembered:
    """What the store now holds for one VM: its own mark, its group, the effective priority
    (None: not HA), and whether its autostart had to be turned off."""

    marked: int | None
    app: str | None
    priority: int | None
    autostart_turned_off: bool


def remember(store: Store, h: Host, host: str, found: vha.Definition, seconds: float,
             now: datetime) -> Remembered:
    """Put one VM's HA standing in the store from its persistent definition `found` on `h`
    (`ha set`, and a VM created or cloned HA): recorded with that definition when HA, its
    autostart off; forgotten when not."""
    marked, app, effective = ha_of(found.xml, store.group_ha())
    turned_off = False
    if effective is not None and found.autostart:
        vha.set_autostart(h, found.uuid, False, seconds)
        turned_off = True
    if effective is None:
        store.forget_ha_vm(found.uuid)
    else:
        store.record_ha_vm(HAVM(uuid=found.uuid, name=found.name, host=host,
                                marked_priority=marked, app=app, definition=found.xml,
                                defined_at=now))
    return Remembered(marked, app, effective, turned_off)


class Definitions:
    def __init__(self, store: Store, pool: ConnectionPool,
                 clock: Callable[[], datetime]) -> None:
        self.store = store
        self.pool = pool
        self.clock = clock
        self.seconds = pool.timeouts.call

    def domain_changed(self, host: HostRecord, uuid: str) -> None:
        """A lifecycle event for `uuid` on `host`: read its definition again."""
        h = self.pool.get(host)
        found = vha.definition(h, uuid, self.seconds)
        if found is None:
            # Undefined there (or only transient now, as during a migration): keep the last
            # definition, and forget where it was only if the record still says this host.
            self.store.move_ha_vm(uuid, None, only_from=host.name)
            return
        known = {v.uuid: v for v in self.store.ha_vms(uuid=uuid)}
        self._record(h, host, [found], known, self.store.group_ha())

    def hosts_synced(self, hosts: Sequence[HostRecord]) -> None:
        """A full sync of `hosts`: read every persistent definition there."""
        if not hosts:
            return
        groups = self.store.group_ha()
        known = {v.uuid: v for v in self.store.ha_vms()}
        by_name = {h.name: h for h in hosts}

        def read(h: Host) -> None:
            self._record(h, by_name[h.label], vha.definitions(h, self.seconds), known, groups)

        for r in fan_out(list(hosts), read, self.pool):
            if r.error is not None:
                log.warning("HA definitions of %s: %s", r.host.name, r.error.message)

    def _record(self, h: Host, host: HostRecord, found: Sequence[vha.Definition],
                known: dict[str, HAVM], groups: dict[str, int]) -> None:
        for d in found:
            marked, app, effective = ha_of(d.xml, groups)
            old = known.get(d.uuid)
            if effective is None:
                if old is not None and old.host in (host.name, None):
                    self.store.forget_ha_vm(d.uuid)  # its mark went with a redefinition
                continue
            if d.autostart:
                try:
                    vha.set_autostart(h, d.uuid, False, self.seconds)
                    log.warning("HA VM %s on %s had autostart on; turned it off", d.name,
                                host.name)
                except VirtfleetError as exc:
                    log.error("HA VM %s on %s: autostart could not be turned off: %s", d.name,
                              host.name, exc.message)
            if old is not None and (old.definition, old.host, old.name, old.marked_priority,
                                    old.app) == (d.xml, host.name, d.name, marked, app):
                continue
            self.store.record_ha_vm(HAVM(uuid=d.uuid, name=d.name, host=host.name,
                                         marked_priority=marked, app=app, definition=d.xml,
                                         defined_at=self.clock()))
