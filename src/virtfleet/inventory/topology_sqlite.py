"""The hypervisors of a SQLite store read with the standard library: a cold `list` without
SQLAlchemy.

A cold `list` asks every hypervisor itself; the store only says which ones, and importing
SQLAlchemy and opening the Store for that cost about a tenth of the whole query. This reads the
same rows Store.hypervisors() returns (topology.py: the same filters, the same NotFound for a
filter that names nothing, the same order), or raises sqlite3.Error (sqlite_read.reading),
and the caller asks the Store.
"""

from __future__ import annotations

from virtfleet.errors import NotFound
from virtfleet.inventory.records import HostRecord
from virtfleet.inventory.sqlite_read import reading

_FILTERS = (("site", "sites"), ("pod", "pods"), ("host", "hypervisors"),
            ("group", "host_groups"))


def hypervisors_from_sqlite(db_url: str, *, site: str | None = None, pod: str | None = None,
                            host: str | None = None, group: str | None = None
                            ) -> list[HostRecord]:
    """Store.hypervisors(site=, pod=, host=, group=) of a SQLite store at the newest
    migration; sqlite3.Error for any other store."""
    given = {"site": site, "pod": pod, "host": host, "group": group}
    where, args = [], []
    for column, value in (("s.name", site), ("p.name", pod), ("h.name", host)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if group is not None:
        where.append("EXISTS (SELECT 1 FROM hypervisor_groups hg JOIN host_groups g ON "
                     "g.id = hg.group_id WHERE hg.hypervisor_id = h.id AND g.name = ?)")
        args.append(group)
    with reading(db_url) as conn:
        for what, table in _FILTERS:
            value = given[what]
            if value is not None and conn.execute(
                    f"SELECT id FROM {table} WHERE name = ?", (value,)).fetchone() is None:
                raise NotFound(f"{what} {value!r} is not in the inventory")
        rows = conn.execute(
            "SELECT h.id, h.name, h.uri, s.name, p.name, h.maintenance OR EXISTS (SELECT 1 "
            "FROM host_maintenance m WHERE m.hypervisor_id = h.id) FROM hypervisors h "
            "JOIN pods p ON h.pod_id = p.id JOIN sites s ON p.site_id = s.id"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY s.name, p.name, h.name", args).fetchall()
        member: dict[int, list[str]] = {}
        for hid, gname in conn.execute(
                "SELECT hg.hypervisor_id, g.name FROM hypervisor_groups hg JOIN host_groups g "
                "ON g.id = hg.group_id ORDER BY hg.hypervisor_id, hg.position"):
            member.setdefault(hid, []).append(gname)
    return [HostRecord(name=name, uri=uri, site=sname, pod=pname,
                       groups=tuple(member.get(hid, ())), maintenance=bool(maint))
            for hid, name, uri, sname, pname, maint in rows]
