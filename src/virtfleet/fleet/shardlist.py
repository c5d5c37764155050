"""`list` and `sync` over several controllers sharing a PostgreSQL store (docs/scale-out.md).

Each controller watches only the sites it leases, so a fleet-wide list asks each live lease
holder for its sites' VMs, and asks the hypervisors of every other site itself (a site whose
lease expired, whose controller died, or one that did not answer in time): the rows are as
fresh as a single controller's would be, whichever controllers are up. A sync goes through
each live holder (so its own view is refreshed) and syncs the other sites' hosts from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from virtfleet.controller.client import ControllerClient, runs_here
from virtfleet.errors import HostUnavailable, NotFound
from virtfleet.fleet.observed import observe, sync
from virtfleet.fleet.queries import counting, failures, fleet_vms
from virtfleet.inventory.records import HostFailure, HostRecord

if TYPE_CHECKING:
    from virtfleet.fleet.overview import ListRequest, Synced, VMList
    from virtfleet.fleet.scope import Progress
    from virtfleet.inventory.leases import Member
    from virtfleet.inventory.store import Store


def from_controllers(store: Store, req: ListRequest, notes: list[str],
                     progress: Progress | None = None) -> VMList | None:
    """The VMs in `req`'s scope from the controllers that lease their sites, the rest asked
    live; None when no controller holds any site in scope (the caller asks live)."""
    from virtfleet.fleet.overview import VMList

    hosts = store.hypervisors(**req.scope)
    by_site: dict[str, list[HostRecord]] = {}
    for h in hosts:
        by_site.setdefault(h.site, []).append(h)
    # Live by their unexpired leases (whatever TTL the controllers were given), and here.
    holders = store.holders()
    asked: dict[str, tuple[Member, list[str]]] = {}
    for site in by_site:
        member = holders.get(site)
        if member is not None and runs_here(member.record):
            asked.setdefault(member.holder, (member, []))[1].append(site)
    if not asked:
        return None
    rows: list[dict[str, Any]] = []
    failed: list[HostFailure] = []
    covered: set[str] = set()
    for member, sites in asked.values():
        try:
            data = ControllerClient(member.record).vms(**req.scope, state=req.state)
        except HostUnavailable as exc:
            notes.append(f"{exc.message}; asking its sites' hypervisors directly")
            continue
        except NotFound:
            continue  # its view lags the inventory (an apply seconds ago): ask them live
        # Only the hosts it has read: a site it took a moment ago is asked here meanwhile.
        seen = {h.name for s in sites for h in by_site[s]} & set(data.get("seen", ()))
        rows.extend(v for v in data["vms"] if v["host"] in seen)
        failed.extend(HostFailure(f["host"], f["kind"], f["error"])
                      for f in data["failed"] if f["host"] in seen)
        covered |= seen
    rest = [h for hs in by_site.values() for h in hs if h.name not in covered]
    source = "controller"
    if rest:
        results = observe(rest, progress=counting(progress, "list", len(rest)))
        rows.extend(v.as_json() for v in fleet_vms(results)
                    if req.state is None or v.domain.state == req.state)
        failed.extend(failures(results))
        source = "controller" if covered else "live"
        if covered:
            # said, so "from the controller" is not read as all of it (their rows' Age: live)
            lone = sorted({h.site for h in rest})
            notes.append(f"{len(rest)} hypervisor(s) of {', '.join(lone)}, which no live "
                         "controller serves now, asked directly")
    rows.sort(key=lambda v: (v["site"], v["pod"], v["host"], v["name"]))
    # Every hypervisor in scope was asked, by a controller or from here.
    return VMList(tuple(rows), tuple(sorted(failed, key=lambda f: f.host)), source,
                  tuple(notes), hosts=len(hosts))


def sync_through_controllers(store: Store, progress: Progress | None = None) -> Synced:
    """Every hypervisor's VMs into the store: each live lease holder syncs its own sites, the
    hypervisors of the rest are synced from here."""
    from virtfleet.fleet.overview import Synced

    hosts = store.hypervisors()
    holders = store.holders()
    members = {m.holder: m for m in holders.values() if runs_here(m.record)}
    done_sites: set[str] = set()
    asked = vms = 0
    failed: list[HostFailure] = []
    notes: list[str] = []
    for member in members.values():
        try:
            data = ControllerClient(member.record).sync()
        except HostUnavailable as exc:
            notes.append(f"{exc.message}; syncing its sites from here")
            continue
        asked += int(data["hosts"])
        vms += int(data["vms"])
        failed.extend(HostFailure(f["host"], f["kind"], f["error"]) for f in data["failed"])
        done_sites |= {s for s, m in holders.items() if m.holder == member.holder}
    rest = [h for h in hosts if h.site not in done_sites]
    if rest:
        results = sync(store, rest, progress=counting(progress, "sync", len(rest)))
        asked += len(results)
        vms += sum(len(r.value) for r in results if r.value is not None)
        failed.extend(failures(results))
    return Synced(asked, vms, tuple(failed), tuple(notes))
