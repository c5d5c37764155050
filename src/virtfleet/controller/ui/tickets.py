"""One-time console tickets: what a browser's console websocket must present.

A signed-in operator asks for a ticket with a CSRF-checked POST; the page then opens the
websocket with it. A ticket is random (256 bits), lives TTL_SECONDS, is good for one connect,
and only for the session that asked and the VM and console kind it was asked for. Only its
SHA-256 is kept, as the sessions keep theirs. A websocket cannot carry the CSRF header, so the
ticket is what proves the connect comes from the console's own page and not another site's.

A SPICE client opens one connection per channel (main, display, inputs, cursor, ...), each a
websocket to the same address, so a spice ticket is good for CONNECTS["spice"] connects within
its TTL: still one page's ticket, for one session and one VM. Any presentation that fails a
check (another session's cookie, another VM or kind, too late) burns the ticket.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from virtfleet.errors import Forbidden

TTL_SECONDS = 30.0
MAX_TICKETS = 10_000  # the oldest go first past this: memory stays bounded
KINDS = ("serial", "vnc", "spice")
SCREENS = ("vnc", "spice")  # the kinds relayed to a graphics display
# connects one ticket is good for: spice-html5 opens main, display, inputs, cursor and
# playback channels (and may retry one); the others one
CONNECTS = {"serial": 1, "vnc": 1, "spice": 8}


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class Ticket:
    session: str  # the digest of the session cookie that asked for it
    user: str
    vm: str
    host: str
    kind: str
    issued: float
    left: int = 1  # connects it is still good for
    # a screen's (address, port), found when the ticket was asked for: every connect of it
    # (each SPICE channel) goes there without reading the VM's XML again
    display: tuple[str, int] | None = None


class Tickets:
    def __init__(self, *, ttl: float = TTL_SECONDS, limit: int = MAX_TICKETS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.limit = limit
        self.clock = clock
        self._lock = threading.Lock()
        self._by_digest: dict[str, Ticket] = {}

    def issue(self, cookie: str, user: str, vm: str, host: str, kind: str,
              display: tuple[str, int] | None = None) -> str:
        """A new ticket for this session's cookie, the VM on `host` and the console `kind`
        (for a screen, where its `display` listens)."""
        secret = secrets.token_urlsafe(32)
        now = self.clock()
        with self._lock:
            for key in [k for k, t in self._by_digest.items() if now - t.issued > self.ttl]:
                del self._by_digest[key]
            while len(self._by_digest) >= self.limit:
                oldest = min(self._by_digest, key=lambda k: self._by_digest[k].issued)
                del self._by_digest[oldest]
            self._by_digest[_digest(secret)] = Ticket(_digest(cookie), user, vm, host, kind,
                                                      now, CONNECTS.get(kind, 1), display)
        return secret

    def redeem(self, secret: str, cookie: str, vm: str, kind: str) -> Ticket:
        """The ticket, one connect of it used now; Forbidden if it is unknown, used up,
        expired, another session's, or for another VM or kind. The same words for each, so a
        refusal tells an attacker nothing about which ticket exists."""
        now = self.clock()
        key = _digest(secret)
        with self._lock:
            ticket = self._by_digest.pop(key, None) if secret else None
            good = (ticket is not None and now - ticket.issued <= self.ttl
                    and secrets.compare_digest(ticket.session, _digest(cookie))
                    and ticket.vm == vm and ticket.kind == kind)
            if good and ticket is not None and ticket.left > 1:
                self._by_digest[key] = replace(ticket, left=ticket.left - 1)
        if not good or ticket is None:
            raise Forbidden("the console ticket is unknown, used, expired or not this "
                            "session's: open the console again", permission="console.ticket",
                            target=f"vm:{vm}")
        return ticket

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_digest)
