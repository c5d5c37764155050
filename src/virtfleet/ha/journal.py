"""The journal of a host's recovery: every step written to the store before the next is taken.

    j = Journal.resume(store, "hv1") or Journal.begin(store, "hv1")
    j.add(RecoveryStep("fenced", now, detail="powered off through its BMC"))
    j.plan([...])                  # the HA VMs to bring back, fixed when the host was fenced
    j.add(RecoveryStep("restarting", now, vm="web1", uuid=U, host="hv2"))  # before defining
    j.finish(now)                  # done

A controller killed halfway finds the running journal at its next start and goes on from it:
the plan says which VMs, and each restart first asks every host where the VM is, so a VM the
killed controller already started is found running and never started again.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from virtfleet.inventory.ha import Recovery, RecoveryStep
from virtfleet.inventory.store import Store

_TRIED = re.compile(r" \(tried (\d+) times\)$")


@dataclass(frozen=True)
class Planned:
    """An HA VM of the failed host, as fixed in the plan."""

    vm: str
    uuid: str
    priority: int
    restart: bool  # False: it was shut off at its last sighting, so it stays off
    why_not: str = ""


class Journal:
    def __init__(self, store: Store, rec: Recovery) -> None:
        self.store = store
        self.id = rec.id
        self.host = rec.host
        self.started_at = rec.started_at
        self.state = rec.state
        self.steps: list[RecoveryStep] = list(rec.steps)
        self._lock = threading.Lock()  # a pass's starts journal from several threads

    @classmethod
    def resume(cls, store: Store, host: str) -> Journal | None:
        """The host's unfinished recovery, if there is one."""
        running = store.recoveries(host, running=True)
        return cls(store, running[-1]) if running else None

    @classmethod
    def latest(cls, store: Store, host: str) -> Journal | None:
        """The host's most recent recovery, finished or not."""
        every = store.recoveries(host)
        return cls(store, every[-1]) if every else None

    @classmethod
    def begin(cls, store: Store, host: str, now: datetime) -> Journal:
        rec = Recovery(id=uuidlib.uuid4().hex, host=host, state="running", started_at=now,
                       updated_at=now, hostname=socket.gethostname(), pid=os.getpid())
        store.begin_recovery(rec)
        return cls(store, rec)

    def add(self, *steps: RecoveryStep) -> None:
        with self._lock:
            self.steps.extend(steps)
            self.store.record_recovery(self.id, list(self.steps), self.state, steps[-1].at)

    def again(self, step: RecoveryStep) -> None:
        """Add `step`, or, if the last step is the same one (a fence retried and failing the
        same way), count the try on it instead: a host down for a day stays one line."""
        with self._lock:
            last = self.steps[-1] if self.steps else None
            if last is not None and last.kind == step.kind and \
                    _TRIED.sub("", last.detail) == step.detail:
                m = _TRIED.search(last.detail)
                tries = int(m.group(1)) + 1 if m else 2
                self.steps[-1] = replace(step, detail=f"{step.detail} (tried {tries} times)")
                self.store.record_recovery(self.id, list(self.steps), self.state, step.at)
                return
        self.add(step)

    def finish(self, now: datetime, kind: str = "done", detail: str = "") -> None:
        self.steps.append(RecoveryStep(kind, now, detail=detail))
        self.state = "done"
        self.store.record_recovery(self.id, self.steps, "done", now)

    # -- what the steps say --------------------------------------------------------------------

    def kinds(self) -> list[str]:
        return [s.kind for s in self.steps]

    def has(self, kind: str) -> bool:
        return any(s.kind == kind for s in self.steps)

    def plan(self, vms: Sequence[Planned], now: datetime) -> None:
        self.add(*[RecoveryStep("planned", now, vm=p.vm, uuid=p.uuid, priority=p.priority,
                                detail="" if p.restart else f"not restarted: {p.why_not}")
                   for p in vms] or [RecoveryStep("planned", now, detail="no HA VMs")])

    def planned(self) -> list[Planned]:
        """The plan, highest priority first (then by name)."""
        out = [Planned(s.vm, s.uuid, s.priority or 0, not s.detail,
                       s.detail.removeprefix("not restarted: "))
               for s in self.steps if s.kind == "planned" and s.uuid]
        return sorted(out, key=lambda p: (-p.priority, p.vm))

    def is_planned(self) -> bool:
        return self.has("planned")

    def target(self, uuid: str) -> str | None:
        """Where the journal last said it would start `uuid` (restarting, or running)."""
        for s in reversed(self.steps):
            if s.uuid == uuid and s.kind in ("restarting", "running"):
                return s.host
        return None

    def running_on(self, uuid: str) -> str | None:
        for s in reversed(self.steps):
            if s.uuid == uuid and s.kind == "running":
                return s.host
        return None

    def failed_on(self, uuid: str) -> str | None:
        """The host the last start attempt of `uuid` failed on, if the last attempt failed."""
        for s in reversed(self.steps):
            if s.uuid == uuid and s.kind in ("restarting", "running"):
                return None
            if s.uuid == uuid and s.kind == "start-failed":
                return s.host
        return None
