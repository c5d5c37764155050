"""Operations as events: the journal read every second or so, and what changed published.

Operations run in whichever process started them (a CLI's `vm create`, the API), and every
step is written to the store's journal before it is taken (provision/journal.py). So the
journal is where the controller sees them all, whoever runs them: a row that appears is
`operation.started`, a row whose steps grew is `operation.progress`, a row marked failed is
`operation.failed` and a row that is gone has `operation.ended` (done, or rolled back in full).
A row claimed to be undone after its owner died is `undoing` (controller's takeover).

A long action run inside the controller can say how far it is between journal steps through
`progress_events` (a fleet service's `progress` callback).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass

from virtfleet.controller.events import EventBus
from virtfleet.fleet.scope import Progress, Step
from virtfleet.inventory.records import OperationRecord
from virtfleet.inventory.store import Store
from virtfleet.provision.journal import interrupted, live_within

PROGRESS_EVERY = 0.5  # seconds between progress events of one action (the last always goes)


@dataclass(frozen=True)
class _Seen:
    steps: int
    state: str


def _describe(rec: OperationRecord, state: str) -> dict[str, object]:
    return {"kind": rec.kind, "target": rec.target, "state": state, "steps": len(rec.steps),
            "hostname": rec.hostname, "pid": rec.pid,
            "started_at": rec.started_at.isoformat()}


class JournalWatcher:
    """Diffs the journal against the last read. `poll` is one pass; the caller schedules it."""

    def __init__(self, store: Store, bus: EventBus) -> None:
        self.store = store
        self.bus = bus
        self._seen: dict[str, _Seen] = {}
        self._records: dict[str, OperationRecord] = {}
        self._primed = False
        self._lock = threading.Lock()
        self.ended: Counter[tuple[str, str]] = Counter()  # (kind, result) -> count since start

    def poll(self) -> None:
        now = {r.id: r for r in self.store.operations()}
        live = (self.store.live_holders(live_within())
                if self.store.backend == "postgresql" else None)
        states = {i: ("interrupted" if r.state != "failed" and interrupted(r, live)
                      else r.state) for i, r in now.items()}
        with self._lock:
            before, before_recs = self._seen, self._records
            self._seen = {i: _Seen(len(r.steps), states[i]) for i, r in now.items()}
            self._records = now
            primed, self._primed = self._primed, True
        if not primed:
            return  # what runs already when the controller starts is not news
        for op_id, rec in now.items():
            old = before.get(op_id)
            state = states[op_id]
            data = _describe(rec, state)
            if old is None:
                self.bus.publish("operation.started", operation=op_id, data=data)
            if rec.steps and (old is None or len(rec.steps) != old.steps):
                self.bus.publish("operation.progress", operation=op_id, data={
                    **data, "step": rec.steps[-1].describe()})
            if state not in ("running", "undoing") and (old is None or old.state != state):
                # failed: its rollback left steps behind; interrupted: its process died.
                self.bus.publish("operation.failed", operation=op_id, data={
                    **data, "error": rec.error or ""})
                with self._lock:
                    self.ended[(rec.kind, state)] += 1
        for op_id, gone in before_recs.items():
            if op_id not in now:
                self.bus.publish("operation.ended", operation=op_id,
                                 data=_describe(gone, "ended"))
                # An interrupted or failed one was counted already; one a controller claimed
                # (undoing) before this watcher saw it interrupted was not.
                if before[op_id].state in ("running", "undoing"):
                    with self._lock:
                        self.ended[(gone.kind, "ended")] += 1

    def counts(self) -> dict[str, int]:
        """Operations in the journal now, by state (running, failed, interrupted)."""
        with self._lock:
            return dict(Counter(s.state for s in self._seen.values()))

    def ended_counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self.ended)


def progress_events(bus: EventBus, operation: str) -> Progress:
    """A fleet service's `progress` callback that publishes operation.progress, at most every
    PROGRESS_EVERY seconds and always for the last step."""
    last = [0.0]

    def tick(step: Step) -> None:
        clock = time.monotonic()
        if step.done < step.total and clock - last[0] < PROGRESS_EVERY:
            return
        last[0] = clock
        bus.publish("operation.progress", operation=operation,
                    data={"what": step.what, "done": step.done, "total": step.total})

    return tick
