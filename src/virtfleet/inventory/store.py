"""The inventory store: desired state (the fleet file) and observed state (what libvirt reported).

SQLite by default, PostgreSQL by URL. Opening a Store upgrades its database to the newest schema
(alembic migrations shipped in this package, run in code; no alembic.ini). Every public method is
one transaction; database failures come out as StoreError (or Conflict when a constraint says
no), with a one-line message, never a SQLAlchemy traceback.

Store is the one object callers get; its methods are written by concern, each in a module of
its own over the engine and transaction helper they share (base.py):

    topology.py      sites, pods, groups, hypervisors: apply, plan_apply, fleet, hypervisors
    observations.py  the VMs each hypervisor reported and whether it answered; fleet_vms
    claims.py        placement claims: room held for a VM being made
    vmlocks.py       one operation at a time on a VM
    journal.py       the operations journal
    installs.py      network installs (`boot serve`)
    controllers.py   the running controller's registration
    leases.py        several controllers on PostgreSQL: their registrations, shard leases
                     and fencing tokens (fencing.py checks writes against them)
    maintenance.py   hypervisors an operator took out of service
    access.py        API users, their tokens (hashed) and grants
    audit.py         the audit log of writes (append-only)
    ha.py            high availability: HA pods, HA VMs and their definitions, host HA
                     states, recovery journals

A new concern adds a module like these (a StoreBase subclass over its own tables) and a base
below; nothing that calls the store changes.
"""

from __future__ import annotations

from virtfleet.inventory.access import AccessStore
from virtfleet.inventory.audit import AuditStore
from virtfleet.inventory.claims import ClaimStore
from virtfleet.inventory.controllers import ControllerRegistry
from virtfleet.inventory.ha import HAStore
from virtfleet.inventory.installs import InstallStore
from virtfleet.inventory.journal import JournalStore
from virtfleet.inventory.leases import LeaseStore
from virtfleet.inventory.maintenance import MaintenanceStore
from virtfleet.inventory.topology import TopologyStore
from virtfleet.inventory.vmlocks import LockStore


class Store(TopologyStore, ClaimStore, LockStore, JournalStore, InstallStore, ControllerRegistry,
            MaintenanceStore, HAStore, AccessStore, AuditStore, LeaseStore):
    """The inventory and observed state of the fleet, in one SQL database (see the module
    docstring for which module holds which methods)."""


__all__ = ["Store"]
