"""The store's part for the operations journal: what each multi-step operation has made so far,
written before the step's undo could be needed, so an interrupted one can be finished or rolled
back (provision/journal.py runs operations with it; `ops cleanup` and every controller finish
what was left).

Each row names its owner (a process, and the controller it is, if any). A write for an
operation that names its owner is refused (TakenOver) once the row has another: whoever judged
the owner dead claimed it (`claim_operations`: the row locked with `FOR UPDATE SKIP LOCKED` on
PostgreSQL, its new owner and state written in the same transaction), so two claimers never
both undo it, and the former owner, if it was only paused, learns at its next write that it
must stop.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, delete, select, update

from virtfleet.errors import TakenOver
from virtfleet.inventory import fencing
from virtfleet.inventory import tables as t
from virtfleet.inventory.base import StoreBase, utc
from virtfleet.inventory.records import Made, OperationRecord, Owner

# Judges whether an operation's owner is dead: (the row, the live controllers' holders).
Dead = Callable[[OperationRecord, frozenset[str]], bool]


def _steps_json(steps: Sequence[Made]) -> str:
    return json.dumps([[m.kind, m.host, m.ref] for m in steps])


def _steps_from(text: str) -> tuple[Made, ...]:
    return tuple(Made(str(k), str(h), str(r)) for k, h, r in json.loads(text))


def _cols() -> list[ColumnElement[object]]:
    o = t.operations
    return [o.c.id, o.c.kind, o.c.target, o.c.hostname, o.c.pid, o.c.started_at, o.c.state,
            o.c.steps, o.c.error, o.c.owner, o.c.claimed_at]


def _record(r: Any) -> OperationRecord:
    return OperationRecord(id=r.id, kind=r.kind, target=r.target, hostname=r.hostname,
                           pid=int(r.pid), started_at=r.started_at, state=r.state,
                           steps=_steps_from(r.steps), error=r.error, owner=r.owner,
                           claimed_at=r.claimed_at)


def _owned_by(owner: Owner) -> list[ColumnElement[bool]]:
    o = t.operations
    return [o.c.hostname == owner.hostname, o.c.pid == owner.pid,
            o.c.owner.is_(None) if owner.holder is None else o.c.owner == owner.holder]


class JournalStore(StoreBase):
    """operations reads and writes: one row per operation still in progress or left failed."""

    @property
    def holder(self) -> str | None:
        """The controller this store writes for (its fencing tokens' holder), if any: the
        owner of the operations it begins."""
        return None if self._fence is None else self._fence.holder

    def begin_operation(self, rec: OperationRecord) -> None:
        with self._tx(f"journal {rec.kind} {rec.target}", write=True) as conn:
            conn.execute(t.operations.insert().values(
                id=rec.id, kind=rec.kind, target=rec.target, hostname=rec.hostname,
                pid=rec.pid, started_at=utc(rec.started_at, "started_at"), state=rec.state,
                steps=_steps_json(rec.steps), error=rec.error, owner=rec.owner,
                claimed_at=None if rec.claimed_at is None else utc(rec.claimed_at,
                                                                   "claimed_at")))

    def _write(self, conn: Connection, op_id: str, owner: Owner | None,
               values: dict[str, object] | None) -> None:
        """Update (None: delete) the operation's row, only while `owner` owns it (if given);
        TakenOver when it does not any more."""
        o = t.operations
        conds = [o.c.id == op_id, *(_owned_by(owner) if owner is not None else [])]
        stmt = (delete(o).where(*conds) if values is None
                else update(o).where(*conds).values(**values))
        if conn.execute(stmt).rowcount or owner is None:
            return
        now = conn.execute(select(o.c.hostname, o.c.pid, o.c.owner)
                           .where(o.c.id == op_id)).first()
        who = ("nobody: it is finished" if now is None
               else Owner(now.hostname, int(now.pid), now.owner).describe())
        raise TakenOver(f"operation {op_id[:12]} is no longer {owner.describe()}'s (its owner "
                        f"was judged dead and it was claimed; now {who}): not going on with "
                        "it, and not undoing anything here", operation=op_id)

    def record_step(self, op_id: str, steps: Sequence[Made], owner: Owner | None = None
                    ) -> None:
        """Replace the operation's list of what it made (written before each step's undo is
        needed, so a crash right after the step still leaves it on record)."""
        with self._tx("journal a step", write=True) as conn:
            self._write(conn, op_id, owner, {"steps": _steps_json(steps)})

    def fail_operation(self, op_id: str, steps: Sequence[Made], error: str,
                       owner: Owner | None = None) -> None:
        """Keep the operation on record: its rollback left `steps` behind."""
        with self._tx("journal a failure", write=True) as conn:
            self._write(conn, op_id, owner, {"state": "failed", "steps": _steps_json(steps),
                                             "error": error})

    def end_operation(self, op_id: str, owner: Owner | None = None) -> None:
        """Completed, or rolled back in full: nothing left to do or undo."""
        with self._tx("journal the end of an operation", write=True) as conn:
            self._write(conn, op_id, owner, None)

    def operations(self) -> list[OperationRecord]:
        o = t.operations
        with self._tx("read the operations journal", write=False) as conn:
            rows = conn.execute(select(*_cols()).order_by(o.c.started_at)).all()
        return [_record(r) for r in rows]

    def live_holders(self, within: float) -> frozenset[str]:
        """The controllers (holders) that beat within `within` seconds, by the database's
        clock (on SQLite there are none: its one controller is judged by its pid)."""
        with self._tx("read the live controllers", write=False) as conn:
            return self._live(conn, within)

    @staticmethod
    def _live(conn: Connection, within: float) -> frozenset[str]:
        m = t.controller_members
        since = fencing.db_now(conn) - timedelta(seconds=within)
        return frozenset(conn.execute(select(m.c.holder).where(m.c.heartbeat_at > since))
                         .scalars())

    def claim_operations(self, me: Owner, dead: Dead, *, live_within: float,
                         only: str | None = None, retry_failed: float | None = None,
                         limit: int = 20) -> list[OperationRecord]:
        """Claim operations whose owner is dead (`dead`), or that failed to roll back, to
        finish (undo) them as `me`: in one transaction, each row is locked (PostgreSQL:
        `FOR UPDATE SKIP LOCKED`, so a row another claimer holds is skipped, not waited for;
        SQLite: the writer's lock), judged again as it now stands, and given its new owner and
        the state `undoing`. A controller (a fenced store) claims only operations whose steps
        are on hosts of sites it holds, under a token still current.

        `only`: that operation id (`ops cleanup ID`; a failed one is taken however recent).
        `retry_failed`: seconds after its last claim a failed one is tried again (None: at
        once). Returns the claimed operations as they now stand, oldest first."""
        o = t.operations
        claimed: list[OperationRecord] = []
        with self._tx("claim interrupted operations", write=True) as conn:
            now = fencing.db_now(conn)
            live = self._live(conn, live_within) if self._backend == "postgresql" else (
                frozenset())
            held = None if self._fence is None else set(self._fence.held())

            def wanted(rec: OperationRecord) -> bool:
                if rec.state == "failed":
                    if (only is None and retry_failed is not None and rec.claimed_at is not None
                            and now - rec.claimed_at < timedelta(seconds=retry_failed)):
                        return False
                elif not dead(rec, live):
                    return False
                # A controller finishes only what is on its own sites; the holder of the
                # others' does theirs.
                return held is None or fencing.sites_of(conn, {m.host for m in rec.steps}) <= held

            # Read without locks first, then lock only the rows wanted: a claimer never holds
            # (nor waits for) a row a live owner is writing, or another controller's.
            stmt = select(*_cols()).order_by(o.c.started_at, o.c.id)
            if only is not None:
                stmt = stmt.where(o.c.id == only)
            ids = [r.id for r in conn.execute(stmt).all() if wanted(_record(r))][:limit]
            if not ids:
                return []
            locking = select(*_cols()).where(o.c.id.in_(ids)).order_by(o.c.started_at, o.c.id)
            if self._backend == "postgresql":
                locking = locking.with_for_update(skip_locked=True)
            for row in conn.execute(locking).all():
                rec = _record(row)  # as it stands now that it is locked: judged again
                if not wanted(rec):
                    continue
                if self._fence is not None:
                    fencing.check_shards(conn, self._fence,
                                         fencing.sites_of(conn, {m.host for m in rec.steps}))
                conn.execute(update(o).where(o.c.id == rec.id).values(
                    hostname=me.hostname, pid=me.pid, owner=me.holder, state="undoing",
                    claimed_at=now))
                claimed.append(OperationRecord(
                    id=rec.id, kind=rec.kind, target=rec.target, hostname=me.hostname,
                    pid=me.pid, started_at=rec.started_at, state="undoing", steps=rec.steps,
                    error=rec.error, owner=me.holder, claimed_at=now))
        return claimed
