"""Which hypervisors a fleet verb runs on, and what each of them answered.

A verb that reads (list, info) covers the whole fleet unless narrowed; one that changes hosts
must say where. Every host in scope is asked through the fan-out, so each answers within its
deadline and fails on its own, and its failure is part of the result, never an exception.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Self, TypeVar, cast

from virtfleet.errors import InvalidInput, NotFound, VirtfleetError
from virtfleet.inventory.records import HostFailure, HostRecord
from virtfleet.virt.fanout import ConnectionPool, HostResult, fan_out
from virtfleet.virt.host import Host

if TYPE_CHECKING:  # the store only as a type: a cold list reads hosts without SQLAlchemy
    from virtfleet.inventory.store import Store

T = TypeVar("T")


@dataclass(frozen=True)
class Scope:
    """One hypervisor, a pod, a site, a host group, or (`all`) the whole fleet; the filters
    given all apply. Nothing given: the whole fleet, for a verb that only reads."""

    host: str | None = None
    pod: str | None = None
    site: str | None = None
    group: str | None = None
    all: bool = False

    @property
    def given(self) -> bool:
        return bool(self.host or self.pod or self.site or self.group or self.all)

    def check(self, say_where: str | None = None) -> None:
        """`say_where`: the rule for a verb that changes hosts, which must be told where."""
        if say_where is not None and not self.given:
            raise InvalidInput("scope", say_where)
        if self.all and (self.host or self.pod or self.site or self.group):
            raise InvalidInput("scope.all", "the whole fleet; do not combine it with "
                               "`scope.host`/`scope.pod`/`scope.site`/`scope.group`")

    def hosts(self, store: Store) -> list[HostRecord]:
        """The hypervisors in scope, sorted by site, pod and name."""
        hosts = store.hypervisors(site=self.site, pod=self.pod, group=self.group)
        if self.host is None:
            return hosts
        found = [h for h in hosts if h.name == self.host]
        if not found:
            narrowed = " (or not in the given site/pod/group)" if (
                self.site or self.pod or self.group) else ""
            raise NotFound(f"hypervisor {self.host!r} is not in the inventory{narrowed}")
        return found


@dataclass(frozen=True)
class Step:
    """Progress of a fleet verb: `done` of `total` hosts have finished `what`."""

    what: str
    done: int
    total: int


Progress = Callable[[Step], None]


@dataclass(frozen=True)
class Answers(Generic[T]):
    """Every host's answer to one question, in the order asked: a value, or why not."""

    results: tuple[HostResult[T], ...]

    def __len__(self) -> int:
        return len(self.results)

    @property
    def values(self) -> list[tuple[HostRecord, T]]:
        """The hosts that answered with something (None: nothing to report there)."""
        return [(r.host, r.value) for r in self.results if r.value is not None]

    @property
    def failures(self) -> list[HostFailure]:
        return [HostFailure(r.host.name, r.error.kind, r.error.in_row(r.host.name))
                for r in self.results if r.error is not None]

    @property
    def ok(self) -> bool:
        return all(r.error is None for r in self.results)


@dataclass(frozen=True)
class Outcome:
    """One host's part in a change made on many: what was done there, or why not.

    `error` is this host's own failure; `note` says why nothing (more) was done on a host that
    did not fail itself (another host refused, so it was not tried, or undone), or, with an
    `error`, what state that failure left behind.
    """

    host: str
    name: str  # what was changed there: the network, the pool
    done: str = ""  # what was done ("defined, started")
    error: VirtfleetError | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None and not self.note

    @property
    def why(self) -> str:
        """A failure's text without its kind; for a host that did not fail, the note."""
        if self.error is None:
            return self.note
        why = self.error.in_row(self.host)
        return f"{self.note}: {why}" if self.note else why

    def failure(self) -> HostFailure | None:
        """This host's own failure, for the lines that name each one."""
        if self.error is None:
            return None
        return HostFailure(self.host, self.error.kind, self.why)


class FanOutService:
    """A service that asks many hypervisors at once. Its connections: a pool of its own
    (closed by close() or `with`), unless it is given a pool to share, which stays the giver's
    to close. Its own pool is one-shot unless `keep_open`: a service whose answers (a Guest)
    must stay usable across later calls keeps each connection until close()."""

    def __init__(self, pool: ConnectionPool | None = None, *, keep_open: bool = False) -> None:
        self._own_pool = pool is None
        self.pool = pool if pool is not None else ConnectionPool(one_shot=not keep_open)

    def close(self) -> None:
        if self._own_pool:
            self.pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def ask(self, hosts: Sequence[HostRecord], what: str, work: Callable[[Host], T | None],
            progress: Progress | None = None) -> Answers[T]:
        """Run `work` on every host at once; `progress` hears of each host that finishes.
        A host whose work returns None has nothing to report (it is not in `values`)."""
        done = 0

        def tick(_result: object) -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(Step(what, done, len(hosts)))

        # A HostResult's value may be None whatever its type: the same answers either way.
        results = cast("list[HostResult[T]]", fan_out(hosts, work, self.pool, progress=tick))
        return Answers(tuple(results))


class FleetService(FanOutService):
    """A service over the inventory's hypervisors: the store says which hosts a scope holds."""

    def __init__(self, store: Store, pool: ConnectionPool | None = None, *,
                 keep_open: bool = False) -> None:
        super().__init__(pool, keep_open=keep_open)
        self.store = store
