"""The store's part for the audit log: every write through the API or the CLI, as it ended.

One concern of the Store over StoreBase's transactions (store.py lists them all). The log is
append-only: there is no method that changes a row, and the migration's trigger refuses any
UPDATE from anyone. Rows leave only by `prune_audit` (admin's retention), and the caller
records that prune itself (fleet/audit.py). Masking secrets is the caller's job too: what
arrives here is stored as given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, delete, func, or_, select

from virtfleet.errors import InvalidInput
from virtfleet.inventory import tables as t
from virtfleet.inventory.base import StoreBase

RESULTS = ("ok", "failed", "denied")
MAX_ROWS = 100_000


@dataclass(frozen=True)
class AuditEntry:
    """One write: who (`actor`, through `via`: api or cli), what (`action`), on what
    (`target`: kind:name, or `estate`), with which `params` (secrets masked), how it ended
    (`result`: ok, failed, denied; `status`: the HTTP status or the CLI's exit code; `detail`:
    the error's message), and when."""

    at: datetime
    actor: str
    via: str
    action: str
    target: str
    result: str
    status: int
    params: dict[str, Any] = field(default_factory=dict)
    detail: str = ""
    id: int | None = None  # given by the store

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "at": self.at.isoformat(), "actor": self.actor, "via": self.via,
                "action": self.action, "target": self.target, "params": self.params,
                "result": self.result, "status": self.status, "detail": self.detail}


def _entry(row: Row[Any]) -> AuditEntry:
    try:
        params = json.loads(row.params)
    except ValueError:
        params = {"unreadable": row.params}
    return AuditEntry(row.at, row.actor, row.via, row.action, row.target, row.result,
                      row.status, params if isinstance(params, dict) else {"value": params},
                      row.detail, row.id)


def _like_suffix(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%:{escaped}"


class AuditStore(StoreBase):
    """audit_log appends and reads."""

    def record_audit(self, entry: AuditEntry) -> int:
        if entry.result not in RESULTS:
            raise InvalidInput("result", f"{entry.result!r} is not one of {', '.join(RESULTS)}")
        if entry.at.tzinfo is None:
            raise InvalidInput("at", "must be a timezone-aware datetime (UTC)")
        with self._tx("record an audit entry", write=True) as conn:
            done = conn.execute(t.audit_log.insert().values(
                at=entry.at.astimezone(UTC), actor=entry.actor, via=entry.via,
                action=entry.action, target=entry.target, result=entry.result,
                status=entry.status, detail=entry.detail,
                params=json.dumps(entry.params, sort_keys=True, default=str)))
            key = done.inserted_primary_key
            return int(key[0]) if key is not None else 0

    def audit_entries(self, *, since: datetime | None = None, actor: str | None = None,
                      target: str | None = None, limit: int = 1000) -> list[AuditEntry]:
        """The newest `limit` entries that match, oldest first. `target` matches a whole
        target (`vm:web01`) or its name (`web01`)."""
        if not 1 <= limit <= MAX_ROWS:
            raise InvalidInput("limit", f"must be from 1 to {MAX_ROWS}")
        a = t.audit_log
        stmt = select(a).order_by(a.c.id.desc()).limit(limit)
        if since is not None:
            stmt = stmt.where(a.c.at >= since.astimezone(UTC))
        if actor is not None:
            stmt = stmt.where(a.c.actor == actor)
        if target is not None:
            stmt = stmt.where(or_(a.c.target == target,
                                  a.c.target.like(_like_suffix(target), escape="\\")))
        with self._tx("read the audit log", write=False) as conn:
            rows = conn.execute(stmt).all()
        return [_entry(r) for r in reversed(rows)]

    def count_audit(self) -> int:
        with self._tx("count the audit log", write=False) as conn:
            return int(conn.execute(select(func.count()).select_from(t.audit_log)).scalar() or 0)

    def prune_audit(self, before: datetime) -> int:
        """Delete the entries older than `before`; how many went. Only retention does this."""
        if before.tzinfo is None:
            raise InvalidInput("before", "must be a timezone-aware datetime (UTC)")
        with self._tx("prune the audit log", write=True) as conn:
            return int(conn.execute(delete(t.audit_log)
                                    .where(t.audit_log.c.at < before.astimezone(UTC))).rowcount)
