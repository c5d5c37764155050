"""The events service: what the running controller tells about the fleet, as it happens.

    for event in EventService(db_url, store).tail(EventsRequest(kinds=("vm",), follow=True)):
        ...

Events exist only where a controller follows the hypervisors (`virtfleet serve`); with none
running, tail raises HostUnavailable saying so. Without `follow` it returns what the
controller still keeps (its last 10,000 events, or those after `since`) and ends. With it, it
follows; when the stream breaks (the client fell behind and was dropped, or the controller
restarted) it reconnects with the last id it saw, so only what the controller no longer keeps
is lost, and the controller says so with a stream.gap event.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from virtfleet.errors import HostUnavailable, InvalidInput

if TYPE_CHECKING:
    from virtfleet.controller.eventstream import Message
    from virtfleet.inventory.records import ControllerRecord
    from virtfleet.inventory.store import Store

RECONNECT_FOR = 30.0  # seconds a follower keeps looking for a controller that went away
_EVENT_ID = re.compile(r"[0-9a-f]{8}-[0-9]+")

Note = Callable[[str], None]


@dataclass(frozen=True)
class EventsRequest:
    kinds: tuple[str, ...] = ()  # kinds or families (vm, host.down); all when empty
    follow: bool = False
    since: str | None = None  # an event id: only what came after it

    def check(self) -> None:
        from virtfleet.controller.events import check_kinds

        check_kinds(self.kinds, "kinds")
        if self.since is not None and not _EVENT_ID.fullmatch(self.since):
            raise InvalidInput("since", f"{self.since!r} is not an event id (EPOCH-SEQ, the "
                               "id of an event as --json prints it)")


@dataclass(frozen=True)
class StreamEvent:
    id: str  # "" for the stream's own notices (stream.gap, stream.dropped)
    kind: str
    body: dict[str, Any]  # the event as the API sends it: kind, at, subject fields, data

    def as_json(self) -> dict[str, Any]:
        return self.body


class EventService:
    def __init__(self, db_url: str, store: Callable[[], Store]) -> None:
        self.db_url = db_url
        self.store = store

    def _controller(self) -> ControllerRecord:
        import sqlite3

        from virtfleet.controller.client import is_live
        from virtfleet.inventory.registration import registration_from_sqlite

        try:
            rec = registration_from_sqlite(self.db_url)
        except sqlite3.Error:
            rec = self.store().controller()
        if rec is None or not is_live(rec):
            raise HostUnavailable("no controller is running for this store: events come from "
                                  "`virtfleet serve`, which follows the hypervisors")
        return rec

    def tail(self, req: EventsRequest, note: Note | None = None) -> Iterator[StreamEvent]:
        """The events, in order; with `follow`, until the caller stops (or no controller can
        be found for RECONNECT_FOR seconds: HostUnavailable)."""
        from virtfleet.controller.client import controller_wait
        from virtfleet.controller.eventstream import read_events

        req.check()
        last = req.since
        lost_at: float | None = None
        while True:
            try:
                rec = self._controller()
                for msg in read_events(rec, wait=controller_wait(), kinds=req.kinds,
                                       follow=req.follow, last_id=last):
                    lost_at = None
                    if msg.id:
                        last = msg.id
                    yield _event(msg)
                if not req.follow:
                    return
                why = "the controller ended the stream"
            except HostUnavailable as exc:
                if not req.follow:
                    raise
                why = exc.message
            clock = time.monotonic()
            if lost_at is None:  # say it once per outage, not once a second
                lost_at = clock
                if note is not None:
                    note(f"{why}; reconnecting" + (f" after {last}" if last else ""))
            elif clock - lost_at > RECONNECT_FOR:
                raise HostUnavailable(f"{why}; no controller answered for "
                                      f"{RECONNECT_FOR:g}s")
            time.sleep(1.0)


def _event(msg: Message) -> StreamEvent:
    return StreamEvent(msg.id, msg.kind, msg.body)
