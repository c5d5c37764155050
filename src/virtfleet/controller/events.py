"""The controller's events: what changed in the fleet, told to whoever listens, never waited on.

Publishers (the event worker, libvirt's event thread, the HA monitor, an operation's progress
callback) call `EventBus.publish`; it takes a lock, appends to a bounded ring and to each
subscriber's bounded queue, and returns. A subscriber that does not keep up (a client that
stopped reading) never slows a publisher: when its queue is full it is dropped, and the last
thing it gets is a `stream.dropped` event saying so and where to resume from.

Resuming: every event has an id `EPOCH-SEQ`, EPOCH a random word of this controller process and
SEQ counting from 1. A client that comes back with the last id it saw (SSE's Last-Event-ID)
gets what it missed from the ring. If the ring no longer holds it, or the id is another
process's, it first gets a `stream.gap` event, then whatever the ring holds: it should re-read
the state it cares about.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from virtfleet.errors import InvalidInput
from virtfleet.inventory.records import HostRecord

# Every kind a stream can carry, and what it means (docs/monitoring.md says more).
KINDS: dict[str, str] = {
    "vm.state": "a VM's state changed: libvirt's lifecycle event, and the state re-read",
    "host.up": "the controller reaches a hypervisor (first contact, or back after host.down)",
    "host.down": "the controller lost a hypervisor (connection closed, keepalive unanswered, "
                 "or a sync failed); its VMs are shown as unknown",
    "host.suspect": "HA: a lost hypervisor is suspect; its BMC is being asked",
    "host.unknown": "HA: whether a lost hypervisor is off cannot be confirmed; its VMs are held",
    "operation.started": "a journaled operation began",
    "operation.progress": "a journaled operation made a step (or a long action reports how far "
                          "it is)",
    "operation.ended": "an operation finished, or was rolled back in full",
    "operation.failed": "an operation's rollback left something behind, or its process died "
                        "(see ops list)",
    "ha.action": "HA did something: fence, restart, reconcile",
    "stream.gap": "events before this one may be missing: re-read what you care about",
    "stream.dropped": "this stream is being closed: the client did not keep up",
}
FAMILIES = sorted({k.split(".", 1)[0] for k in KINDS})
_ID = re.compile(r"([0-9a-f]{8})-([0-9]+)")

RING_SIZE = 10_000  # events kept for resuming
QUEUE_SIZE = 2_000  # events a subscriber may fall behind before it is dropped


@dataclass(frozen=True)
class Event:
    kind: str
    at: datetime
    seq: int = 0  # 0: not in the sequence (stream.gap, stream.dropped)
    epoch: str = ""
    site: str | None = None
    pod: str | None = None
    host: str | None = None
    groups: tuple[str, ...] = ()
    vm: str | None = None
    operation: str | None = None
    data: dict[str, object] = field(default_factory=dict)
    observed_at: datetime | None = None  # when its source happened (a libvirt callback)

    @property
    def id(self) -> str:
        return f"{self.epoch}-{self.seq}" if self.seq else ""

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"kind": self.kind, "at": self.at.isoformat()}
        if self.seq:
            out["id"] = self.id
        for key in ("site", "pod", "host", "vm", "operation"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.groups:
            out["groups"] = list(self.groups)
        out["data"] = self.data
        return out


def check_kinds(kinds: Iterable[str], name: str = "kind") -> tuple[str, ...]:
    """The kinds (or families: `host` for every host.*) a subscriber asked for, checked."""
    out = tuple(kinds)
    for k in out:
        if k not in KINDS and k not in FAMILIES:
            raise InvalidInput(name, f"{k!r} is not an event kind; kinds are "
                               f"{', '.join(FAMILIES)} or one of {', '.join(KINDS)}")
    return out


def _matches(kinds: tuple[str, ...], kind: str) -> bool:
    return not kinds or kind in kinds or kind.split(".", 1)[0] in kinds


Visible = Callable[[Event], bool]


class Subscription:
    """One reader's view: what it missed (the backlog), then live events in a bounded queue."""

    def __init__(self, bus: EventBus, kinds: tuple[str, ...], visible: Visible | None,
                 limit: int) -> None:
        self._bus = bus
        self.kinds = kinds
        self.visible = visible
        self._limit = limit
        self._queue: deque[Event] = deque()
        self._cond = threading.Condition()
        self._wake: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self.dropped = False
        self.closed = False
        self.last_id = ""  # of the last sequenced event handed to the reader

    def wants(self, event: Event) -> bool:
        return _matches(self.kinds, event.kind) and (self.visible is None
                                                     or self.visible(event))

    def offer(self, event: Event) -> None:
        """From the publisher's thread: queue it, or drop this subscriber. Never blocks."""
        with self._cond:
            if self.dropped or self.closed:
                return
            if len(self._queue) >= self._limit:
                self.dropped = True
                behind = len(self._queue)
                self._queue.clear()
                self._queue.append(Event(
                    kind="stream.dropped", at=datetime.now(UTC), data={
                        "reason": f"the client fell {behind} events behind",
                        "resume_from": self.last_id}))
                self._bus.count_dropped()
            else:
                self._queue.append(event)
            self._cond.notify()
            wake = self._wake
        if wake is not None:
            loop, flag = wake
            try:
                loop.call_soon_threadsafe(flag.set)
            except RuntimeError:  # its loop is closed: the reader is gone
                self.close()

    def _take(self) -> list[Event]:
        out = list(self._queue)
        self._queue.clear()
        for e in out:
            if e.seq:
                self.last_id = e.id
        return out

    def get(self, timeout: float) -> list[Event]:
        """Whatever arrived, waiting up to `timeout` seconds for something (a thread's reader)."""
        with self._cond:
            if not self._queue:
                self._cond.wait(timeout)
            return self._take()

    async def next(self, timeout: float) -> list[Event]:
        """The same for a reader on an asyncio loop (the SSE response)."""
        if self._wake is None:
            self._wake = (asyncio.get_running_loop(), asyncio.Event())
        flag = self._wake[1]
        with self._cond:
            if self._queue:
                return self._take()
            flag.clear()
        with contextlib.suppress(TimeoutError):  # nothing came: the caller sends a keepalive
            await asyncio.wait_for(flag.wait(), timeout)
        with self._cond:
            return self._take()

    @property
    def finished(self) -> bool:
        """Dropped, and the final event handed over: nothing more will come."""
        with self._cond:
            return self.dropped and not self._queue

    def close(self) -> None:
        with self._cond:
            self.closed = True
        self._bus.unsubscribe(self)

    def end(self) -> None:
        """Nothing more will come (the controller is stopping): the reader is woken, hands
        over what is queued, and finishes."""
        with self._cond:
            self.dropped = True
            self._cond.notify()
            wake = self._wake
        if wake is not None:
            loop, flag = wake
            with contextlib.suppress(RuntimeError):  # its loop is closed: the reader is gone
                loop.call_soon_threadsafe(flag.set)


Tap = Callable[[Event], None]


class EventBus:
    """Thread-safe publish/subscribe with a bounded history. One per controller."""

    def __init__(self, ring: int = RING_SIZE, queue: int = QUEUE_SIZE) -> None:
        self.epoch = secrets.token_hex(4)
        self._lock = threading.Lock()
        self._ring: deque[Event] = deque(maxlen=ring)
        self._seq = 0
        self._queue = queue
        self._subs: list[Subscription] = []
        self._taps: list[Tap] = []
        self.dropped = 0  # subscribers dropped for not keeping up, since start

    # -- publishing ---------------------------------------------------------------------------

    def publish(self, kind: str, *, host: HostRecord | None = None, vm: str | None = None,
                operation: str | None = None, data: dict[str, object] | None = None,
                observed_at: datetime | None = None, at: datetime | None = None) -> Event:
        """Record and hand out one event; returns it. Safe from any thread; never blocks on a
        reader. `host` gives the event its site, pod, host and groups."""
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")  # a programming error, not input
        with self._lock:
            self._seq += 1
            event = Event(
                kind=kind, at=at or datetime.now(UTC), seq=self._seq, epoch=self.epoch,
                site=host.site if host else None, pod=host.pod if host else None,
                host=host.name if host else None, groups=host.groups if host else (),
                vm=vm, operation=operation, data=data or {}, observed_at=observed_at)
            self._ring.append(event)
            subs = list(self._subs)
            taps = list(self._taps)
        for tap in taps:
            tap(event)
        for sub in subs:
            if sub.wants(event):
                sub.offer(event)
        return event

    def tap(self, tap: Tap) -> None:
        """Call `tap(event)` on the publisher's thread for every event (metrics count them);
        it must be quick and must not raise."""
        with self._lock:
            self._taps.append(tap)

    def count_dropped(self) -> None:
        with self._lock:
            self.dropped += 1

    # -- subscribing --------------------------------------------------------------------------

    def parse_id(self, last_id: str, name: str = "Last-Event-ID") -> tuple[str, int]:
        m = _ID.fullmatch(last_id)
        if m is None:
            raise InvalidInput(name, f"{last_id!r} is not an event id (EPOCH-SEQ, as sent in "
                               "the stream's id: lines)")
        return m.group(1), int(m.group(2))

    def subscribe(self, kinds: tuple[str, ...] = (), last_id: str | None = None,
                  visible: Visible | None = None, follow: bool = True
                  ) -> tuple[list[Event], Subscription | None]:
        """(backlog, subscription): the events after `last_id` still in the ring (all of it when
        `last_id` is None), preceded by a stream.gap when some are gone; then, if `follow`,
        a subscription for what comes next. Taken under one lock: nothing falls between."""
        kinds = check_kinds(kinds)
        wanted = None if last_id is None else self.parse_id(last_id)
        with self._lock:
            if wanted is not None and wanted[0] == self.epoch and wanted[1] > self._seq:
                raise InvalidInput("Last-Event-ID", f"{last_id!r} is later than the last "
                                   f"event of this stream ({self.epoch}-{self._seq})")
            backlog, gap = self._since(wanted)
            sub = None
            if follow:
                sub = Subscription(self, kinds, visible, self._queue)
                # Everything up to now is in the backlog: a resume starts after it.
                sub.last_id = f"{self.epoch}-{self._seq}" if self._seq else ""
                self._subs.append(sub)
        out = [e for e in backlog if _matches(kinds, e.kind)
               and (visible is None or visible(e))]
        if gap:
            out.insert(0, Event(kind="stream.gap", at=datetime.now(UTC), data={"reason": gap}))
        return out, sub

    def _since(self, wanted: tuple[str, int] | None) -> tuple[list[Event], str]:
        if wanted is None:
            return list(self._ring), ""
        epoch, seq = wanted
        if epoch != self.epoch:
            return list(self._ring), ("the controller restarted (or this id is another's); "
                                      "events since may be missing")
        oldest = self._ring[0].seq if self._ring else self._seq + 1
        gap = ""
        if seq + 1 < oldest:
            gap = f"{oldest - seq - 1} events are no longer kept (the ring holds {len(self._ring)})"
        return [e for e in self._ring if e.seq > seq], gap

    def end_streams(self) -> None:
        """End every subscription (the controller is stopping): an events stream open to the
        end would hold the server's shutdown, and with it the release of the controller's
        leases, until its client left."""
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub.end()

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._seq


class HostEvents:
    """Publishes host.up / host.down when a host's reachability changes, not on every answer:
    a sync of 1,500 healthy hosts says nothing; the first answer after a loss says host.up."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self._lock = threading.Lock()
        self._down: dict[str, float] = {}  # host -> monotonic time it went down
        self._seen: set[str] = set()

    def answered(self, host: HostRecord, vms: int) -> None:
        with self._lock:
            first = host.name not in self._seen
            since = self._down.pop(host.name, None)
            self._seen.add(host.name)
        if first or since is not None:
            data: dict[str, object] = {"vms": vms, "again": since is not None}
            if since is not None:
                data["down_seconds"] = round(time.monotonic() - since, 3)
            self.bus.publish("host.up", host=host, data=data)

    def lost(self, host: HostRecord, reason: str, error_kind: str) -> None:
        with self._lock:
            if host.name in self._down:
                return
            self._down[host.name] = time.monotonic()
            self._seen.add(host.name)
        self.bus.publish("host.down", host=host,
                         data={"reason": reason, "error_kind": error_kind})

    def forget(self, name: str) -> None:
        """The host left the inventory."""
        with self._lock:
            self._down.pop(name, None)
            self._seen.discard(name)
