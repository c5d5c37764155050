"""`GET /api/v1/events`: the events bus (events.py) as a server-sent events stream.

    curl -N --unix-socket SOCK -H "Authorization: Bearer TOKEN" \
        'http://localhost/api/v1/events?kind=vm&kind=host.down'

Each event is one SSE message: `id:` (EPOCH-SEQ, what Last-Event-ID sends back), `event:` (its
kind) and `data:` (the event as JSON, one line). The stream first sends what the ring still
holds after Last-Event-ID (or everything it holds, when there is none), then follows live;
`follow=false` sends only that backlog and ends. A comment line goes out every KEEPALIVE
seconds, so proxies keep the connection and a vanished client is noticed.

A client that stops reading is not waited for: its queue fills, the bus drops it with a final
`stream.dropped` event, and a write still blocked SEND_TIMEOUT seconds later ends the response.
"""

# No `from __future__ import annotations` here: FastAPI reads the route's parameters from their
# annotations, and one of them names `auth`, a local of events_router, which a string
# annotation could not resolve.

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, params
from starlette.responses import StreamingResponse
from starlette.types import Send

from virtfleet.controller.events import Event, EventBus, Subscription, Visible
from virtfleet.errors import InvalidInput

log = logging.getLogger("virtfleet.controller.events")

KEEPALIVE = 15.0
SEND_TIMEOUT = 30.0
RETRY_MS = 2000  # how soon an EventSource reconnects


def frame(event: Event) -> str:
    """One SSE message. The JSON is one line, so it is one `data:` field."""
    head = f"id: {event.id}\n" if event.seq else ""
    return f"{head}event: {event.kind}\ndata: {json.dumps(event.as_json())}\n\n"


class EventStreamResponse(StreamingResponse):
    """A streaming response whose writes give up after SEND_TIMEOUT: a client that stopped
    reading cannot hold this coroutine (and its buffers) forever."""

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        try:
            async for chunk in self.body_iterator:
                data = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
                await asyncio.wait_for(send({"type": "http.response.body", "body": data,
                                             "more_body": True}), SEND_TIMEOUT)
            await asyncio.wait_for(send({"type": "http.response.body", "body": b"",
                                         "more_body": False}), SEND_TIMEOUT)
        except TimeoutError:
            log.warning("an events client did not read for %gs; closing its stream",
                        SEND_TIMEOUT)


async def _stream(backlog: list[Event], sub: Subscription | None) -> AsyncIterator[str]:
    try:
        yield f"retry: {RETRY_MS}\n\n"
        for event in backlog:
            yield frame(event)
        if sub is None:
            return
        while True:
            batch = await sub.next(KEEPALIVE)
            if not batch:
                if sub.finished:  # ended: the controller is stopping
                    return
                yield ": keepalive\n\n"
                continue
            for event in batch:
                yield frame(event)
            if sub.finished:
                return
    finally:
        if sub is not None:
            sub.close()


# A route's guard: a function FastAPI calls as a dependency, or a Depends(...) already made.
Auth = Callable[..., Any] | params.Depends


def guard(auth: Auth) -> Any:
    return auth if isinstance(auth, params.Depends) else Depends(auth)


def events_router(bus: EventBus, auth: Auth,
                  visible: Callable[[Any], Visible | None] | None = None,
                  path: str = "/api/v1/events") -> APIRouter:
    """The route at `path` (the web console serves the same stream under its session at
    /ui/events), guarded by `auth`. `visible(principal)`, where principal is what `auth`
    returned, may narrow what a caller sees (a role scoped to a site or group: each event
    carries site, pod, host, groups and vm); by default a caller sees every event."""
    router = APIRouter()
    caller = guard(auth)

    @router.get(path, response_class=EventStreamResponse,
                summary="Server-sent events: VM states, hosts up and down, operations, HA")
    async def events(
        principal: Annotated[Any, caller],
        kind: Annotated[list[str] | None, Query(
            description="Kinds (vm.state) or families (host) to send; all when absent")] = None,
        follow: Annotated[bool, Query(description="Keep the stream open for new events")]
        = True,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
        since: Annotated[str | None, Query(
            description="The same as the Last-Event-ID header, for clients that cannot set "
            "it")] = None,
    ) -> EventStreamResponse:
        try:
            backlog, sub = bus.subscribe(tuple(kind or ()), last_event_id or since,
                                         visible(principal) if visible else None, follow)
        except InvalidInput as exc:
            raise HTTPException(status_code=400, detail=exc.message) from None
        return EventStreamResponse(_stream(backlog, sub), media_type="text/event-stream",
                                   headers={"Cache-Control": "no-cache",
                                            "X-Accel-Buffering": "no"})

    return router
