"""The VM table's query: filters, a sort and a page over the controller's view, so 15,000 rows
never reach the browser at once. The rows come from the same derived view as
`GET /api/v1/vms` (controller/view.py), narrowed to what the caller may read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

from virtfleet.controller.view import FleetView, Snapshot, VMFilter
from virtfleet.errors import InvalidInput
from virtfleet.fleet.roles import Principal, Target
from virtfleet.inventory.records import STATES

COLUMNS = (("name", "name"), ("host", "host"), ("pod", "pod"), ("group", "group"),
           ("state", "state"), ("vcpus", "vCPUs"), ("memory", "memory"), ("age", "age"))
SIZES = (50, 100, 200, 500)
_KEYS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "name": lambda r: r["name"], "host": lambda r: r["host"], "pod": lambda r: r["pod"],
    "group": lambda r: r["groups"], "state": lambda r: r["state"],
    "vcpus": lambda r: r["vcpus"], "memory": lambda r: r["memory_mib"],
    # newest data first reads as "youngest": sort by when it was seen, missing last
    "age": lambda r: r["observed_at"] or "",
}
_GLOB = frozenset("*?[")


@dataclass(frozen=True)
class TableQuery:
    """The page's query string, checked: each field names the parameter it came from."""

    q: str = ""
    site: str = ""
    pod: str = ""
    host: str = ""
    group: str = ""
    state: str = ""
    sort: str = ""
    desc: bool = False
    page: int = 1
    size: int = 100

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> TableQuery:
        known = {f for f in cls.__dataclass_fields__}
        for key in params:
            if key not in known:
                raise InvalidInput(key, "unknown query parameter (known: "
                                   f"{', '.join(sorted(known))})")
        try:
            page = int(params.get("page") or 1)
            size = int(params.get("size") or 100)
        except ValueError:
            raise InvalidInput("page" if not (params.get("page") or "1").isdigit() else "size",
                               "a whole number") from None
        got = cls(q=params.get("q", "").strip(), site=params.get("site", ""),
                  pod=params.get("pod", ""), host=params.get("host", ""),
                  group=params.get("group", ""), state=params.get("state", ""),
                  sort=params.get("sort", ""), desc=params.get("desc", "") in ("1", "true"),
                  page=page, size=size)
        got.check()
        return got

    def check(self) -> None:
        if self.sort and self.sort not in _KEYS:
            raise InvalidInput("sort", f"one of {', '.join(_KEYS)}")
        if self.size not in SIZES:
            raise InvalidInput("size", f"one of {', '.join(map(str, SIZES))}")
        if self.page < 1:
            raise InvalidInput("page", "1 or more")
        self.view_filter().check()

    def view_filter(self) -> VMFilter:
        name = None
        if self.q:
            name = self.q if _GLOB & set(self.q) else f"*{self.q}*"
        return VMFilter(site=self.site or None, pod=self.pod or None, host=self.host or None,
                        group=self.group or None, state=self.state or None, name=name)

    def link(self, **changes: Any) -> str:
        """/ui/vms with this query, `changes` applied (empty values left out)."""
        q = replace(self, **changes)
        params = {k: v for k, v in (("q", q.q), ("site", q.site), ("pod", q.pod),
                                    ("host", q.host), ("group", q.group), ("state", q.state),
                                    ("sort", q.sort), ("desc", "1" if q.desc else ""),
                                    ("page", str(q.page) if q.page > 1 else ""),
                                    ("size", str(q.size) if q.size != 100 else "")) if v}
        return "/ui/vms" + ("?" + urlencode(params) if params else "")


@dataclass(frozen=True)
class Table:
    query: TableQuery
    rows: list[dict[str, Any]]  # this page's rows, with groups and may_act added
    total: int
    failed: list[str]  # hosts whose VMs may be missing or stale

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.query.size))

    @property
    def page(self) -> int:
        return min(self.query.page, self.pages)

    @property
    def first(self) -> int:
        return (self.page - 1) * self.query.size + 1

    @property
    def last(self) -> int:
        return min(self.total, self.page * self.query.size)

    @property
    def prev_link(self) -> str | None:
        return self.query.link(page=self.page - 1) if self.page > 1 else None

    @property
    def next_link(self) -> str | None:
        return self.query.link(page=self.page + 1) if self.page < self.pages else None

    def sort_link(self, key: str) -> str:
        desc = not self.query.desc if self.query.sort == key else False
        return self.query.link(sort=key, desc=desc, page=1)


def table(view: FleetView, query: TableQuery, caller: Principal) -> Table:
    snap, rows = view.vms(query.view_filter(), caller.reach("vm.read"))
    rows = list(rows)
    if query.sort:
        key = _KEYS[query.sort]
        if query.sort == "group":
            rows = [{**r, "groups": _groups(snap, r)} for r in rows]
        rows.sort(key=key, reverse=query.desc)
    total = len(rows)
    pages = max(1, -(-total // query.size))
    start = (min(query.page, pages) - 1) * query.size
    shown = [_row(snap, r, caller) for r in rows[start:start + query.size]]
    reach = caller.reach("vm.read")
    failed = sorted(f.host for f in snap.failed
                    if f.host in snap.hosts and reach.covers_host(snap.hosts[f.host]))
    return Table(query, shown, total, failed)


def _groups(snap: Snapshot, row: Mapping[str, Any]) -> tuple[str, ...]:
    rec = snap.hosts.get(row["host"])
    return rec.groups if rec is not None else ()


def _row(snap: Snapshot, row: Mapping[str, Any], caller: Principal) -> dict[str, Any]:
    rec = snap.hosts.get(row["host"])
    here = Target.of_vm(row["name"], rec) if rec is not None else None
    may = {perm: here is not None and caller.can(perm, here)
           for perm in ("vm.lifecycle", "vm.snapshot", "vm.migrate")}
    vm = not row.get("template")  # a template is never started, snapshotted or moved
    # clones go to the template's pod by default (as the VM page's form checks)
    may_clone = not vm and here is not None and caller.can("vm.create", replace(here, host=None))
    # snapshot, migrate and clone are forms on the VM's page (a name, a target): the row
    # links there
    return {**row, "groups": _groups(snap, row), "may_act": vm and may["vm.lifecycle"],
            "may_snapshot": vm and may["vm.snapshot"], "may_migrate": vm and may["vm.migrate"],
            "may_clone": may_clone}


def choices(snap: Snapshot, caller: Principal) -> list[tuple[str, str, Sequence[str]]]:
    """The filter menus: (parameter, label, options) over the hosts the caller may see."""
    reach = caller.reach("vm.read")
    hosts = [h for h in snap.hosts.values() if reach.covers_host(h)]
    return [("site", "site", sorted({h.site for h in hosts})),
            ("pod", "pod", sorted({h.pod for h in hosts})),
            ("group", "group", sorted({g for h in hosts for g in h.groups})),
            ("state", "state", [*STATES, "unknown"])]
