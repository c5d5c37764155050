"""A host that answers again after a failure: its stale copies of HA VMs go.

The host still has the definitions it had when it failed; after a power loss they are shut off,
and autostart is off for every HA VM, so nothing started by itself. Each of its copies of an HA
VM that runs on another host of the pod (asked there by UUID, not trusted from the record), or
that the record places on another host that has it defined, is undefined here: only the
definition, never a disk or an NVRAM file, which the running copy uses. A copy that is active
here while another host has it too is not touched and is named.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from virtfleet.errors import VirtfleetError
from virtfleet.inventory.ha import RecoveryStep
from virtfleet.inventory.records import HostRecord
from virtfleet.inventory.store import Store
from virtfleet.virt import ha as vha
from virtfleet.virt.fanout import ConnectionPool, fan_out
from virtfleet.virt.host import Host

log = logging.getLogger("virtfleet.ha")


@dataclass(frozen=True)
class Reconciled:
    removed: tuple[RecoveryStep, ...]  # stale copies undefined, as journal steps
    problems: tuple[str, ...]  # copies left alone, and why


def reconcile(store: Store, pool: ConnectionPool, host: HostRecord,
              pod_hosts: Sequence[HostRecord], answering: frozenset[str],
              clock: Callable[[], datetime]) -> Reconciled:
    """Undefine `host`'s copies of HA VMs that run on another host of its pod, or that the
    record places on another host that has them defined."""
    seconds = pool.timeouts.call
    h = pool.get(host)
    mine = {d.uuid: d for d in h.list_domains()}
    others = [r for r in pod_hosts if r.name != host.name and r.name in answering]
    removed: list[RecoveryStep] = []
    problems: list[str] = []
    for vm in store.ha_vms(host=None):
        if vm.uuid not in mine:
            continue
        found = fan_out(others, functools.partial(_find, uuid=vm.uuid, seconds=seconds),
                        pool)
        copies = [r.value for r in found if r.value is not None]
        active = [c for c in copies if c.active]
        recorded = [c for c in copies if c.host == vm.host]
        if not active and not recorded:
            if copies:
                problems.append(f"{vm.name}: also defined on {copies[0].host}; which copy "
                                "is current is not known, so both stay")
            elif vm.host != host.name:
                store.move_ha_vm(vm.uuid, host.name)  # the only copy: it is here
            continue
        where = (active or recorded)[0].host
        try:
            gone = vha.undefine_stale(h, vm.uuid, seconds)
        except VirtfleetError as exc:
            problems.append(f"{vm.name}: {exc.message}")
            log.error("HA: stale copy of %s on %s left: %s", vm.name, host.name, exc.message)
            continue
        if gone is not None:
            removed.append(RecoveryStep("stale-undefined", clock(), vm=vm.name, uuid=vm.uuid,
                                        host=host.name, detail=f"it is defined on {where}"))
            store.delete_domain(host.name, vm.uuid)
    return Reconciled(tuple(removed), tuple(problems))


def _find(host: Host, *, uuid: str, seconds: float) -> vha.Copy | None:
    return vha.find(host, uuid, seconds)
