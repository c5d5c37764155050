"""Ask many hypervisors the same thing at once, each with its own deadline.

A fleet query must never wait on its slowest host for longer than the per-host deadline, and one
dead host must never fail the others. Each host's work runs in its own daemon thread, at most
`concurrency` at a time; a job that passes its deadline is reported as OperationTimeout and
abandoned (its thread ends when libvirt's keepalive gives up on the peer), and its slot goes to
the next host. Results come back per host, in the order the hosts were given.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, TypeVar

import libvirt

from virtfleet.config import Timeouts, fanout_concurrency, ssh_concurrency
from virtfleet.errors import HostUnavailable, HypervisorError, OperationTimeout, VirtfleetError
from virtfleet.inventory.records import HostRecord
from virtfleet.transport.connect import transport_of
from virtfleet.virt.errors import map_error
from virtfleet.virt.host import Host

T = TypeVar("T")
log = logging.getLogger("virtfleet.fanout")


@dataclass(frozen=True)
class HostResult(Generic[T]):
    host: HostRecord
    value: T | None = None
    error: VirtfleetError | None = None
    seconds: float = 0.0
    at: datetime = field(default_factory=lambda: datetime.now(UTC))  # when the answer came

    @property
    def ok(self) -> bool:
        return self.error is None


class ConnectionPool:
    """One open Host per hypervisor, reopened when its connection died. Thread-safe.

    A long-lived pool (the controller's) keeps connections open with keepalive. A one-shot
    pool (`one_shot=True`, a CLI query) closes each host's connection as soon as its work is
    done: the hypervisor's daemon then never holds more than `concurrency` of our clients,
    and the closes overlap the work instead of trailing it.
    """

    def __init__(self, timeouts: Timeouts | None = None, one_shot: bool = False) -> None:
        self.timeouts = timeouts or Timeouts.from_env()
        self.one_shot = one_shot
        self._hosts: dict[str, Host] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock_for(self, uri: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(uri, threading.Lock())

    def get(self, record: HostRecord, inline: bool = False) -> Host:
        """The host's live connection, opened if need be (`inline`: see Host.open)."""
        with self._lock_for(record.uri):
            host = self._hosts.get(record.uri)
            if host is not None and host.alive:
                return host
            if host is not None:
                host.close()
            host = Host.open(record.uri, self.timeouts, label=record.name,
                             keepalive=not self.one_shot, inline=inline)
            self._hosts[record.uri] = host
            return host

    def held(self, record: HostRecord) -> Host:
        """The open, live connection to this host, never a new one (HostUnavailable if none).

        For readers that ride on connections someone else opened and watches: opening one here
        would give the controller a connection it subscribed no events on."""
        with self._guard:
            host = self._hosts.get(record.uri)
        if host is None or not host.alive:
            raise HostUnavailable("not connected", host=record.name)
        return host

    def alive(self, record: HostRecord) -> bool:
        """Whether an open, live connection to this host is held (no RPC)."""
        with self._guard:
            host = self._hosts.get(record.uri)
        return host is not None and host.alive

    def release(self, record: HostRecord) -> None:
        """The caller is done with this host for now; a one-shot pool closes it."""
        if not self.one_shot:
            return
        with self._guard:
            host = self._hosts.pop(record.uri, None)
        if host is not None:
            host.close()

    def discard(self, record: HostRecord) -> None:
        """Forget a host whose call hung; close it off the caller's thread (close may block)."""
        with self._guard:
            host = self._hosts.pop(record.uri, None)
        if host is not None:
            threading.Thread(target=host.close, daemon=True).start()

    def opened(self) -> list[str]:
        with self._guard:
            return list(self._hosts)

    def __enter__(self) -> ConnectionPool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection, several at once: each close waits for its server."""
        with self._guard:
            hosts = list(self._hosts.values())
            self._hosts.clear()
        if len(hosts) < 8:
            for host in hosts:
                host.close()
            return
        pending = iter(hosts)
        lock = threading.Lock()

        def closer() -> None:
            while True:
                with lock:
                    host = next(pending, None)
                if host is None:
                    return
                host.close()

        workers = [threading.Thread(target=closer, daemon=True) for _ in range(8)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=self.timeouts.call)


Progress = Callable[[HostResult[object]], None]


def fan_out(
    hosts: Sequence[HostRecord],
    work: Callable[[Host], T],
    pool: ConnectionPool,
    *,
    concurrency: int | None = None,
    deadline: float | None = None,
    progress: Callable[[HostResult[T]], None] | None = None,
    connect: bool = True,
) -> list[HostResult[T]]:
    """Run `work(host)` for every host; return each host's value or error, in input order.

    At most `concurrency` hosts at once, and of those at most VIRTFLEET_SSH_CONCURRENCY over
    qemu+ssh (each is an ssh process); a host's deadline starts when its turn comes.
    `connect=False` uses only connections the pool holds already (ConnectionPool.held).

    The jobs run on a fixed set of reused workers. A one-shot pool's connection is opened in
    the worker's own thread and this loop watches the connect deadline: at fleet scale a
    thread per host and a second one per open cost the client more CPU in thread switches
    than the queries (docs/benchmarks.md, fleet_query).
    """
    limit = max(1, concurrency or fanout_concurrency())
    per_host = deadline if deadline is not None else pool.timeouts.call
    connect_s = pool.timeouts.connect
    inline = connect and pool.one_shot  # a long-lived pool's open keeps its own deadline
    results: list[HostResult[T] | None] = [None] * len(hosts)
    done_q: queue.Queue[tuple[int, T | None, VirtfleetError | None, float]] = queue.Queue()
    jobs: queue.Queue[int | None] = queue.Queue()
    running: dict[int, float] = {}  # index -> start time
    connecting: set[int] = set()  # opening inline; the connect deadline applies
    given_up: set[int] = set()
    state = threading.Lock()  # decides, once per host, whether its work runs or it is given up
    over_ssh = [transport_of(h.uri) == "ssh" for h in hosts]
    ssh_limit = ssh_concurrency() if any(over_ssh) else limit
    waiting = deque(i for i in range(len(hosts)) if not over_ssh[i])
    waiting_ssh = deque(i for i in range(len(hosts)) if over_ssh[i])
    ssh_running = 0

    def job(i: int) -> bool:
        """Run host i's work; False when it was given up (its worker then leaves the set)."""
        start = time.monotonic()
        err: VirtfleetError | None = None
        value: T | None = None
        try:
            if inline:
                host = pool.get(hosts[i], inline=True)
                with state:
                    late = i in given_up
                    connecting.discard(i)
                if late:  # reported as a connect timeout already: the work must not run
                    pool.discard(hosts[i])
                    return False
            else:
                host = pool.get(hosts[i]) if connect else pool.held(hosts[i])
            value = work(host)
        except VirtfleetError as exc:
            err = exc
        except libvirt.libvirtError as exc:  # a call the work function did not map itself
            err = map_error(exc, hosts[i].name)
        except Exception as exc:  # noqa: BLE001 - the thread boundary: a bug must not become
            # a silent timeout for this host or a traceback on the user's terminal.
            log.debug("unexpected error on %s", hosts[i].name, exc_info=True)
            err = HypervisorError(f"{hosts[i].name}: internal error: {exc!r}")
        finally:
            if connect:  # a held connection is its opener's to close
                pool.release(hosts[i])
        done_q.put((i, value, err, time.monotonic() - start))
        with state:
            return i not in given_up

    def worker() -> None:
        me = threading.current_thread()
        while (i := jobs.get()) is not None:
            me.name = f"fanout {hosts[i].name}"  # which host a thread serves, in a dump
            if not job(i):
                return  # a replacement took this worker's place when host i was given up
            me.name = "fanout"

    def add_worker() -> None:
        threading.Thread(target=worker, daemon=True, name="fanout").start()

    def finish(i: int, result: HostResult[T]) -> None:
        nonlocal ssh_running
        ssh_running -= over_ssh[i]
        results[i] = result
        if progress is not None:
            progress(result)

    for _ in range(min(limit, len(hosts))):
        add_worker()
    try:
        while waiting or waiting_ssh or running:
            while len(running) < limit:
                ssh_turn = bool(waiting_ssh) and ssh_running < ssh_limit
                if ssh_turn and (not waiting or waiting_ssh[0] < waiting[0]):
                    i = waiting_ssh.popleft()
                    ssh_running += 1
                elif waiting:
                    i = waiting.popleft()
                else:
                    break
                running[i] = time.monotonic()
                if inline:
                    with state:
                        connecting.add(i)
                jobs.put(i)
            now = time.monotonic()
            with state:
                ends = [start + (min(connect_s, per_host) if i in connecting else per_host)
                        for i, start in running.items()]
            try:
                i, value, err, secs = done_q.get(timeout=max(0.0, min(ends) - now))
                if i in running:  # a late answer from an abandoned job is dropped
                    del running[i]
                    finish(i, HostResult(hosts[i], value, err, secs))
            except queue.Empty:
                pass
            now = time.monotonic()
            for i, start in list(running.items()):
                with state:
                    opening = i in connecting
                    late = now - start >= (min(connect_s, per_host) if opening else per_host)
                    if late:
                        given_up.add(i)
                if not late:
                    continue
                del running[i]
                pool.discard(hosts[i])
                add_worker()  # the given-up host's worker may stay blocked for minutes
                why = (f"no answer within {connect_s:g}s while connecting"
                       if opening and connect_s <= per_host else f"no answer within {per_host:g}s")
                finish(i, HostResult(hosts[i], None, OperationTimeout(
                    f"{hosts[i].name}: {why}"), now - start))
    finally:
        for _ in range(min(limit, len(hosts)) + len(given_up)):
            jobs.put(None)  # let the idle workers end
    return [r for r in results if r is not None]
