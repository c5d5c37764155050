"""The store going down, said once rather than by every worker on every pass.

With the database down each worker's pass fails (the journal watcher every second, the
heartbeat, takeover, HA and maintenance passes every few): a line for each was about three a
second. The first failure is logged, then a reminder at most every `every` seconds while it
lasts, and one line when every worker that failed on the store has had a good pass again (each
of those reads the store on every pass, so that is the store answering again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

OUTAGE_LOG_SECONDS = 60.0


class StoreOutage:
    def __init__(self, log: logging.Logger, every: float = OUTAGE_LOG_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.every = every
        self.clock = clock
        self._lock = threading.Lock()
        self._failing: set[str] = set()  # workers whose last pass failed on the store
        self._since: float | None = None  # when it went down, None while it answers
        self._said = 0.0  # when it was last said
        self._failures = 0  # failed passes since it was last said

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, worker: str, message: str) -> None:
        """`worker`'s pass failed on the store with `message`."""
        with self._lock:
            clock = self.clock()
            self._failing.add(worker)
            if self._since is None:
                self._since = self._said = clock
                self._failures = 0
                self.log.error("store unavailable (%s pass: %s); the workers keep trying, and "
                               "this is said again at most every %.0f s while it lasts",
                               worker, message, self.every)
                return
            self._failures += 1
            if clock - self._said >= self.every:
                self.log.error("store still unavailable after %.0f s (%d more failed passes): "
                               "%s", clock - self._since, self._failures, message)
                self._said = clock
                self._failures = 0

    def succeeded(self, worker: str) -> None:
        """`worker`'s pass went through."""
        with self._lock:
            self._failing.discard(worker)
            if self._since is not None and not self._failing:
                self.log.warning("store available again after %.0f s", self.clock() - self._since)
                self._since = None
