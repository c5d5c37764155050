"""The store's part for observed state: the VMs each hypervisor last reported, and whether it
answered.

Written by `sync` and the controller (fleet/observed.py) and by operations that just made, moved
or removed a VM; read by `list --source store`, by finding a VM by name without asking every
host, and by placement claims (an observed VM takes room). A fleet sync of 1,500 hypervisors is
a handful of statements, and `fleet_vms` is one query whatever the fleet's size.
"""

from __future__ import annotations

from datetime import datetime
from functools import cached_property
from typing import Any

from sqlalchemy import Insert, Select, delete, select

from virtfleet.errors import NotFound
from virtfleet.inventory import tables as t
from virtfleet.inventory.base import StoreBase, chunks, utc
from virtfleet.inventory.records import DomainRecord, FleetVM, HostStatus


def domain_row(hypervisor_id: int, d: DomainRecord, at: datetime) -> dict[str, Any]:
    return {
        "hypervisor_id": hypervisor_id,
        "uuid": d.uuid,
        "name": d.name,
        "state": d.state,
        "libvirt_id": d.id,
        "vcpus": d.vcpus,
        "memory_mib": d.memory_mib,
        "template": d.template,
        "observed_at": at,
    }


class ObservationStore(StoreBase):
    """domains and host_status reads and writes."""

    @cached_property
    def _upsert_domain(self) -> Insert:
        return self._upsert(t.domains, ["hypervisor_id", "uuid"])

    @cached_property
    def _upsert_status(self) -> Insert:
        return self._upsert(t.host_status, ["hypervisor_id"])

    def replace_host_domains(self, host: str, domains: list[DomainRecord],
                             observed_at: datetime) -> None:
        """Record `domains` as the host's full VM list, seen at `observed_at`; mark it reachable."""
        self.replace_many({host: domains}, observed_at)

    def replace_many(self, results: dict[str, list[DomainRecord]], observed_at: datetime, *,
                     skip_unknown: bool = False) -> None:
        """replace_host_domains for many hosts in one transaction (what a fleet sync writes).

        NotFound (and nothing written) if a host is not in the inventory, unless
        `skip_unknown`: a sync that raced with `apply` then records the hosts that remain.
        """
        at = utc(observed_at, "observed_at")
        if not results:
            return
        h, d = t.hypervisors, t.domains
        names = list(results)
        seen = {name: {dom.uuid for dom in doms} for name, doms in results.items()}
        with self._tx("record observed VMs", write=True) as conn:
            self._guard(conn, names)
            # One query gives each host's id and the uuids it had until now.
            ids: dict[str, int] = {}
            stale: dict[int, list[str]] = {}
            for chunk in chunks(names):
                for hid, name, uuid in conn.execute(
                    select(h.c.id, h.c.name, d.c.uuid)
                    .select_from(h.outerjoin(d, d.c.hypervisor_id == h.c.id))
                    .where(h.c.name.in_(chunk))
                ):
                    ids[name] = hid
                    if uuid is not None and uuid not in seen[name]:
                        stale.setdefault(hid, []).append(uuid)
            for name in names:
                if name not in ids and not skip_unknown:
                    raise NotFound(f"hypervisor {name!r} is not in the inventory")
            rows = [domain_row(ids[host], dom, at)
                    for host, doms in results.items() if host in ids
                    for dom in {dm.uuid: dm for dm in doms}.values()]
            for hid, uuids in stale.items():
                for uuid_chunk in chunks(uuids):
                    conn.execute(delete(d).where(d.c.hypervisor_id == hid,
                                                 d.c.uuid.in_(uuid_chunk)))
            if rows:
                conn.execute(self._upsert_domain, rows)
            conn.execute(self._upsert_status, [
                {"hypervisor_id": hid, "reachable": True, "error": "", "observed_at": at}
                for hid in ids.values()
            ])

    def upsert_domain(self, host: str, domain: DomainRecord, observed_at: datetime) -> None:
        """One VM as just seen on `host` (a lifecycle event). Other hosts' rows are left alone:
        a migration's source reports its own undefine or stop."""
        at = utc(observed_at, "observed_at")
        with self._tx(f"record VM {domain.name!r}", write=True) as conn:
            self._guard(conn, [host])
            hid = self._host_ids(conn, [host])[host]
            conn.execute(self._upsert_domain, [domain_row(hid, domain, at)])

    def delete_domain(self, host: str, uuid: str) -> None:
        """Forget the VM `uuid` on `host` (undefined there). A no-op if the host lacks it."""
        d = t.domains
        with self._tx(f"forget VM {uuid}", write=True) as conn:
            self._guard(conn, [host])
            hid = self._host_ids(conn, [host])[host]
            conn.execute(delete(d).where(d.c.uuid == uuid, d.c.hypervisor_id == hid))

    def set_host_status(self, status: HostStatus) -> None:
        at = None if status.observed_at is None else utc(status.observed_at, "observed_at")
        with self._tx(f"record status of {status.host!r}", write=True) as conn:
            self._guard(conn, [status.host])
            hid = self._host_ids(conn, [status.host])[status.host]
            conn.execute(self._upsert_status, [{
                "hypervisor_id": hid, "reachable": status.reachable, "error": status.error,
                "observed_at": at,
            }])

    def host_statuses(self) -> list[HostStatus]:
        """Every recorded host status, sorted by host name."""
        s, h = t.host_status, t.hypervisors
        with self._tx("read host status", write=False) as conn:
            rows = conn.execute(
                select(h.c.name, s.c.reachable, s.c.error, s.c.observed_at)
                .join_from(s, h).order_by(h.c.name)
            ).all()
        return [HostStatus(host=n, reachable=bool(r), error=e or "", observed_at=at)
                for n, r, e, at in rows]

    def fleet_vms(self, *, site: str | None = None, pod: str | None = None,
                  host: str | None = None, group: str | None = None,
                  state: str | None = None, name: str | None = None) -> list[FleetVM]:
        """Observed VMs with their host, pod and site, sorted by site, pod, host and name.
        `name` finds one VM (wherever it was seen) without loading the whole fleet."""
        d, h = t.domains, t.hypervisors
        conds = self._host_conditions(site=site, pod=pod, host=host, group=group)
        if state is not None:
            conds.append(d.c.state == state)
        if name is not None:
            conds.append(d.c.name == name)
        stmt: Select[Any] = (
            select(h.c.name, t.sites.c.name, t.pods.c.name, d.c.name, d.c.uuid, d.c.state,
                   d.c.libvirt_id, d.c.vcpus, d.c.memory_mib, d.c.template,
                   d.c.observed_at)
            .select_from(d.join(h, d.c.hypervisor_id == h.c.id)
                         .join(t.pods, h.c.pod_id == t.pods.c.id)
                         .join(t.sites, t.pods.c.site_id == t.sites.c.id))
            .where(*conds)
            .order_by(t.sites.c.name, t.pods.c.name, h.c.name, d.c.name, d.c.uuid)
        )
        with self._tx("list VMs", write=False) as conn:
            self._check_filters(conn, site=site, pod=pod, host=host, group=group)
            rows = conn.execute(stmt).all()
        return [
            FleetVM(host=hn, site=sn, pod=pn, observed_at=at,
                    domain=DomainRecord(name=name, uuid=uuid, state=st, id=lid, vcpus=vcpus,
                                        memory_mib=mem, template=tpl))
            for hn, sn, pn, name, uuid, st, lid, vcpus, mem, tpl, at in rows
        ]
