"""The store's part for the operations journal: what each multi-step operation has made so far,
written before the step's undo could be needed, so an interrupted one can be finished or rolled
back (provision/journal.py runs operations with it; `ops cleanup` finishes what was left)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import delete, select, update

from virtfleet.inventory import tables as t
from virtfleet.inventory.base import StoreBase, utc
from virtfleet.inventory.records import Made, OperationRecord


def _steps_json(steps: Sequence[Made]) -> str:
    return json.dumps([[m.kind, m.host, m.ref] for m in steps])


def _steps_from(text: str) -> tuple[Made, ...]:
    return tuple(Made(str(k), str(h), str(r)) for k, h, r in json.loads(text))


class JournalStore(StoreBase):
    """operations reads and writes: one row per operation still in progress or left failed."""

    def begin_operation(self, rec: OperationRecord) -> None:
        with self._tx(f"journal {rec.kind} {rec.target}", write=True) as conn:
            conn.execute(t.operations.insert().values(
                id=rec.id, kind=rec.kind, target=rec.target, hostname=rec.hostname,
                pid=rec.pid, started_at=utc(rec.started_at, "started_at"), state=rec.state,
                steps=_steps_json(rec.steps), error=rec.error))

    def record_step(self, op_id: str, steps: Sequence[Made]) -> None:
        """Replace the operation's list of what it made (written before each step's undo is
        needed, so a crash right after the step still leaves it on record)."""
        o = t.operations
        with self._tx("journal a step", write=True) as conn:
            conn.execute(update(o).where(o.c.id == op_id).values(steps=_steps_json(steps)))

    def fail_operation(self, op_id: str, steps: Sequence[Made], error: str) -> None:
        """Keep the operation on record: its rollback left `steps` behind."""
        o = t.operations
        with self._tx("journal a failure", write=True) as conn:
            conn.execute(update(o).where(o.c.id == op_id).values(
                state="failed", steps=_steps_json(steps), error=error))

    def end_operation(self, op_id: str) -> None:
        """Completed, or rolled back in full: nothing left to do or undo."""
        o = t.operations
        with self._tx("journal the end of an operation", write=True) as conn:
            conn.execute(delete(o).where(o.c.id == op_id))

    def operations(self) -> list[OperationRecord]:
        o = t.operations
        with self._tx("read the operations journal", write=False) as conn:
            rows = conn.execute(select(o.c.id, o.c.kind, o.c.target, o.c.hostname, o.c.pid,
                                       o.c.started_at, o.c.state, o.c.steps, o.c.error)
                                .order_by(o.c.started_at)).all()
        return [OperationRecord(id=r[0], kind=r[1], target=r[2], hostname=r[3], pid=int(r[4]),
                                started_at=r[5], state=r[6], steps=_steps_from(r[7]),
                                error=r[8]) for r in rows]

