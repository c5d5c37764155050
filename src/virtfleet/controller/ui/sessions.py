"""Signed-in browsers: a session per sign-in, held in the controller's memory.

The cookie carries a random 256-bit secret; only its SHA-256 is kept here, so a dump of this
process's memory does not hand out live cookies. Each session keeps the bearer token its user
signed in with, and every page authenticates that token against the store again (the API's own
check, fleet/access.py): a revoked token or a disabled user ends the session on the next click.

Sign-out removes the session here, so the old cookie is refused from then on (a cookie is not
merely deleted in the browser). Sessions do not survive a controller restart: the user signs
in again, which is the price of keeping them off the store (no table, no migration).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

IDLE_SECONDS = 8 * 3600.0  # a session nobody used for this long is gone
MAX_SECONDS = 24 * 3600.0  # and none lives longer than this, used or not
MAX_SESSIONS = 10_000  # the oldest go first past this: memory stays bounded


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class Session:
    user: str
    bearer: str  # the token the user signed in with, checked again on every request
    csrf: str  # the synchronizer token every POST must carry
    created: float
    seen: float


class Sessions:
    def __init__(self, *, idle: float = IDLE_SECONDS, longest: float = MAX_SECONDS,
                 limit: int = MAX_SESSIONS, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.idle = idle
        self.longest = longest
        self.limit = limit
        self.clock = clock
        self._lock = threading.Lock()
        self._by_digest: dict[str, Session] = {}

    def open(self, user: str, bearer: str) -> tuple[str, Session]:
        """A new session: (the cookie's value, the session)."""
        secret = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(user, bearer, secrets.token_urlsafe(32), now, now)
        with self._lock:
            while len(self._by_digest) >= self.limit:
                oldest = min(self._by_digest, key=lambda k: self._by_digest[k].seen)
                del self._by_digest[oldest]
            self._by_digest[_digest(secret)] = session
        return secret, session

    def get(self, cookie: str) -> Session | None:
        """The live session of a cookie (and it counts as used now), else None."""
        if not cookie:
            return None
        key = _digest(cookie)
        now = self.clock()
        with self._lock:
            session = self._by_digest.get(key)
            if session is None:
                return None
            if now - session.seen > self.idle or now - session.created > self.longest:
                del self._by_digest[key]
                return None
            session.seen = now
            return session

    def alive(self, cookie: str) -> bool:
        """Whether the cookie's session is still open (it is not counted as used)."""
        now = self.clock()
        with self._lock:
            session = self._by_digest.get(_digest(cookie))
            return session is not None and now - session.seen <= self.idle and (
                now - session.created <= self.longest)

    def close(self, cookie: str) -> bool:
        """Sign out: the cookie is refused from now on. Whether it was a live session."""
        with self._lock:
            return self._by_digest.pop(_digest(cookie), None) is not None

    def close_user(self, user: str) -> int:
        """Every session of `user` (its token went bad): how many there were."""
        with self._lock:
            gone = [k for k, s in self._by_digest.items() if s.user == user]
            for k in gone:
                del self._by_digest[k]
            return len(gone)

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_digest)


def same_token(given: str, expected: str) -> bool:
    """A CSRF token compared in constant time; an empty one never matches."""
    return bool(given) and secrets.compare_digest(given.encode(), expected.encode())
