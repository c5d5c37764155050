"""The store's part for high availability (docs/ha.md), over StoreBase like maintenance.py.

- An operator's: the pods where HA acts (`ha enable`).
- The controller's (and `ha set`'s, `vm create --ha`'s): each HA VM's last persistent
  definition (a dead host cannot be asked for it), each host's HA state, and the journal of
  each recovery.

The fleet file's part of HA (each hypervisor's BMC, each group's HA policy) is rewritten by
every `apply`, with the rest of the fleet file: topology.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, select, update

from virtfleet.errors import NotFound
from virtfleet.inventory import tables as t
from virtfleet.inventory.base import StoreBase, utc
from virtfleet.inventory.topology import fleet_ha

RECOVERIES_KEPT = 20  # finished recoveries kept per host, for `ha status` and the operator


@dataclass(frozen=True)
class HAPod:
    pod: str
    since: datetime
    hostname: str  # who enabled it
    pid: int

    def as_json(self) -> dict[str, object]:
        return {"pod": self.pod, "since": self.since.isoformat(), "hostname": self.hostname,
                "pid": self.pid}


@dataclass(frozen=True)
class HAVM:
    """An HA VM as the store knows it. `priority` is the effective one: marked on the VM, else
    its group's; None when neither makes it HA any more."""

    uuid: str
    name: str
    host: str | None  # where it was last defined
    marked_priority: int | None
    app: str | None
    definition: str
    defined_at: datetime
    priority: int | None = None


@dataclass(frozen=True)
class HAHost:
    """One hypervisor's HA state as last written by the controller."""

    host: str
    state: str
    since: datetime
    lost_at: datetime | None
    detail: str
    updated_at: datetime


@dataclass(frozen=True)
class RecoveryStep:
    """One journal entry: `kind` is suspect, power, fencing, fenced, fence-failed, planned,
    restarting, running, start-failed, stale-undefined, back or done."""

    kind: str
    at: datetime
    vm: str = ""
    uuid: str = ""
    host: str = ""  # the target of a restart; the returning host of a stale copy
    priority: int | None = None
    detail: str = ""

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"kind": self.kind, "at": self.at.isoformat()}
        for key in ("vm", "uuid", "host", "detail"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.priority is not None:
            out["priority"] = self.priority
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecoveryStep:
        prio = data.get("priority")
        return cls(kind=str(data["kind"]), at=datetime.fromisoformat(str(data["at"])),
                   vm=str(data.get("vm", "")), uuid=str(data.get("uuid", "")),
                   host=str(data.get("host", "")),
                   priority=int(prio) if prio is not None else None,
                   detail=str(data.get("detail", "")))


@dataclass(frozen=True)
class Recovery:
    """One host's recovery journal: running until done."""

    id: str
    host: str
    state: str  # running or done
    started_at: datetime
    updated_at: datetime
    hostname: str  # the controller that started it
    pid: int
    steps: tuple[RecoveryStep, ...] = field(default=())

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "host": self.host, "state": self.state,
                "started_at": self.started_at.isoformat(),
                "updated_at": self.updated_at.isoformat(), "controller_pid": self.pid,
                "steps": [s.as_json() for s in self.steps]}


def _steps_json(steps: Sequence[RecoveryStep]) -> str:
    return json.dumps([s.as_json() for s in steps])


class HAStore(StoreBase):
    """HA reads and writes (the fleet file's BMCs and group policies are topology.py's)."""

    # ----------------------------------------------------------- pods (ha enable/disable)

    @staticmethod
    def _pod_id(conn: Connection, pod: str) -> int:
        pid = conn.execute(select(t.pods.c.id).where(t.pods.c.name == pod)).scalar()
        if pid is None:
            raise NotFound(f"pod {pod!r} is not in the inventory")
        return int(pid)

    def enable_ha(self, pod: str, at: datetime, hostname: str, pid: int) -> bool:
        """Turn HA on for `pod`. False if it already was."""
        when = utc(at, "at")
        with self._tx(f"enable HA in pod {pod!r}", write=True) as conn:
            pod_id = self._pod_id(conn, pod)
            hp = t.ha_pods
            if conn.execute(select(hp.c.pod_id).where(hp.c.pod_id == pod_id)).first():
                return False
            conn.execute(hp.insert().values(pod_id=pod_id, since=when, hostname=hostname,
                                            pid=pid))
        return True

    def disable_ha(self, pod: str) -> bool:
        """Turn HA off for `pod`. False if it was not on."""
        with self._tx(f"disable HA in pod {pod!r}", write=True) as conn:
            pod_id = self._pod_id(conn, pod)
            hp = t.ha_pods
            return bool(conn.execute(delete(hp).where(hp.c.pod_id == pod_id)).rowcount)

    def ha_pods(self) -> dict[str, HAPod]:
        """The pods where HA is on, by name."""
        hp, p = t.ha_pods, t.pods
        with self._tx("read the HA pods", write=False) as conn:
            rows = conn.execute(select(p.c.name, hp.c.since, hp.c.hostname, hp.c.pid)
                                .join_from(hp, p)).all()
        return {r[0]: HAPod(r[0], r[1], r[2], int(r[3])) for r in rows}

    # ----------------------------------------------------------- HA VMs

    def ha_vms(self, host: str | None = None, uuid: str | None = None) -> list[HAVM]:
        """Every recorded HA VM (or those last defined on `host`, or the one with `uuid`),
        with its effective priority (None: neither marked nor in an HA group any more)."""
        v, h = t.ha_vms, t.hypervisors
        stmt = (select(v.c.uuid, v.c.name, h.c.name, v.c.marked_priority, v.c.app,
                       v.c.definition, v.c.defined_at)
                .select_from(v.outerjoin(h, v.c.hypervisor_id == h.c.id))
                .order_by(v.c.name, v.c.uuid))
        if host is not None:
            stmt = stmt.where(h.c.name == host)
        if uuid is not None:
            stmt = stmt.where(v.c.uuid == uuid)
        with self._tx("read the HA VMs", write=False) as conn:
            rows = conn.execute(stmt).all()
            groups = fleet_ha(conn)[1]
        out = []
        for uuid, name, hname, marked, app, xml, at in rows:
            prio = marked if marked is not None else groups.get(app) if app else None
            out.append(HAVM(uuid=uuid, name=name, host=hname, marked_priority=marked, app=app,
                            definition=xml, defined_at=at, priority=prio))
        return out

    def record_ha_vm(self, vm: HAVM) -> None:
        """Insert or replace one HA VM's row (its definition as just read on `vm.host`)."""
        v = t.ha_vms
        at = utc(vm.defined_at, "defined_at")
        with self._tx(f"record HA VM {vm.name!r}", write=True) as conn:
            self._guard(conn, [vm.host] if vm.host is not None else [])
            hid = None
            if vm.host is not None:
                hid = conn.execute(select(t.hypervisors.c.id)
                                   .where(t.hypervisors.c.name == vm.host)).scalar()
                if hid is None:
                    raise NotFound(f"hypervisor {vm.host!r} is not in the inventory")
            conn.execute(delete(v).where(v.c.uuid == vm.uuid))
            conn.execute(v.insert().values(uuid=vm.uuid, name=vm.name, hypervisor_id=hid,
                                           marked_priority=vm.marked_priority, app=vm.app,
                                           definition=vm.definition, defined_at=at))

    def move_ha_vm(self, uuid: str, host: str | None, *, only_from: str | None = None) -> None:
        """Note where an HA VM is defined now (None: nowhere known). With `only_from`, only if
        the row still names that host (an undefine there must not undo a newer define)."""
        v, h = t.ha_vms, t.hypervisors
        with self._tx(f"move HA VM {uuid}", write=True) as conn:
            self._guard(conn, [n for n in (host, only_from) if n is not None])
            hid = None
            if host is not None:
                hid = conn.execute(select(h.c.id).where(h.c.name == host)).scalar()
            stmt = update(v).where(v.c.uuid == uuid)
            if only_from is not None:
                old = conn.execute(select(h.c.id).where(h.c.name == only_from)).scalar()
                stmt = stmt.where(v.c.hypervisor_id == old)
            conn.execute(stmt.values(hypervisor_id=hid))

    def forget_ha_vm(self, uuid: str) -> bool:
        """The VM is no longer HA. False if it was not recorded."""
        v = t.ha_vms
        with self._tx(f"forget HA VM {uuid}", write=True) as conn:
            return bool(conn.execute(delete(v).where(v.c.uuid == uuid)).rowcount)

    # ----------------------------------------------------------- host states

    def ha_hosts(self) -> dict[str, HAHost]:
        s, h = t.ha_hosts, t.hypervisors
        with self._tx("read the HA host states", write=False) as conn:
            rows = conn.execute(select(h.c.name, s.c.state, s.c.since, s.c.lost_at,
                                       s.c.detail, s.c.updated_at).join_from(s, h)).all()
        return {r[0]: HAHost(r[0], r[1], r[2], r[3], r[4] or "", r[5]) for r in rows}

    def set_ha_host(self, rec: HAHost) -> None:
        s = t.ha_hosts
        with self._tx(f"record the HA state of {rec.host!r}", write=True) as conn:
            self._guard(conn, [rec.host])
            hid = conn.execute(select(t.hypervisors.c.id)
                               .where(t.hypervisors.c.name == rec.host)).scalar()
            if hid is None:
                raise NotFound(f"hypervisor {rec.host!r} is not in the inventory")
            conn.execute(delete(s).where(s.c.hypervisor_id == hid))
            conn.execute(s.insert().values(
                hypervisor_id=hid, state=rec.state, since=utc(rec.since, "since"),
                lost_at=None if rec.lost_at is None else utc(rec.lost_at, "lost_at"),
                detail=rec.detail, updated_at=utc(rec.updated_at, "updated_at")))

    # ----------------------------------------------------------- the recovery journal

    def begin_recovery(self, rec: Recovery) -> None:
        r = t.ha_recoveries
        with self._tx(f"journal the recovery of {rec.host!r}", write=True) as conn:
            self._guard(conn, [rec.host])
            conn.execute(r.insert().values(
                id=rec.id, host=rec.host, state=rec.state,
                started_at=utc(rec.started_at, "started_at"),
                updated_at=utc(rec.updated_at, "updated_at"), hostname=rec.hostname,
                pid=rec.pid, steps=_steps_json(rec.steps)))

    def record_recovery(self, rec_id: str, steps: Sequence[RecoveryStep], state: str,
                        at: datetime) -> None:
        """Replace a recovery's steps (and state); a finished one makes the host's oldest
        finished recoveries beyond RECOVERIES_KEPT go."""
        r = t.ha_recoveries
        with self._tx("journal a recovery step", write=True) as conn:
            if self._fence is not None:  # the step is for the recovering host's site
                self._guard(conn, conn.execute(select(r.c.host).where(r.c.id == rec_id))
                            .scalars().all())
            conn.execute(update(r).where(r.c.id == rec_id).values(
                steps=_steps_json(steps), state=state, updated_at=utc(at, "at")))
            if state != "done":
                return
            host = conn.execute(select(r.c.host).where(r.c.id == rec_id)).scalar()
            old = [i for (i,) in conn.execute(
                select(r.c.id).where(r.c.host == host, r.c.state == "done")
                .order_by(r.c.started_at.desc()).offset(RECOVERIES_KEPT))]
            if old:
                conn.execute(delete(r).where(r.c.id.in_(old)))

    def recoveries(self, host: str | None = None, *, running: bool = False) -> list[Recovery]:
        """Recovery journals, oldest first: of one host, and only unfinished ones if asked."""
        r = t.ha_recoveries
        stmt = select(r.c.id, r.c.host, r.c.state, r.c.started_at, r.c.updated_at,
                      r.c.hostname, r.c.pid, r.c.steps).order_by(r.c.started_at)
        if host is not None:
            stmt = stmt.where(r.c.host == host)
        if running:
            stmt = stmt.where(r.c.state == "running")
        with self._tx("read the recovery journal", write=False) as conn:
            rows = conn.execute(stmt).all()
        return [Recovery(id=i, host=h, state=s, started_at=st, updated_at=up, hostname=hn,
                         pid=int(p), steps=tuple(RecoveryStep.from_json(d)
                                                 for d in json.loads(text)))
                for i, h, s, st, up, hn, p, text in rows]
