"""The audit service: every write through the API or the CLI goes on record through `record`,
and `virtfleet audit` reads it back.

    audit = AuditService(store)
    audit.record(Write(actor="alice", via="api", action="vm.start", target="vm:web01",
                       params={"timeout": 120}), result="ok", status=200)
    entries = audit.entries(AuditQuery(actor="alice", since=yesterday))
    audit.prune(PruneRequest(before=a_year_ago))

`record` is the one function both callers use: the controller's audited routes
(controller/audited.py) and the CLI's hook (cli/audithook.py), which covers commands that go to
libvirt directly without any controller. Secrets are masked on the way in (graphics and BMC
passwords, tokens, credentials), whatever the caller passed. The log is append-only (the
store refuses updates); only `prune`, admin's retention, removes entries. A prune is a write
like any other, so the same hooks record it, after it is done: its own entry is never among
what it removed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from virtfleet.errors import InvalidInput
from virtfleet.inventory.audit import AuditEntry
from virtfleet.inventory.store import Store

__all__ = ["AuditEntry", "AuditQuery", "AuditService", "MASK", "Pruned", "PruneRequest",
           "Write", "mask"]

MASK = "***"
# Parameter names whose values are secrets: graphics passwords, BMC credentials, tokens.
_SECRET_KEY = re.compile(r"pass(word|wd|phrase)?|secret|token|credential|authorization|"
                         r"api[_-]?key|private[_-]?key|bmc[_-]?(user|password)", re.IGNORECASE)
# A virtfleet API token anywhere in a value (given as an argument by mistake, say).
_TOKEN_IN_TEXT = re.compile(r"vf_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
MAX_DETAIL = 2000
MAX_PARAM_TEXT = 4000


def mask(value: Any, key: str = "") -> Any:
    """`value` with every secret replaced by ***: the values of secret-named keys (strings,
    numbers and lists of them; a flag or an empty value hides nothing), and tokens in text."""
    if isinstance(value, Mapping):
        return {str(k): mask(v, str(k)) for k, v in value.items()}
    secret = bool(key) and _SECRET_KEY.search(key) is not None
    if isinstance(value, (list, tuple)):
        return [MASK if secret and v not in (None, "") else mask(v) for v in value]
    if secret and value not in (None, "") and not isinstance(value, bool):
        return MASK
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, str):
        text = _TOKEN_IN_TEXT.sub(MASK, value)
        return text if len(text) <= MAX_PARAM_TEXT else text[:MAX_PARAM_TEXT] + "..."
    return value


@dataclass(frozen=True)
class Write:
    """A write about to be recorded: who, through what, what, on what, with what."""

    actor: str
    via: str  # api, cli
    action: str  # vm.start, vm create, ...
    target: str  # kind:name, or estate
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditQuery:
    since: datetime | None = None
    actor: str | None = None
    target: str | None = None
    limit: int = 1000

    def check(self) -> None:
        if self.since is not None and self.since.tzinfo is None:
            raise InvalidInput("since", "must carry a time zone (UTC)")
        if not 1 <= self.limit <= 100_000:
            raise InvalidInput("limit", "must be from 1 to 100000")


@dataclass(frozen=True)
class PruneRequest:
    """Remove the entries older than `before` (retention)."""

    before: datetime

    def check(self, now: datetime) -> None:
        if self.before.tzinfo is None:
            raise InvalidInput("before", "must carry a time zone (UTC)")
        if self.before > now:
            raise InvalidInput("before", "is in the future: that would remove what was just "
                               "recorded")


@dataclass(frozen=True)
class Pruned:
    before: datetime
    removed: int

    def as_json(self) -> dict[str, object]:
        return {"before": self.before.isoformat(), "removed": self.removed}


class AuditService:
    def __init__(self, store: Store) -> None:
        self.store = store

    def record(self, write: Write, *, result: str, status: int, detail: str = "",
               at: datetime | None = None) -> AuditEntry:
        """Put `write` on record as it ended: result ok, failed or denied, with its status
        (HTTP status or exit code) and the error's message if any."""
        short = detail if len(detail) <= MAX_DETAIL else detail[:MAX_DETAIL] + "..."
        entry = AuditEntry(at or datetime.now(UTC), write.actor, write.via, write.action,
                           write.target, result, status, mask(dict(write.params)),
                           mask(short))
        new_id = self.store.record_audit(entry)
        return AuditEntry(entry.at, entry.actor, entry.via, entry.action, entry.target,
                          entry.result, entry.status, entry.params, entry.detail, new_id)

    def entries(self, query: AuditQuery) -> list[AuditEntry]:
        query.check()
        return self.store.audit_entries(since=query.since, actor=query.actor,
                                        target=query.target, limit=query.limit)

    def prune(self, req: PruneRequest) -> Pruned:
        """Admin's retention. Who may: the API's `audit.prune` on the whole estate; at the
        CLI, whoever can write the store (who could delete rows by hand anyway)."""
        req.check(datetime.now(UTC))
        return Pruned(req.before, self.store.prune_audit(req.before))
