"""The controller's observability, in one place: the events stream, the journal watcher, the
bulk-stats pass and /metrics, with the two workers that keep them current.

The controller makes one (`controller.observe`) and starts and stops it with itself; the app
mounts its routes: `create_app(controller, extra=[controller.observe.routers])`.

Its workers (`stats`, `journal`) survive any exception in a pass, like the controller's own
(logged, counted in virtfleet_controller_worker_faults_total). They do not make the controller
unhealthy: a failed stats pass leaves the fleet view, which CLIs rely on, as current as it was;
the metrics say how old the last pass is instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

from virtfleet.controller.events import Visible
from virtfleet.controller.events_api import Auth, events_router
from virtfleet.controller.journalwatch import JournalWatcher
from virtfleet.controller.metrics import FleetMetrics, metrics_router
from virtfleet.controller.stats import StatsCache
from virtfleet.errors import StoreError, VirtfleetError

if TYPE_CHECKING:
    from virtfleet.controller.service import Controller, Worker

log = logging.getLogger("virtfleet.controller.observe")

JOURNAL_SECONDS = 1.0


class Observability:
    def __init__(self, controller: Controller, stats_interval: float = 15.0) -> None:
        from virtfleet.controller.service import Worker  # the controller imports this module

        self.controller = controller
        self.stats_interval = stats_interval
        self.bus = controller.events
        self.stats = StatsCache(controller.pool, controller.state.hosts)
        self.journal = JournalWatcher(controller.store, self.bus)
        self.workers = {"stats": Worker("stats"), "journal": Worker("journal")}
        self.metrics = FleetMetrics(controller, self.stats, self.journal, self.all_workers)
        self._stop = threading.Event()

    def all_workers(self) -> Mapping[str, Worker]:
        return {**self.controller.workers, **self.workers}

    def routers(self, auth: Auth, *, metrics_auth: Auth | None = None,
                visible: Callable[[Any], Visible | None] | None = None) -> list[APIRouter]:
        """/api/v1/events guarded by `auth`, /metrics by `metrics_auth` (default: `auth`).
        `visible(principal)` narrows a caller's events (events_api.events_router). With the
        API's roles (docs/api.md) that is `routers(require("events.read"),
        metrics_auth=require("metrics.read"), visible=...)`."""
        return [events_router(self.bus, auth, visible),
                metrics_router(self.metrics, metrics_auth or auth)]

    def start(self) -> None:
        for worker, every, work in ((self.workers["stats"], self.stats_interval,
                                     self.stats.collect),
                                    (self.workers["journal"], JOURNAL_SECONDS,
                                     self.journal.poll)):
            t = threading.Thread(target=self._loop, args=(worker, every, work),
                                 name=worker.name, daemon=True)
            worker.thread = t
            t.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self, worker: Worker, every: float, work: Callable[[], object]) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            worker.busy_since = worker.progress_at = began
            try:
                work()
            except StoreError as exc:
                self._fault(worker, exc.message)
                self.controller.outage.failed(worker.name, exc.message)
            except VirtfleetError as exc:
                self._fault(worker, exc.message)
                log.error("%s pass failed: %s", worker.name, exc.message)
            except Exception as exc:  # noqa: BLE001 - the thread boundary: one bad pass must
                # not end the worker, or the metrics would silently stop moving.
                self._fault(worker, f"{type(exc).__name__}: {exc}")
                log.exception("%s pass failed with an unexpected error", worker.name)
            else:
                worker.failing = 0
                self.controller.outage.succeeded(worker.name)
            finally:
                worker.busy_since = None
            self._stop.wait(max(0.0, every - (time.monotonic() - began)))

    @staticmethod
    def _fault(worker: Worker, what: str) -> None:
        worker.faults += 1
        worker.failing += 1
        worker.last_fault = what
