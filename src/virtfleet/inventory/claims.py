"""The store's part for placement claims: room held on a hypervisor for a VM being made.

A claim is taken by the scheduler before a VM is defined (so two operations placing at once
cannot both fill the same host), settled into an observation once the VM exists, and released
if it fails; one that outlives its TTL (a killed CLI) stops counting by itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, or_, select

from virtfleet.errors import Conflict, InvalidInput
from virtfleet.inventory import tables as t
from virtfleet.inventory.base import chunks, utc
from virtfleet.inventory.observations import ObservationStore, domain_row
from virtfleet.inventory.records import DomainRecord
from virtfleet.validate import check_name

DEFAULT_CLAIM_TTL = timedelta(minutes=15)


@dataclass(frozen=True)
class ClaimRequest:
    """Room wanted on `host` for `vm`, and the host's limits under the placement policy."""

    host: str
    vm: str
    vcpus: int
    memory_mib: int
    vcpu_limit: int
    memory_limit_mib: int


@dataclass(frozen=True)
class PlacementClaim:
    host: str
    vm: str
    vcpus: int
    memory_mib: int
    created_at: datetime
    expires_at: datetime

    def as_json(self) -> dict[str, object]:
        return {"host": self.host, "vm": self.vm, "vcpus": self.vcpus,
                "memory_mib": self.memory_mib, "created_at": self.created_at.isoformat(),
                "expires_at": self.expires_at.isoformat()}


class ClaimStore(ObservationStore):
    """placement_claims reads and writes; settling a claim records its VM as observed, in
    the same transaction, so it is an ObservationStore too."""

    def claim_placements(self, wanted: Sequence[ClaimRequest], *,
                         ttl: timedelta = DEFAULT_CLAIM_TTL,
                         now: datetime | None = None) -> list[PlacementClaim]:
        """Hold room for every VM in `wanted`, or for none (Conflict naming the host and the
        resource that would be overbooked).

        The check and the insert are one transaction that holds the hosts: SQLite's BEGIN
        IMMEDIATE takes the database write lock, PostgreSQL locks the hypervisor rows (in id
        order, so two batches cannot deadlock). A host's usage is its observed VMs plus its live
        claims; a VM that is both observed and claimed counts once.
        """
        at = utc(now or datetime.now(UTC), "now")
        if ttl <= timedelta(0):
            raise InvalidInput("ttl", "must be positive")
        for w in wanted:
            check_name("vm", w.vm)
            for what, v in (("vcpus", w.vcpus), ("memory_mib", w.memory_mib)):
                if v <= 0:
                    raise InvalidInput(what, f"must be positive (got {v})")
        if not wanted:
            return []
        h, d, c = t.hypervisors, t.domains, t.placement_claims
        names = list(dict.fromkeys(w.host for w in wanted))
        with self._tx("claim placement", write=True) as conn:
            ids = self._host_ids(conn, names)
            if self._backend == "postgresql":
                conn.execute(select(h.c.id).where(h.c.id.in_(sorted(ids.values())))
                             .order_by(h.c.id).with_for_update())
            live = c.c.expires_at > at
            used: dict[int, list[int]] = {i: [0, 0] for i in ids.values()}
            for hid, cpu, mem in conn.execute(
                select(c.c.hypervisor_id, func.sum(c.c.vcpus), func.sum(c.c.memory_mib))
                .where(c.c.hypervisor_id.in_(list(ids.values())), live)
                .group_by(c.c.hypervisor_id)):
                used[hid] = [int(cpu), int(mem)]
            claimed = (select(c.c.id).where(c.c.hypervisor_id == d.c.hypervisor_id,
                                            c.c.vm_name == d.c.name, live).exists())
            for hid, cpu, mem in conn.execute(
                select(d.c.hypervisor_id, func.sum(d.c.vcpus), func.sum(d.c.memory_mib))
                .where(d.c.hypervisor_id.in_(list(ids.values())), ~claimed)
                .group_by(d.c.hypervisor_id)):
                used[hid][0] += int(cpu)
                used[hid][1] += int(mem)
            # A VM being claimed that is already observed there is counted by its claim.
            batch = {(ids[w.host], w.vm) for w in wanted}
            for chunk in chunks(sorted({w.vm for w in wanted})):
                for hid, name, cpu, mem in conn.execute(
                    select(d.c.hypervisor_id, d.c.name, d.c.vcpus, d.c.memory_mib)
                    .where(d.c.hypervisor_id.in_(list(ids.values())), d.c.name.in_(chunk),
                           ~claimed)):
                    if (hid, name) in batch:
                        used[hid][0] -= cpu
                        used[hid][1] -= mem
            rows = []
            for w in wanted:
                u = used[ids[w.host]]
                for k, (what, need, limit) in enumerate((("vcpus", w.vcpus, w.vcpu_limit), (
                        "memory", w.memory_mib, w.memory_limit_mib))):
                    if u[k] + need > limit:
                        raise Conflict(f"claim {w.vm!r} on {w.host}: {what} would be overbooked "
                                       f"({u[k]} used or claimed + {need} > limit {limit})")
                u[0] += w.vcpus
                u[1] += w.memory_mib
                rows.append({"hypervisor_id": ids[w.host], "vm_name": w.vm, "vcpus": w.vcpus,
                             "memory_mib": w.memory_mib, "created_at": at,
                             "expires_at": at + ttl})
            # An expired claim for the same VM would block the insert; it no longer counts.
            conn.execute(delete(c).where(c.c.hypervisor_id.in_(list(ids.values())), ~live))
            conn.execute(c.insert(), rows)
        return [PlacementClaim(host=w.host, vm=w.vm, vcpus=w.vcpus, memory_mib=w.memory_mib,
                               created_at=at, expires_at=at + ttl) for w in wanted]

    def release_placement(self, host: str, vm: str) -> bool:
        """Give back `vm`'s room on `host` (done, or failed). False if there was no claim."""
        c = t.placement_claims
        with self._tx(f"release claim {vm!r}", write=True) as conn:
            hid = self._host_ids(conn, [host])[host]
            n = conn.execute(delete(c).where(c.c.hypervisor_id == hid,
                                             c.c.vm_name == vm)).rowcount
        return bool(n)

    def settle_placement(self, host: str, domain: DomainRecord,
                         observed_at: datetime | None = None) -> bool:
        """`domain` is now defined on `host`: it is recorded as observed there and its claim
        goes, in one transaction, so its room stays counted (by the observation) and its name
        stays taken fleet-wide without waiting for a sync. False if there was no claim."""
        at = utc(observed_at or datetime.now(UTC), "observed_at")
        c = t.placement_claims
        with self._tx(f"settle claim {domain.name!r}", write=True) as conn:
            hid = self._host_ids(conn, [host])[host]
            conn.execute(self._upsert_domain, [domain_row(hid, domain, at)])
            n = conn.execute(delete(c).where(c.c.hypervisor_id == hid,
                                             c.c.vm_name == domain.name)).rowcount
        return bool(n)

    def forget_vm(self, host: str, name: str, uuid: str | None = None) -> None:
        """`name` is no longer defined on `host` (undefined, or rolled back): its observation
        and any claim for it there go, so its name and room are free again at once."""
        c, d = t.placement_claims, t.domains
        with self._tx(f"forget VM {name!r}", write=True) as conn:
            hid = self._host_ids(conn, [host])[host]
            conn.execute(delete(c).where(c.c.hypervisor_id == hid, c.c.vm_name == name))
            gone = d.c.name == name if uuid is None else or_(d.c.uuid == uuid, d.c.name == name)
            conn.execute(delete(d).where(d.c.hypervisor_id == hid, gone))

    def placement_claims(self, *, host: str | None = None,
                         now: datetime | None = None) -> list[PlacementClaim]:
        """Live (unexpired) claims, by host and VM name."""
        at = utc(now or datetime.now(UTC), "now")
        c, h = t.placement_claims, t.hypervisors
        stmt = (select(h.c.name, c.c.vm_name, c.c.vcpus, c.c.memory_mib, c.c.created_at,
                       c.c.expires_at).join_from(c, h).where(c.c.expires_at > at)
                .order_by(h.c.name, c.c.vm_name))
        if host is not None:
            stmt = stmt.where(h.c.name == host)
        with self._tx("list placement claims", write=False) as conn:
            if host is not None:
                self._host_ids(conn, [host])
            rows = conn.execute(stmt).all()
        return [PlacementClaim(host=r[0], vm=r[1], vcpus=r[2], memory_mib=r[3],
                               created_at=r[4], expires_at=r[5]) for r in rows]
