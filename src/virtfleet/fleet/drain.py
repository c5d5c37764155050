"""Running many moves at once, at most N out of each source and M into each target.

VDSM's rule (2 outgoing, 2 incoming per host by default): each migration wants the hosts'
links and CPUs, and a host being emptied, or one receiving, must not be swamped. Jobs start in
the order given, each as soon as its source and target both have a free slot. On cancel (or
Ctrl-C in the thread that waits) no new job starts and the running ones are left to stop
themselves: each watches the same cancel event.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from virtfleet.errors import Cancelled, HypervisorError, VirtfleetError

T = TypeVar("T")


@dataclass(frozen=True)
class Job(Generic[T]):
    key: str  # unique among the jobs: the VM
    source: str
    target: str
    run: Callable[[], T]


@dataclass(frozen=True)
class Outcome(Generic[T]):
    key: str
    value: T | None = None
    error: VirtfleetError | None = None
    started: bool = True


def run_bounded(jobs: Sequence[Job[T]], *, max_out: int, max_in: int,
                cancel: threading.Event) -> list[Outcome[T]]:
    """Run every job within the limits; outcomes in input order. A job not started because of
    a cancel gets `started=False` and a Cancelled error."""
    if max_out < 1 or max_in < 1:
        raise ValueError("limits must be at least 1")
    pending = list(jobs)
    out: dict[str, Outcome[T]] = {}
    running: dict[str, Job[T]] = {}
    outgoing: Counter[str] = Counter()
    incoming: Counter[str] = Counter()
    done: queue.Queue[Outcome[T]] = queue.Queue()

    def worker(job: Job[T]) -> None:
        result: Outcome[T] = Outcome(job.key, error=HypervisorError(
            f"{job.key}: internal error while moving it (see the traceback above)"))
        try:
            result = Outcome(job.key, value=job.run())
        except VirtfleetError as exc:
            result = Outcome(job.key, error=exc)
        finally:
            done.put(result)

    def start_what_fits() -> None:
        for job in list(pending):
            if outgoing[job.source] < max_out and incoming[job.target] < max_in:
                pending.remove(job)
                running[job.key] = job
                outgoing[job.source] += 1
                incoming[job.target] += 1
                threading.Thread(target=worker, args=(job,), daemon=True,
                                 name=f"move {job.key}").start()

    while pending or running:
        if not cancel.is_set():
            start_what_fits()
        else:
            for job in pending:
                out[job.key] = Outcome(job.key, error=Cancelled(
                    f"{job.key}: not moved (cancelled before its turn); it stays on "
                    f"{job.source}"), started=False)
            pending.clear()
        if not running:
            continue
        try:
            result = done.get(timeout=0.5)
        except queue.Empty:
            continue
        except KeyboardInterrupt:
            cancel.set()
            continue
        job = running.pop(result.key)
        outgoing[job.source] -= 1
        incoming[job.target] -= 1
        out[result.key] = result
    return [out[j.key] for j in jobs]
