"""`/metrics`: the fleet and the controller itself, in Prometheus' text format.

Three parts, each from memory, so a scrape never waits on a hypervisor:

- the fleet view (which hosts answer, every VM's state, vCPUs and memory), rendered again only
  when the view changed (FleetState.version);
- the resource figures of the last bulk-stats pass (stats.py), rendered when the pass ended;
- the controller's own health through prometheus-client: hosts connected, reconnects, event
  lag, events and subscribers, operations, worker faults, the stats passes.

Every fleet series has the labels site, pod, host and group (a host's groups, joined by commas
when it has several), and a VM's also vm; docs/monitoring.md lists them all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from fastapi import APIRouter, Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from virtfleet.controller.events import Event
from virtfleet.controller.events_api import Auth, guard
from virtfleet.controller.exposition import Family, Lines, assemble, escape, host_labels, vm_labels
from virtfleet.controller.journalwatch import JournalWatcher
from virtfleet.controller.stats import StatsCache

if TYPE_CHECKING:
    from virtfleet.controller.service import Controller, Worker

HOST_UP = Family("virtfleet_host_up", "gauge",
                 "1 if the controller reaches the hypervisor, 0 if it lost it")
VM_STATE = Family("virtfleet_vm_state", "gauge",
                  "1 for the VM's state as the controller sees it (unknown: its host is lost)")
VM_VCPUS = Family("virtfleet_vm_vcpus", "gauge", "vCPUs of the VM")
VM_MEMORY = Family("virtfleet_vm_memory_bytes", "gauge", "Memory the VM is defined with")
VIEW_FAMILIES = (HOST_UP, VM_STATE, VM_VCPUS, VM_MEMORY)
# The text format exposition.py writes (and generate_latest, for these plain names): what
# Prometheus 2.x expects; prometheus-client's CONTENT_TYPE_LATEST says 1.0.0 in newer releases.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class FleetMetrics:
    def __init__(self, controller: Controller, stats: StatsCache, journal: JournalWatcher,
                 workers: Callable[[], Mapping[str, Worker]]) -> None:
        self.controller = controller
        self.stats = stats
        self.journal = journal
        self.workers = workers
        # One registry per controller, not prometheus-client's process-wide default.
        self.registry = CollectorRegistry(auto_describe=False)
        self.events = Counter("virtfleet_controller_events", "Events published, by kind",
                              ["kind"], registry=self.registry)
        self.reconnects = Counter("virtfleet_controller_reconnects",
                                  "Hypervisors reached again after they were lost",
                                  registry=self.registry)
        self.losses = Counter("virtfleet_controller_host_losses",
                              "Hypervisors lost (connection closed or a sync failed)",
                              registry=self.registry)
        self.lag = Histogram("virtfleet_controller_event_lag_seconds",
                             "From a libvirt lifecycle event to the fleet view (and the "
                             "events stream) showing it", buckets=LAG_BUCKETS,
                             registry=self.registry)
        self.registry.register(_Health(self))
        controller.events.tap(self._count)
        self._view_lock = threading.Lock()
        self._view: tuple[int, bytes] = (-1, b"")

    def _count(self, event: Event) -> None:
        self.events.labels(event.kind).inc()
        if event.kind == "host.up" and event.data.get("again"):
            self.reconnects.inc()
        elif event.kind == "host.down":
            self.losses.inc()
        elif event.observed_at is not None:
            self.lag.observe(max(0.0, (event.at - event.observed_at).total_seconds()))

    def view_text(self) -> bytes:
        """The fleet view's series, rendered once per version of the view."""
        state = self.controller.state
        with self._view_lock:
            version = state.version
            if self._view[0] == version:
                return self._view[1]
            hosts = {h.name: h for h in state.hosts()}
            lost = {f.host for f in state.failures()}
            labels = {name: host_labels(rec) for name, rec in hosts.items()}
            lines = Lines()
            for name, hl in labels.items():
                lines.add(HOST_UP, hl, 0 if name in lost else 1)
            for v in state.vms():
                if v.host not in labels:
                    continue
                vl = vm_labels(labels[v.host], v.domain.name)
                lines.add(VM_STATE, f'{vl},state="{escape(v.domain.state)}"', 1)
                lines.add(VM_VCPUS, vl, v.domain.vcpus)
                lines.add(VM_MEMORY, vl, v.domain.memory_mib * 1024 * 1024)
            text = assemble(VIEW_FAMILIES, [lines.joined()]).encode()
            self._view = (version, text)
            return text

    def render(self) -> bytes:
        return b"".join((self.view_text(), self.stats.last.text,
                         generate_latest(self.registry)))


class _Health(Collector):
    """The controller's figures that are read when scraped rather than counted as they go."""

    def __init__(self, metrics: FleetMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        ctl = self.m.controller
        yield GaugeMetricFamily("virtfleet_controller_start_time_seconds",
                                "When the controller started (Unix time)",
                                value=ctl.started_at.timestamp())
        yield GaugeMetricFamily("virtfleet_controller_healthy",
                                "1 while every worker keeps the fleet view current",
                                value=0 if ctl.problems() else 1)
        total = len(ctl.state.hosts())
        lost = len(ctl.state.failures())
        hosts = GaugeMetricFamily("virtfleet_controller_hosts",
                                  "Hypervisors in the inventory, by whether they answer",
                                  labels=["status"])
        hosts.add_metric(["connected"], total - lost)
        hosts.add_metric(["lost"], lost)
        yield hosts
        up = GaugeMetricFamily("virtfleet_controller_worker_up",
                               "1 while the worker thread runs", labels=["worker"])
        faults = CounterMetricFamily("virtfleet_controller_worker_faults",
                                     "Passes of a worker that failed", labels=["worker"])
        for name, w in sorted(self.m.workers().items()):
            up.add_metric([name], 1 if w.thread is not None and w.thread.is_alive() else 0)
            faults.add_metric([name], w.faults)
        yield up
        yield faults
        bus = ctl.events
        yield GaugeMetricFamily("virtfleet_controller_event_subscribers",
                                "Clients reading the events stream", value=bus.subscribers)
        yield CounterMetricFamily("virtfleet_controller_event_subscribers_dropped",
                                  "Events-stream clients dropped for not keeping up",
                                  value=bus.dropped)
        yield from self._operations()
        yield from self._stats()

    def _operations(self) -> Iterator[Metric]:
        ops = GaugeMetricFamily("virtfleet_controller_operations",
                                "Operations in the journal, by state", labels=["state"])
        counts = self.m.journal.counts()
        for state in ("running", "undoing", "failed", "interrupted"):
            ops.add_metric([state], counts.get(state, 0))
        yield ops
        ended = CounterMetricFamily("virtfleet_controller_operations_finished",
                                    "Operations that stopped running, by kind and result "
                                    "(ended, failed, interrupted)", labels=["kind", "result"])
        for (kind, result), n in sorted(self.m.journal.ended_counts().items()):
            ended.add_metric([kind, result], n)
        yield ended

    def _stats(self) -> Iterator[Metric]:
        cache = self.m.stats
        last = cache.last
        yield CounterMetricFamily("virtfleet_controller_stats_passes",
                                  "Bulk-stats passes over the fleet", value=cache.passes)
        yield CounterMetricFamily("virtfleet_controller_stats_host_errors",
                                  "Hypervisors that did not answer a stats pass",
                                  value=cache.host_errors)
        if last.finished_at:
            yield GaugeMetricFamily("virtfleet_controller_stats_pass_seconds",
                                    "How long the last stats pass took", value=last.seconds)
            yield GaugeMetricFamily("virtfleet_controller_stats_age_seconds",
                                    "Seconds since the last stats pass ended",
                                    value=max(0.0, time.time() - last.finished_at))


def metrics_router(metrics: FleetMetrics, auth: Auth) -> APIRouter:
    router = APIRouter()

    @router.get("/metrics", dependencies=[guard(auth)], response_class=Response,
                summary="The fleet and the controller in Prometheus' text format")
    def scrape() -> Response:
        return Response(content=metrics.render(), media_type=CONTENT_TYPE)

    return router
