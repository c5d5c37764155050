"""The store's part for the inventory's topology: sites, pods, host groups and hypervisors.

`apply` makes the inventory equal a fleet file in one transaction (and `plan_apply` says what
that would change, writing nothing); `add_hypervisor` and `remove_hypervisor` change one host;
`hypervisors` and `fleet` read it back. Both compare a snapshot of the whole inventory, read in
a handful of bulk statements, with the fleet file, so an apply of 1,500 hypervisors is a handful
of statements too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Table, bindparam, delete, func, select, update

from virtfleet.errors import Conflict, InvalidInput, NotFound
from virtfleet.inventory import tables as t
from virtfleet.inventory.base import PG_APPLY_LOCK, StoreBase, chunks, unique
from virtfleet.inventory.records import ApplyPlan, HostRecord
from virtfleet.validate import check_name

if TYPE_CHECKING:
    from virtfleet.inventory.fleetfile import BmcSpec, Fleet, Hypervisor, PodStorage


def _list(names: Sequence[str]) -> str:
    return "[" + ", ".join(names) + "]"


def _fmt_storage(st: PodStorage | None) -> str:
    if st is None:
        return "none"
    out = f"{st.type} {st.source or '-'} at {st.target}"
    return out + (f" pool {st.pool}" if st.pool else "")


def _storage_cols(st: PodStorage | None) -> dict[str, str | None]:
    if st is None:
        return {"storage_type": None, "storage_source": None, "storage_target": None,
                "storage_pool": None}
    return {"storage_type": st.type, "storage_source": st.source, "storage_target": st.target,
            "storage_pool": st.pool}


def _pod_cols(st: PodStorage | None, insecure: bool) -> dict[str, str | bool | None]:
    return {**_storage_cols(st), "insecure_transport": insecure}


def _insecure_uri(uri: str) -> bool:
    from virtfleet.inventory.fleetfile import INSECURE_TRANSPORTS

    return uri.split("://", 1)[0].partition("+")[2] in INSECURE_TRANSPORTS


def _bmc_json(bmc: BmcSpec) -> str:
    # The model has no password field to dump (a password key is refused when loaded).
    return json.dumps(bmc.model_dump(mode="json", exclude_none=True), sort_keys=True)


def _bmc_words(spec: str | None) -> str:
    if spec is None:
        return "none"
    data = json.loads(spec)
    port = data.get("port")
    return f"{data['agent']} {data['address']}" + (f":{port}" if port else "")


def fleet_ha(conn: Connection) -> tuple[dict[str, str], dict[str, int]]:
    """The stored BMC specs by host name and group priorities by group name."""
    h, b, g, gh = t.hypervisors, t.hypervisor_bmcs, t.host_groups, t.group_ha
    bmcs = {n: s for n, s in conn.execute(select(h.c.name, b.c.spec).join_from(b, h))}
    groups = {n: int(p) for n, p in conn.execute(select(g.c.name, gh.c.priority)
                                                  .join_from(gh, g))}
    return bmcs, groups


# --------------------------------------------------------------------------- inventory snapshot


@dataclass(frozen=True)
class _PodSnap:
    id: int
    site: str
    storage: PodStorage | None
    insecure: bool = False  # the fleet file's insecure_transport


@dataclass(frozen=True)
class _HostSnap:
    id: int
    uri: str
    pod: str
    groups: tuple[str, ...]
    maintenance: bool


@dataclass(frozen=True)
class _Snap:
    groups: dict[str, tuple[int, str]]  # name -> (id, description)
    sites: dict[str, tuple[int, str]]
    pods: dict[str, _PodSnap]
    hosts: dict[str, _HostSnap]


@dataclass(frozen=True)
class _Desired:
    groups: dict[str, str]  # name -> description
    sites: dict[str, str]
    pods: dict[str, tuple[str, PodStorage | None, bool]]  # name -> (site, storage, insecure)
    hosts: dict[str, tuple[str, Hypervisor]]  # name -> (pod, hypervisor)

    @classmethod
    def of(cls, fleet: Fleet) -> _Desired:
        declared = {g.name: g.description for g in fleet.groups}
        return cls(
            groups={n: declared.get(n, "") for n in fleet.group_names()},
            sites={s.name: s.description for s in fleet.sites},
            pods={p.name: (s.name, p.storage, p.insecure_transport)
                  for s in fleet.sites for p in s.pods},
            hosts={h.name: (p.name, h) for _, p, h in fleet.hypervisors()},
        )


def _plan(snap: _Snap, want: _Desired, vm_counts: dict[int, int]) -> ApplyPlan:
    plan = ApplyPlan()
    for name in sorted(want.sites):
        desc = want.sites[name]
        if name not in snap.sites:
            plan.added.append(("site", name, desc))
        elif snap.sites[name][1] != desc:
            plan.changed.append(("site", name, f"description: {snap.sites[name][1]!r} -> {desc!r}"))
    for name in sorted(want.pods):
        site, storage, insecure = want.pods[name]
        have = snap.pods.get(name)
        if have is None:
            plan.added.append(("pod", name, f"in site {site}"))
            continue
        if have.site != site:
            plan.changed.append(("pod", name, f"moved to site {site}"))
        if have.storage != storage:
            plan.changed.append(
                ("pod", name, f"storage: {_fmt_storage(have.storage)} -> {_fmt_storage(storage)}")
            )
        if have.insecure != insecure:
            onoff = {True: "true", False: "false"}
            plan.changed.append(("pod", name, f"insecure_transport: {onoff[have.insecure]} -> "
                                 f"{onoff[insecure]}"))
    for name in sorted(want.hosts):
        pod, hv = want.hosts[name]
        groups = unique(hv.groups)
        h = snap.hosts.get(name)
        if h is None:
            plan.added.append(("hypervisor", name, f"in pod {pod}: {hv.uri}"))
            continue
        if h.uri != hv.uri:
            plan.changed.append(("hypervisor", name, f"uri: {h.uri} -> {hv.uri}"))
        if h.pod != pod:
            plan.changed.append(("hypervisor", name, f"moved to pod {pod}"))
        if h.groups != groups:
            plan.changed.append(
                ("hypervisor", name, f"groups: {_list(h.groups)} -> {_list(groups)}")
            )
        if h.maintenance != hv.maintenance:
            onoff = {True: "on", False: "off"}
            plan.changed.append(
                ("hypervisor", name,
                 f"maintenance: {onoff[h.maintenance]} -> {onoff[hv.maintenance]}")
            )
    for name in sorted(want.groups):
        desc = want.groups[name]
        if name not in snap.groups:
            plan.added.append(("group", name, desc))
        elif snap.groups[name][1] != desc:
            plan.changed.append(
                ("group", name, f"description: {snap.groups[name][1]!r} -> {desc!r}")
            )

    for name in sorted(set(snap.sites) - set(want.sites)):
        plan.removed.append(("site", name, ""))
    for name in sorted(set(snap.pods) - set(want.pods)):
        plan.removed.append(("pod", name, f"in site {snap.pods[name].site}"))
    for name in sorted(set(snap.hosts) - set(want.hosts)):
        h = snap.hosts[name]
        n = vm_counts.get(h.id, 0)
        detail = f"in pod {h.pod}" + (f"; forgets {n} observed VM{'s' * (n != 1)}" if n else "")
        plan.removed.append(("hypervisor", name, detail))
    for name in sorted(set(snap.groups) - set(want.groups)):
        plan.removed.append(("group", name, ""))
    return plan


def _put_described(conn: Connection, table: Table, have: dict[str, tuple[int, str]],
                   want: dict[str, str]) -> None:
    """Insert the named rows (groups, sites) `want` has and `have` lacks, and set the
    descriptions that changed, in one statement each; removals come later, after what refers
    to them."""
    new = [{"name": n, "description": d} for n, d in want.items() if n not in have]
    if new:
        conn.execute(table.insert(), new)
    upd = [{"b_id": have[n][0], "b_desc": d} for n, d in want.items()
           if n in have and have[n][1] != d]
    if upd:
        conn.execute(update(table).where(table.c.id == bindparam("b_id"))
                     .values(description=bindparam("b_desc")), upd)


def bmc_required(pod: str, host: str) -> InvalidInput:
    """The refusal of a BMC-less hypervisor in a pod where HA is on (`apply`, `host add`):
    the controller could not fence it, so its VMs would stay down when it fails."""
    return InvalidInput("bmc", f"missing: HA is enabled in pod {pod}, so every hypervisor "
                        "there needs a BMC to be fenced with (or run "
                        f"'virtfleet ha disable {pod}' first)", host=host)


class TopologyStore(StoreBase):
    """sites, pods, host_groups, hypervisors and hypervisor_groups reads and writes."""

    @staticmethod
    def _name_ids(conn: Connection, table: Table,
                  names: Sequence[str] | None = None) -> dict[str, int]:
        stmt = select(table.c.name, table.c.id)
        if names is not None:
            stmt = stmt.where(table.c.name.in_(names))
        return {n: i for n, i in conn.execute(stmt)}

    @staticmethod
    def _snapshot(conn: Connection) -> _Snap:
        from virtfleet.inventory.fleetfile import PodStorage

        groups = {n: (i, d) for i, n, d in conn.execute(
            select(t.host_groups.c.id, t.host_groups.c.name, t.host_groups.c.description))}
        sites = {n: (i, d) for i, n, d in conn.execute(
            select(t.sites.c.id, t.sites.c.name, t.sites.c.description))}
        p = t.pods
        pods: dict[str, _PodSnap] = {}
        for row in conn.execute(
            select(p.c.id, p.c.name, t.sites.c.name, p.c.storage_type, p.c.storage_source,
                   p.c.storage_target, p.c.storage_pool, p.c.insecure_transport)
            .join_from(p, t.sites)
        ):
            storage = None
            if row[3] is not None:
                storage = PodStorage(type=row[3], source=row[4] or "",
                                     target=row[5] or "/", pool=row[6])
            pods[row[1]] = _PodSnap(id=row[0], site=row[2], storage=storage,
                                    insecure=bool(row[7]))
        member: dict[int, list[str]] = {}
        for hid, gname in conn.execute(
            select(t.hypervisor_groups.c.hypervisor_id, t.host_groups.c.name)
            .join_from(t.hypervisor_groups, t.host_groups)
            .order_by(t.hypervisor_groups.c.hypervisor_id, t.hypervisor_groups.c.position)
        ):
            member.setdefault(hid, []).append(gname)
        h = t.hypervisors
        hosts = {
            name: _HostSnap(id=hid, uri=uri, pod=pname, groups=tuple(member.get(hid, ())),
                            maintenance=bool(maint))
            for hid, name, uri, maint, pname in conn.execute(
                select(h.c.id, h.c.name, h.c.uri, h.c.maintenance, t.pods.c.name)
                .join_from(h, t.pods))
        }
        return _Snap(groups=groups, sites=sites, pods=pods, hosts=hosts)

    @staticmethod
    def _vm_counts(conn: Connection, host_ids: Sequence[int]) -> dict[int, int]:
        counts: dict[int, int] = {}
        d = t.domains
        for chunk in chunks(host_ids):
            counts.update({hid: n for hid, n in conn.execute(
                select(d.c.hypervisor_id, func.count()).where(d.c.hypervisor_id.in_(chunk))
                .group_by(d.c.hypervisor_id))})
        return counts

    def fleet(self) -> Fleet:
        """The whole inventory as a Fleet: groups, then sites, pods and hypervisors by name."""
        from virtfleet.inventory.fleetfile import (
            Fleet,
            GroupHA,
            HostGroup,
            Hypervisor,
            Pod,
            Site,
        )

        with self._tx("read the inventory", write=False) as conn:
            snap = self._snapshot(conn)
            bmcs, group_ha = self._ha_fleet_parts(conn)
        hosts_by_pod: dict[str, list[str]] = {}
        for name, h in snap.hosts.items():
            hosts_by_pod.setdefault(h.pod, []).append(name)
        pods_by_site: dict[str, list[str]] = {}
        for name, p in snap.pods.items():
            pods_by_site.setdefault(p.site, []).append(name)
        sites = []
        for sname in sorted(snap.sites):
            pods = []
            for pname in sorted(pods_by_site.get(sname, [])):
                hvs = tuple(
                    Hypervisor(name=n, uri=snap.hosts[n].uri, groups=snap.hosts[n].groups,
                               maintenance=snap.hosts[n].maintenance, bmc=bmcs.get(n))
                    for n in sorted(hosts_by_pod.get(pname, []))
                )
                pods.append(Pod(name=pname, storage=snap.pods[pname].storage, hypervisors=hvs,
                                insecure_transport=snap.pods[pname].insecure))
            sites.append(Site(name=sname, description=snap.sites[sname][1], pods=tuple(pods)))
        groups = tuple(HostGroup(name=n, description=snap.groups[n][1],
                                 ha=GroupHA(priority=group_ha[n]) if n in group_ha else None)
                       for n in sorted(snap.groups))
        return Fleet(groups=groups, sites=tuple(sites))

    def plan_apply(self, fleet: Fleet) -> ApplyPlan:
        """What apply(fleet) would add, change and remove. Writes nothing."""
        with self._tx("plan the inventory change", write=False) as conn:
            snap = self._snapshot(conn)
            want = _Desired.of(fleet)
            gone = [h.id for n, h in snap.hosts.items() if n not in want.hosts]
            plan = _plan(snap, want, self._vm_counts(conn, gone))
            self._plan_ha(conn, fleet, plan, set(snap.hosts), set(snap.groups))
            return plan

    def apply(self, fleet: Fleet) -> ApplyPlan:
        """Make the inventory equal `fleet`, all in one transaction, and say what changed.

        What the fleet no longer has is removed, with the observed VMs and status of removed
        hypervisors. Observed VMs of hypervisors that stay (even in another pod) are kept.
        """
        with self._tx("apply the fleet file", write=True) as conn:
            self._pg_lock(conn, PG_APPLY_LOCK)
            snap = self._snapshot(conn)
            want = _Desired.of(fleet)
            gone = [h.id for n, h in snap.hosts.items() if n not in want.hosts]
            plan = _plan(snap, want, self._vm_counts(conn, gone))
            self._plan_ha(conn, fleet, plan, set(snap.hosts), set(snap.groups))
            if not plan.empty:
                self._apply(conn, snap, want, gone)
                self._apply_ha(conn, fleet)
            return plan

    def _apply(self, conn: Connection, snap: _Snap, want: _Desired, gone: list[int]) -> None:
        sites, pods, groups, hyp, hg = t.sites, t.pods, t.host_groups, t.hypervisors, \
            t.hypervisor_groups

        # Groups and sites first: pods and hypervisors refer to them.
        _put_described(conn, groups, snap.groups, want.groups)
        _put_described(conn, sites, snap.sites, want.sites)
        site_ids = self._name_ids(conn, sites)
        group_ids = self._name_ids(conn, groups)

        # Pods: new ones, and those that moved site or changed storage or insecure_transport.
        new_pods: list[dict[str, Any]] = [
            {"name": n, "site_id": site_ids[s], **_pod_cols(st, insecure)}
            for n, (s, st, insecure) in want.pods.items() if n not in snap.pods
        ]
        if new_pods:
            conn.execute(pods.insert(), new_pods)
        upd_pods: list[dict[str, Any]] = []
        for n, (s, st, insecure) in want.pods.items():
            have_pod = snap.pods.get(n)
            if have_pod is not None and (have_pod.site, have_pod.storage, have_pod.insecure) \
                    != (s, st, insecure):
                cols = _pod_cols(st, insecure)
                upd_pods.append({"b_id": have_pod.id, "b_site": site_ids[s],
                                 **{f"b_{k}": v for k, v in cols.items()}})
        if upd_pods:
            conn.execute(
                update(pods).where(pods.c.id == bindparam("b_id")).values(
                    site_id=bindparam("b_site"),
                    **{k: bindparam(f"b_{k}") for k in _pod_cols(None, False)},
                ),
                upd_pods,
            )
        pod_ids = self._name_ids(conn, pods)

        # Hypervisors: drop the removed (their VMs, status and group rows go by cascade), then
        # change the kept, then add the new, so a uri can pass from one hypervisor to another.
        for chunk in chunks(gone):
            conn.execute(delete(hyp).where(hyp.c.id.in_(chunk)))
        changed = []
        regroup: list[tuple[int, tuple[str, ...]]] = []
        for n, (p, hv) in want.hosts.items():
            have = snap.hosts.get(n)
            if have is None:
                continue
            if (have.uri, have.pod, have.maintenance) != (hv.uri, p, hv.maintenance):
                changed.append((have, p, hv))
            if have.groups != unique(hv.groups):
                regroup.append((have.id, unique(hv.groups)))
        moving_uri = [{"b_id": have.id, "b_uri": f"~moving~{have.id}"}
                      for have, _, hv in changed if have.uri != hv.uri]
        if moving_uri:  # park changing uris on unique placeholders first (swaps)
            conn.execute(update(hyp).where(hyp.c.id == bindparam("b_id"))
                         .values(uri=bindparam("b_uri")), moving_uri)
        if changed:
            conn.execute(
                update(hyp).where(hyp.c.id == bindparam("b_id")).values(
                    uri=bindparam("b_uri"), pod_id=bindparam("b_pod"),
                    maintenance=bindparam("b_maint"),
                ),
                [{"b_id": have.id, "b_uri": hv.uri, "b_pod": pod_ids[p],
                  "b_maint": hv.maintenance} for have, p, hv in changed],
            )
        new_hosts = [(n, p, hv) for n, (p, hv) in want.hosts.items() if n not in snap.hosts]
        if new_hosts:
            conn.execute(hyp.insert(), [
                {"name": n, "uri": hv.uri, "pod_id": pod_ids[p], "maintenance": hv.maintenance}
                for n, p, hv in new_hosts
            ])
            ids = self._host_ids(conn, [n for n, _, _ in new_hosts])
            regroup.extend((ids[n], unique(hv.groups)) for n, _, hv in new_hosts if hv.groups)
        if regroup:
            for chunk in chunks([hid for hid, _ in regroup]):
                conn.execute(delete(hg).where(hg.c.hypervisor_id.in_(chunk)))
            rows = [{"hypervisor_id": hid, "group_id": group_ids[g], "position": i}
                    for hid, gs in regroup for i, g in enumerate(gs)]
            if rows:
                conn.execute(hg.insert(), rows)

        # Now nothing refers to what is left over.
        for table, have_names, want_names in (
            (pods, {n: p.id for n, p in snap.pods.items()}, want.pods),
            (sites, {n: s[0] for n, s in snap.sites.items()}, want.sites),
            (groups, {n: g[0] for n, g in snap.groups.items()}, want.groups),
        ):
            drop = [i for n, i in have_names.items() if n not in want_names]
            for chunk in chunks(drop):
                conn.execute(delete(table).where(table.c.id.in_(chunk)))

    # ----------------------------------------------------------- HA in the fleet file

    @staticmethod
    def _ha_want(fleet: Fleet) -> tuple[dict[str, str], dict[str, int]]:
        bmcs = {hv.name: _bmc_json(hv.bmc) for _, _, hv in fleet.hypervisors()
                if hv.bmc is not None}
        groups = {grp.name: grp.ha.priority for grp in fleet.groups if grp.ha is not None}
        return bmcs, groups

    def _plan_ha(self, conn: Connection, fleet: Fleet, plan: ApplyPlan,
                 known_hosts: set[str], known_groups: set[str]) -> None:
        """Add the BMC and group-policy changes of hosts and groups that exist already (new
        ones are listed as added) to `plan`. A hypervisor without a BMC in a pod where HA is
        on is refused."""
        have_b, have_g = fleet_ha(conn)
        want_b, want_g = self._ha_want(fleet)
        enabled = {n for (n,) in conn.execute(select(t.pods.c.name).join_from(t.ha_pods,
                                                                           t.pods))}
        for _, pod, hv in fleet.hypervisors():
            if pod.name in enabled and hv.bmc is None:
                raise bmc_required(pod.name, hv.name)
        for name in sorted(known_hosts & {hv.name for _, _, hv in fleet.hypervisors()}):
            if have_b.get(name) != want_b.get(name):
                plan.changed.append(("hypervisor", name, f"bmc: {_bmc_words(have_b.get(name))}"
                                     f" -> {_bmc_words(want_b.get(name))}"))
        for name in sorted(known_groups & {g.name for g in fleet.groups}):
            old, new = have_g.get(name), want_g.get(name)
            if old != new:
                def words(p: int | None) -> str:
                    return "off" if p is None else f"priority {p}"
                plan.changed.append(("group", name, f"ha: {words(old)} -> {words(new)}"))

    def _apply_ha(self, conn: Connection, fleet: Fleet) -> None:
        """Make the stored BMCs and group policies the fleet file's (after the hosts and
        groups themselves were written, in the same transaction)."""
        want_b, want_g = self._ha_want(fleet)
        host_ids = {n: i for n, i in conn.execute(select(t.hypervisors.c.name,
                                                         t.hypervisors.c.id))}
        group_ids = {n: i for n, i in conn.execute(select(t.host_groups.c.name,
                                                          t.host_groups.c.id))}
        conn.execute(delete(t.hypervisor_bmcs))
        if want_b:
            conn.execute(t.hypervisor_bmcs.insert(), [
                {"hypervisor_id": host_ids[n], "spec": s} for n, s in want_b.items()])
        conn.execute(delete(t.group_ha))
        if want_g:
            conn.execute(t.group_ha.insert(), [
                {"group_id": group_ids[n], "priority": p} for n, p in want_g.items()])

    def _ha_fleet_parts(self, conn: Connection) -> tuple[dict[str, BmcSpec], dict[str, int]]:
        """What store.fleet() needs to write the fleet file back whole."""
        from virtfleet.inventory.fleetfile import BmcSpec

        have_b, have_g = fleet_ha(conn)
        return {n: BmcSpec.model_validate(json.loads(s)) for n, s in have_b.items()}, have_g

    def hypervisor_bmcs(self) -> dict[str, BmcSpec]:
        """Each hypervisor's BMC, by host name (hosts without one are absent)."""
        with self._tx("read the BMCs", write=False) as conn:
            return self._ha_fleet_parts(conn)[0]

    def group_ha(self) -> dict[str, int]:
        """Groups whose VMs are all HA, and their restart priority."""
        with self._tx("read the groups' HA policies", write=False) as conn:
            return fleet_ha(conn)[1]

    def add_hypervisor(self, site: str, pod: str, hv: Hypervisor, *,
                       insecure_transport: bool = False) -> None:
        """Add one hypervisor, creating its site, pod and groups if they do not exist yet.

        A qemu+tcp/test+tcp hypervisor needs a pod that allows it: an existing one whose fleet
        file said `insecure_transport: true`, or a new one made with `insecure_transport`.
        """
        check_name("site", site)
        check_name("pod", pod)
        hyp = t.hypervisors
        with self._tx(f"add hypervisor {hv.name!r}", write=True) as conn:
            self._pg_lock(conn, PG_APPLY_LOCK)
            if conn.execute(select(hyp.c.id).where(hyp.c.name == hv.name)).first() is not None:
                raise Conflict(f"hypervisor {hv.name!r} is already in the inventory")
            other = conn.execute(select(hyp.c.name).where(hyp.c.uri == hv.uri)).scalar()
            if other is not None:
                raise Conflict(f"uri {hv.uri!r} already belongs to hypervisor {other!r}")
            site_id = conn.execute(select(t.sites.c.id).where(t.sites.c.name == site)).scalar()
            if site_id is None:
                site_id = conn.execute(
                    t.sites.insert().values(name=site, description="")
                    .returning(t.sites.c.id)).scalar_one()
            row = conn.execute(
                select(t.pods.c.id, t.sites.c.name, t.pods.c.insecure_transport)
                .join_from(t.pods, t.sites).where(t.pods.c.name == pod)).first()
            allowed = insecure_transport if row is None else bool(row[2])
            if _insecure_uri(hv.uri) and not allowed:
                raise InvalidInput("uri", f"{hv.uri.split('://', 1)[0]} is neither encrypted "
                                   "nor authenticated: use qemu+ssh or qemu+tls, or add the "
                                   f"host to a pod whose fleet file sets insecure_transport: "
                                   f"true ({pod!r} does not)")
            if row is not None and hv.bmc is None and conn.execute(
                    select(t.ha_pods.c.pod_id).where(t.ha_pods.c.pod_id == row[0])).first():
                raise bmc_required(pod, hv.name)
            if row is None:
                pod_id = conn.execute(
                    t.pods.insert().values(name=pod, site_id=site_id,
                                           **_pod_cols(None, insecure_transport))
                    .returning(t.pods.c.id)).scalar_one()
            elif row[1] != site:
                raise Conflict(f"pod {pod!r} is in site {row[1]!r}, not {site!r}")
            else:
                pod_id = row[0]
            host_id = conn.execute(
                hyp.insert().values(name=hv.name, uri=hv.uri, pod_id=pod_id,
                                    maintenance=hv.maintenance)
                .returning(hyp.c.id)).scalar_one()
            names = unique(hv.groups)
            if names:
                g = t.host_groups
                have = self._name_ids(conn, g, names)
                missing = [{"name": n, "description": ""} for n in names if n not in have]
                if missing:
                    conn.execute(g.insert(), missing)
                    have = self._name_ids(conn, g, names)
                conn.execute(t.hypervisor_groups.insert(), [
                    {"hypervisor_id": host_id, "group_id": have[n], "position": i}
                    for i, n in enumerate(names)
                ])

    def remove_hypervisor(self, name: str) -> None:
        """Remove a hypervisor with its observed VMs and status. NotFound if it is not there."""
        hyp = t.hypervisors
        with self._tx(f"remove hypervisor {name!r}", write=True) as conn:
            if conn.execute(delete(hyp).where(hyp.c.name == name)).rowcount == 0:
                raise NotFound(f"hypervisor {name!r} is not in the inventory")

    def hypervisors(self, *, site: str | None = None, pod: str | None = None,
                    host: str | None = None, group: str | None = None) -> list[HostRecord]:
        """Hypervisors matching every filter given, sorted by site, pod and name. A host is in
        maintenance if the fleet file or an operator (`host maintenance`) says so."""
        h, hg, g = t.hypervisors, t.hypervisor_groups, t.host_groups
        conds = self._host_conditions(site=site, pod=pod, host=host, group=group)
        operator = select(t.host_maintenance.c.hypervisor_id).where(
            t.host_maintenance.c.hypervisor_id == h.c.id).exists()
        with self._tx("list hypervisors", write=False) as conn:
            self._check_filters(conn, site=site, pod=pod, host=host, group=group)
            base = h.join(t.pods, h.c.pod_id == t.pods.c.id).join(
                t.sites, t.pods.c.site_id == t.sites.c.id)
            rows = conn.execute(
                select(h.c.id, h.c.name, h.c.uri, t.sites.c.name, t.pods.c.name,
                       h.c.maintenance | operator)
                .select_from(base).where(*conds)
                .order_by(t.sites.c.name, t.pods.c.name, h.c.name)
            ).all()
            member: dict[int, list[str]] = {}
            ids = select(h.c.id).select_from(base).where(*conds)
            for hid, gname in conn.execute(
                select(hg.c.hypervisor_id, g.c.name).join_from(hg, g)
                .where(hg.c.hypervisor_id.in_(ids))
                .order_by(hg.c.hypervisor_id, hg.c.position)
            ):
                member.setdefault(hid, []).append(gname)
        return [
            HostRecord(name=name, uri=uri, site=sname, pod=pname,
                       groups=tuple(member.get(hid, ())), maintenance=bool(maint))
            for hid, name, uri, sname, pname, maint in rows
        ]
