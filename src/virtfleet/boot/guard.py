"""Limits on refused requests to `boot serve`: guesses (of tokens, MACs, host names) and the
log lines they cause.

A sliding window per key: at most `limit` refusals in any `window` seconds. Past that, the
key's requests are answered 429 until the oldest refusal leaves the window. Keys are a client
address or a host name (see BootService for which refusals count against which).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable

PRUNE_AT = 10_000  # keys kept before stale ones are dropped


class Window:
    def __init__(self, limit: int, window: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be at least 1 and window positive")
        self.limit = limit
        self.window = window
        self.clock = clock
        self._seen: dict[Hashable, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: Hashable, now: float) -> deque[float]:
        times = self._seen.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def wait(self, key: Hashable) -> float:
        """Seconds until `key` is under its limit again; 0 when it is under it now."""
        with self._lock:
            now = self.clock()
            times = self._recent(key, now)
            if len(times) < self.limit:
                return 0.0
            return max(times[0] + self.window - now, 0.001)

    def note(self, key: Hashable) -> int:
        """Count one event for `key`; returns how many it has in the window, this one too."""
        with self._lock:
            now = self.clock()
            if len(self._seen) >= PRUNE_AT:
                self._prune(now)
            times = self._recent(key, now)
            times.append(now)
            self._seen[key] = times
            return len(times)

    def _prune(self, now: float) -> None:
        for key in [k for k, v in self._seen.items() if not v or v[-1] <= now - self.window]:
            del self._seen[key]
