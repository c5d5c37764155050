"""The operations service: the journal of multi-step operations (create, clone, template), and
undoing what interrupted ones made (provision/journal.py).

    with OperationService(store) as ops:
        for op in ops.operations(): ...                  # running, failed, interrupted
        cleaned = ops.clean_up(CleanupRequest())          # every interrupted one

An operation whose process died stays in the journal with what it made; cleaning it up undoes
those steps newest first. One still running (its process alive) is refused: it may finish.
"""

from __future__ import annotations

from dataclasses import dataclass

from virtfleet.errors import InvalidInput, NotFound
from virtfleet.fleet.scope import FleetService
from virtfleet.inventory.records import Made, OperationRecord
from virtfleet.inventory.store import Store
from virtfleet.provision.journal import clean_up, interrupted, live_within
from virtfleet.virt.fanout import ConnectionPool

__all__ = ["CleanedUp", "CleanupRequest", "Operation", "OperationService"]


@dataclass(frozen=True)
class Operation:
    """An operation in the journal, with its state as a person reads it: running, undoing
    (claimed after its owner died), failed, or interrupted (its owner died)."""

    record: OperationRecord
    state: str

    def as_json(self) -> dict[str, object]:
        r = self.record
        return {"id": r.id, "kind": r.kind, "target": r.target, "state": self.state,
                "hostname": r.hostname, "pid": r.pid, "owner": r.owner,
                "started_at": r.started_at.isoformat(),
                "claimed_at": r.claimed_at.isoformat() if r.claimed_at else None,
                "made": [m.describe() for m in r.steps], "error": r.error}


@dataclass(frozen=True)
class CleanupRequest:
    """One operation by its id (or a unique prefix of it); None: every interrupted one."""

    id: str | None = None

    def check(self) -> None:
        if self.id is not None and not self.id:
            raise InvalidInput("id", "must not be empty")


@dataclass(frozen=True)
class CleanedUp:
    """One operation cleaned up: what it had made, and what could not be undone (and why)."""

    record: OperationRecord
    left: tuple[tuple[Made, str], ...]

    @property
    def ok(self) -> bool:
        return not self.left

    def as_json(self) -> dict[str, object]:
        return {"id": self.record.id, "kind": self.record.kind, "target": self.record.target,
                "ok": self.ok, "undone": [m.describe() for m in reversed(self.record.steps)],
                "left": [{"made": m.describe(), "why": why} for m, why in self.left]}


class OperationService(FleetService):
    def __init__(self, store: Store, pool: ConnectionPool | None = None) -> None:
        super().__init__(store, pool, keep_open=True)

    def operations(self) -> list[Operation]:
        """Every operation in the journal: running ones, and interrupted ones."""
        live = (self.store.live_holders(live_within())
                if self.store.backend == "postgresql" else None)
        return [Operation(r, "interrupted" if r.state != "failed" and interrupted(r, live)
                          else r.state) for r in self.store.operations()]

    def clean_up(self, req: CleanupRequest) -> list[CleanedUp]:
        """Undo what each chosen operation made, newest step first; Busy for one whose
        process is still running."""
        req.check()
        ops = self.store.operations()
        if req.id is not None:
            ops = [o for o in ops if o.id.startswith(req.id.lower())]
            if not ops:
                raise NotFound(f"no operation {req.id!r} in the journal (see 'virtfleet ops "
                               "list')")
            if len(ops) > 1:
                raise InvalidInput("id", f"{req.id!r} matches {len(ops)} operations; give "
                                   "more of it")
        else:
            live = (self.store.live_holders(live_within())
                    if self.store.backend == "postgresql" else None)
            ops = [o for o in ops if interrupted(o, live)]
        return [CleanedUp(rec, tuple(clean_up(self.store, self.pool, rec))) for rec in ops]
