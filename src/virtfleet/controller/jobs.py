"""Long actions the API runs in the background: creating a VM, cloning many, a migration, a
host's maintenance. The API calls each an operation: it answers 202 with the operation's id at
once, and `/api/v1/operations/{id}` shows its progress, then its result or error.

Progress comes from the services' own callbacks (a clone's each finished VM, a migration's
share copied) and from the journal (create reports each step it puts on record before making
it: the claim, the volume, the domain). The multi-step work itself is journaled as it is for
the CLI (provision/journal.py), so an operation the controller dies in the middle of is undone
by `ops cleanup`, like a CLI's.

Each change of an operation (queued and started, a progress step, its end) is published on the
controller's events stream as operation.started / operation.progress / operation.ended (or
operation.failed), with the operation's id and kind but not its target, so the console's
Operations page follows them as it follows the journal's.

Operations live in the controller's memory: the last KEEP finished ones stay readable; one
older, or from before a restart, is gone (its journal entry, if it left anything, is not).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from virtfleet.controller.errors import status_of
from virtfleet.errors import NotFound, VirtfleetError
from virtfleet.fleet.roles import Target

log = logging.getLogger("virtfleet.controller.jobs")

KEEP = 1000
WORKERS = 4
MAX_STEPS = 1000  # progress lines kept per operation (a 10,000-clone batch keeps its last)


class Report(Protocol):
    def __call__(self, what: str, done: int | None = None, total: int | None = None) -> None: ...


class Result(Protocol):
    def as_json(self) -> Any: ...


Work = Callable[[Report], Any]  # returns something with as_json(), or a list of them
Publish = Callable[[str, str, dict[str, object]], None]  # (event kind, operation id, data)


def _now() -> datetime:
    return datetime.now(UTC)


def _json(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    as_json = getattr(value, "as_json", None)
    return as_json() if callable(as_json) else value


@dataclass
class Step:
    at: datetime
    what: str
    done: int | None
    total: int | None

    def as_json(self) -> dict[str, object]:
        return {"at": self.at.isoformat(), "what": self.what, "done": self.done,
                "total": self.total}


@dataclass
class Job:
    id: str
    kind: str  # vm.create, vm.clone, vm.migrate, host.maintenance, template.create
    target: Target
    user: str
    created_at: datetime
    state: str = "queued"  # queued, running, succeeded, failed
    steps: list[Step] = field(default_factory=list)
    dropped: int = 0  # early steps no longer kept
    result: Any = None
    error: dict[str, object] | None = None
    status: int = 202  # as an HTTP status: 200 once it succeeded, the error's once it failed
    started_at: datetime | None = None
    finished_at: datetime | None = None

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "kind": self.kind, "target": self.target.label,
                "user": self.user, "state": self.state,
                "created_at": self.created_at.isoformat(),
                "started_at": self.started_at.isoformat() if self.started_at else None,
                "finished_at": self.finished_at.isoformat() if self.finished_at else None,
                "progress": [s.as_json() for s in self.steps], "progress_dropped": self.dropped,
                "result": self.result, "error": self.error}


class Jobs:
    """A small pool of workers for the API's long actions, and what each one did."""

    def __init__(self, workers: int = WORKERS, keep: int = KEEP,
                 publish: Publish | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="api-op")
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._keep = keep
        self._publish = publish

    def _event(self, kind: str, job: Job, **data: object) -> None:
        """One operation event (never under the lock: subscribers run in their own time)."""
        if self._publish is not None:
            self._publish(kind, job.id, {"kind": job.kind, "state": job.state, **data})

    def submit(self, kind: str, target: Target, user: str, work: Work,
               done: Callable[[Job], None] | None = None) -> dict[str, object]:
        """Queue `work`; its operation as it stands now. `done` hears of its end (the audit
        log records the outcome there)."""
        job = Job(uuid.uuid4().hex, kind, target, user, _now())
        with self._lock:
            self._jobs[job.id] = job
            self._trim()
            snapshot = job.as_json()
        self._event("operation.started", job)
        self._pool.submit(self._run, job, work, done)
        return snapshot

    def _trim(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.finished_at is not None]
        for key in finished[: max(0, len(self._jobs) - self._keep)]:
            del self._jobs[key]

    def _report(self, job: Job) -> Report:
        def report(what: str, done: int | None = None, total: int | None = None) -> None:
            with self._lock:
                job.steps.append(Step(_now(), what, done, total))
                if len(job.steps) > MAX_STEPS:
                    del job.steps[0]
                    job.dropped += 1
            self._event("operation.progress", job, done=done, total=total)
        return report

    def _run(self, job: Job, work: Work, done: Callable[[Job], None] | None) -> None:
        with self._lock:
            job.state, job.started_at = "running", _now()
        try:
            result = _json(work(self._report(job)))
        except VirtfleetError as exc:
            self._finish(job, "failed", status_of(exc), error=exc.as_json())
        except Exception as exc:  # noqa: BLE001 - the worker boundary: a bug in one operation
            # must end that operation (failed, logged with its traceback), not the worker.
            log.exception("operation %s (%s) failed unexpectedly", job.id, job.kind)
            self._finish(job, "failed", 500, error={
                "error": "internal-error", "message": f"{type(exc).__name__}: {exc}"})
        else:
            self._finish(job, "succeeded", 200, result=result)
        self._event("operation.ended" if job.state == "succeeded" else "operation.failed", job)
        if done is not None:
            try:
                done(job)
            except VirtfleetError as exc:
                log.error("operation %s: recording its end failed: %s", job.id, exc.message)

    def _finish(self, job: Job, state: str, status: int, *, result: Any = None,
                error: dict[str, object] | None = None) -> None:
        with self._lock:
            job.state, job.status, job.result, job.error = state, status, result, error
            job.finished_at = _now()

    def get(self, job_id: str) -> dict[str, object]:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise NotFound(f"no operation {job_id!r} (finished long ago, or before the "
                               "controller restarted?)")
            return job.as_json()

    def target_of(self, job_id: str) -> Target | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return job.target if job is not None else None

    def listing(self, visible: Callable[[Target], bool]) -> list[dict[str, object]]:
        with self._lock:
            return [j.as_json() for j in self._jobs.values() if visible(j.target)]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
