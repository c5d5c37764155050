"""Finding a VM by name anywhere in the fleet, and holding it for one operation.

VM names are unique fleet-wide (virtfleet refuses to create a duplicate), so an operator names
a VM, never its hypervisor. The store's last observation says where to look first; if the VM
is not there any more (migrated, or the store is stale), every hypervisor in scope is asked
(one cheap lookup each, through the fan-out, so a dead host costs one deadline).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from virtfleet.errors import Conflict, HostUnavailable, NotFound
from virtfleet.fleet.queries import failures
from virtfleet.fleet.scope import FleetService
from virtfleet.inventory.records import HostRecord
from virtfleet.inventory.store import Store
from virtfleet.placement.policy import Policy
from virtfleet.provision.locks import vm_lock
from virtfleet.validate import check_name
from virtfleet.virt.fanout import ConnectionPool, fan_out
from virtfleet.virt.guest import Guest


class VMFinder(FleetService):
    """The base of the services that act on VMs named anywhere in the fleet.

    Its own pool keeps connections open until close(): a Guest found here must stay usable
    through the fan-outs that come after (an undefine asks the whole pod who else uses the
    VM's disks, the VM's own host included)."""

    def __init__(self, store: Store, pool: ConnectionPool | None = None, *,
                 policy: Policy | None = None) -> None:
        super().__init__(store, pool, keep_open=True)
        self.policy = policy or Policy()  # where new VMs may go (create, clone)

    def guest(self, vm: str, host: str | None = None) -> Guest:
        """The VM `vm`, wherever it is (`host`: only there)."""
        check_name("vm", vm)
        record = locate_vm(vm, self.store, self.pool, host=host)
        return Guest.lookup(self.pool.get(record), vm)

    @contextmanager
    def held(self, vm: str, host: str | None, operation: str) -> Iterator[Guest]:
        """The VM, locked for `operation`: a concurrent one on the same VM gets 'busy'."""
        guest = self.guest(vm, host)
        with vm_lock(self.store, lock_key(guest), operation):
            yield guest


def lock_key(guest: Guest) -> str:
    """A VM is its name on its hypervisor: two hosts may carry VMs of the same name (made
    outside virtfleet, or copies), and each is its own VM to lock."""
    return f"{guest.host.label}/{guest.name}"


def locate_vm(name: str, store: Store, pool: ConnectionPool, *, host: str | None = None
              ) -> HostRecord:
    """The hypervisor that has VM `name` defined. NotFound, or Conflict if several have it."""
    hosts = store.hypervisors(host=host)
    by_name = {h.name: h for h in hosts}
    hinted = list(dict.fromkeys(v.host for v in store.fleet_vms(host=host, name=name)
                                if v.host in by_name))
    if len(hinted) == 1:
        [r] = fan_out([by_name[hinted[0]]], lambda h: h.has_domain(name), pool)
        if r.value:
            return r.host
    results = fan_out(hosts, lambda h: h.has_domain(name), pool)
    holders = [r.host for r in results if r.value]
    if len(holders) == 1:
        return holders[0]
    if len(holders) > 1:
        names = ", ".join(h.name for h in holders)
        raise Conflict(f"VM {name!r} is defined on several hypervisors ({names}); "
                       "say which with --host")
    where = f"hypervisor {host!r}" if host else "any hypervisor of the inventory"
    failed = failures(results)
    seen_on = next((f for f in failed if f.host in hinted), None)
    if seen_on is not None:  # not "not found": where it last was cannot be asked
        raise HostUnavailable(f"the hypervisor it was last seen on did not answer "
                              f"({seen_on.message})", host=seen_on.host, vm=name)
    missing = ""
    if failed:  # the search could not be complete: say so rather than a flat "not found"
        shown = ", ".join(f.host for f in failed[:5]) + (", ..." if len(failed) > 5 else "")
        missing = f" ({len(failed)} hypervisor(s) did not answer: {shown})"
    raise VMNotFound(f"VM {name!r} is not defined on {where}{missing}", missing)


class VMNotFound(NotFound):
    """No hypervisor asked has the VM; `searched` says which could not be asked (or "")."""

    def __init__(self, detail: str, searched: str) -> None:
        super().__init__(detail)
        self.searched = searched
