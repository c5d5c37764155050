"""Multi-step operations that complete or leave nothing behind, even across a crash.

Each step that makes something (a placement claim, a volume, a domain, a migration) is written
to the store's journal before the operation moves on. If a later step fails, or the operator
presses Ctrl-C, what was made is undone in reverse and the journal entry goes. If the process
dies outright, the entry stays: `virtfleet ops list` shows it as interrupted, and `virtfleet ops
cleanup` or any controller (`take_over`, every few seconds) undoes its steps from the journal.

Finish or undo, never twice: an interrupted operation is first *claimed* (the store's
`claim_operations`: row lock, new owner and state `undoing` in one transaction; on PostgreSQL
`FOR UPDATE SKIP LOCKED`, so of several controllers exactly one gets it), then undone newest
step first, each step taken off the record once it is undone. Every journal write names the
operation's owner and is refused (TakenOver) once someone else claimed it, so a former owner
that was only paused neither goes on nor undoes anything itself. A claimer that dies
half-way leaves the steps not yet undone, under its own name: the next claimer goes on.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from virtfleet.config import lease_ttl
from virtfleet.errors import Busy, Conflict, NotFound, StoreError, TakenOver, VirtfleetError
from virtfleet.inventory.records import Made, OperationRecord, Owner
from virtfleet.inventory.store import Store
from virtfleet.pids import pid_alive
from virtfleet.provision.locks import STALE_AFTER
from virtfleet.virt.fanout import ConnectionPool

# A failed operation (its rollback left something) is tried again by a controller this many
# seconds after its last try.
RETRY_FAILED = 60.0


def me(store: Store) -> Owner:
    """This process as an operation's owner (and the controller it is, if its store is a
    controller's)."""
    return Owner(socket.gethostname(), os.getpid(), store.holder)


class Operation:
    """A running operation: what it has made so far, on record in the store. `on_step` hears
    of each step once it is on record (the API's operation progress)."""

    def __init__(self, store: Store, record: OperationRecord,
                 on_step: Callable[[Made], None] | None = None) -> None:
        self.store = store
        self.id = record.id
        self.owner = record.run_by
        self.steps: list[Made] = list(record.steps)
        self.on_step = on_step

    def made(self, what: Made) -> None:
        self.steps.append(what)
        self.store.record_step(self.id, self.steps, self.owner)
        if self.on_step is not None:
            self.on_step(what)

    def forget(self, what: Made) -> None:
        """`what` is not this operation's to undo after all."""
        self.steps.remove(what)
        self.store.record_step(self.id, self.steps, self.owner)

    def end(self) -> None:
        """Done, or rolled back in full (TakenOver if it was claimed meanwhile)."""
        self.store.end_operation(self.id, self.owner)

    def fail(self, left: list[Made], error: str) -> None:
        """Its rollback left `left` behind: on record for `ops cleanup` or a controller."""
        self.store.fail_operation(self.id, left, error, self.owner)

    def roll_back(self, exc: BaseException, pool: ConnectionPool) -> list[tuple[Made, str]]:
        """Undo what it made after `exc`; what could not be undone, and why. Nothing at all if
        `exc` says it was claimed by another (that one undoes it, once)."""
        if isinstance(exc, TakenOver) and exc.operation == self.id:
            return []
        try:  # still ours? (a claim just now would make the undo someone else's)
            self.store.record_step(self.id, self.steps, self.owner)
        except TakenOver:
            return []
        except StoreError:
            pass  # the store is not answering: undo what can be undone all the same
        left = undo_steps(self.steps, self.store, pool)
        if left:
            self.fail([m for m, _why in left], _message(exc))
        else:
            self.end()
        return left

    @contextmanager
    def making(self, what: Made) -> Iterator[None]:
        """Record `what` BEFORE making it: a crash or Ctrl-C inside a long call (a volume
        copy) then still leaves it on record. If making it fails because it already exists,
        it is someone else's and is taken off the record again."""
        self.made(what)
        try:
            yield
        except Conflict:
            self.forget(what)
            raise


def begin(store: Store, kind: str, target: str, steps: tuple[Made, ...] = (),
          on_step: Callable[[Made], None] | None = None) -> Operation:
    """Put an operation on record, with what it has made already (a batch's claims, a
    create's claim); `on_step` hears of those once they are on record, then of each step."""
    owner = me(store)
    record = OperationRecord(id=uuid.uuid4().hex, kind=kind, target=target,
                             hostname=owner.hostname, pid=owner.pid,
                             started_at=datetime.now(UTC), state="running", steps=steps,
                             owner=owner.holder)
    store.begin_operation(record)
    if on_step is not None:
        for step in steps:
            on_step(step)
    return Operation(store, record, on_step)


@contextmanager
def journaled(store: Store, pool: ConnectionPool, kind: str, target: str,
              steps: tuple[Made, ...] = (),
              on_step: Callable[[Made], None] | None = None) -> Iterator[Operation]:
    """Run one operation; on any error, undo what it made and say so in the error. `steps`:
    what it holds already (its claim), on record in the same write that begins it; `on_step`
    hears of those and of each step after (the API's operation progress)."""
    op = begin(store, kind, target, steps, on_step)
    try:
        yield op
    except BaseException as exc:  # Ctrl-C halfway must roll back too; the error goes on up
        left = op.roll_back(exc, pool)
        if isinstance(exc, VirtfleetError) and not isinstance(exc, TakenOver):
            exc.add("; could not roll back: " + "; ".join(
                f"{m.describe()} ({why})" for m, why in left) + " (see 'virtfleet ops list')"
                if left else "; nothing was left behind")
        raise
    op.end()


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, VirtfleetError) else (type(exc).__name__ + (
        f": {exc}" if str(exc) else ""))


def undo_steps(steps: list[Made], store: Store, pool: ConnectionPool
               ) -> list[tuple[Made, str]]:
    """Undo in reverse; return what could NOT be undone, and why."""
    left = []
    for what in reversed(steps):
        try:
            undo(what, store, pool)
        except VirtfleetError as exc:
            left.append((what, exc.message))
    left.reverse()
    return left


def undo(what: Made, store: Store, pool: ConnectionPool) -> None:
    """Take back one made thing; already gone counts as done."""
    from virtfleet.virt import storage
    from virtfleet.virt.guest import Guest, Removal

    if what.kind == "claim":
        store.release_placement(what.host, what.ref)
        return
    if what.kind == "migration":  # finished or rolled back, from where the VM runs now
        from virtfleet.provision.migrate import settle

        settle(what, store, pool)
        return
    if what.kind not in ("volume", "poolvol", "domain", "vm"):
        raise NotFound(f"unknown journal step kind {what.kind!r}")
    [record] = store.hypervisors(host=what.host)
    host = pool.get(record)
    try:
        if what.kind == "volume":
            storage.delete_volume(host, what.ref)
        elif what.kind == "poolvol":
            pool_name, _, name = what.ref.partition("/")
            storage.delete_named(host, pool_name, name)
        elif what.kind == "vm":
            name, _, uuid = what.ref.partition("/")
            seen = host.domain_by_uuid(uuid)
            # A VM made HA as it was created goes from the HA records with it (its UUID was
            # new, so no other VM's record can be this one).
            if seen is None or seen.name != name:
                # never defined, or gone: a domain of that name now is not ours
                store.delete_domain(what.host, uuid)
                store.forget_ha_vm(uuid)
                return
            guest = Guest.lookup(host, name)
            if guest.is_active():
                guest.destroy()
            guest.undefine(Removal())
            store.forget_vm(what.host, name, uuid)
            store.forget_ha_vm(uuid)
        else:
            guest = Guest.lookup(host, what.ref)
            if guest.is_active():
                guest.destroy()
            guest.undefine(Removal())
            store.forget_vm(what.host, what.ref)
    except NotFound:
        pass  # already gone: someone (or an earlier cleanup) took it


def owner_dead(rec: OperationRecord, live: frozenset[str] | None = None) -> bool:
    """Whether nobody will finish the operation. On this machine: its process is gone (a
    stopped process is alive). On another: its controller is not among `live` (the holders
    that beat lately); a CLI's, or any when `live` is not known, once it began (or was
    claimed) more than STALE_AFTER ago, as that machine cannot be asked."""
    if rec.hostname == socket.gethostname():
        return not pid_alive(rec.pid)
    if rec.owner is not None and live is not None:
        return rec.owner not in live
    return datetime.now(UTC) - (rec.claimed_at or rec.started_at) > STALE_AFTER


def interrupted(rec: OperationRecord, live: frozenset[str] | None = None) -> bool:
    """Its owner is gone (or it failed to roll back): nobody will finish or undo it."""
    return rec.state == "failed" or owner_dead(rec, live)


def live_within() -> float:
    """A controller that has not beaten for this long is dead for its operations: its lease
    time (by then its sites have gone to others too)."""
    return lease_ttl()


def finish(store: Store, pool: ConnectionPool, rec: OperationRecord) -> list[tuple[Made, str]]:
    """Undo a claimed operation's steps, newest first, each taken off the record once undone
    (a claimer that dies half-way leaves only the rest); return what is still left. On a
    controller's store, the lease on each step's site is checked before the step's act on the
    hypervisor, and its store writes are fenced."""
    owner = rec.run_by
    steps = list(rec.steps)
    left: list[tuple[Made, str]] = []
    for what in reversed(rec.steps):
        try:
            store.check_lease([what.host])
            undo(what, store, pool)
        except TakenOver:
            raise
        except VirtfleetError as exc:
            left.append((what, exc.message))
            continue
        steps.remove(what)
        store.record_step(rec.id, steps, owner)
    left.reverse()
    if left:
        store.fail_operation(rec.id, [m for m, _ in left], "; ".join(w for _, w in left),
                             owner)
    else:
        store.end_operation(rec.id, owner)
    return left


def clean_up(store: Store, pool: ConnectionPool, rec: OperationRecord) -> list[tuple[Made, str]]:
    """Claim and undo one interrupted operation; return what is still left. Busy if its owner
    is alive, or another process claimed it first."""
    claimed = store.claim_operations(me(store), _dead_for(store), live_within=live_within(),
                                     only=rec.id)
    if not claimed:
        raise Busy(f"operation {rec.id[:12]} ({rec.kind} {rec.target}) is still running as pid "
                   f"{rec.pid} on {rec.hostname}, or being cleaned up by another process")
    return finish(store, pool, claimed[0])


def take_over(store: Store, pool: ConnectionPool, limit: int = 20
              ) -> list[tuple[OperationRecord, list[tuple[Made, str]]]]:
    """A controller's pass: claim the operations whose owners died (and failed ones, again
    after RETRY_FAILED) on its sites, and undo each; what each left."""
    claimed = store.claim_operations(me(store), _dead_for(store), live_within=live_within(),
                                     retry_failed=RETRY_FAILED, limit=limit)
    return [(rec, finish(store, pool, rec)) for rec in claimed]


def _dead_for(store: Store) -> Callable[[OperationRecord, frozenset[str]], bool]:
    # On PostgreSQL the live controllers are known; on SQLite every owner is on this machine.
    if store.backend == "postgresql":
        return owner_dead
    return lambda rec, _live: owner_dead(rec)
