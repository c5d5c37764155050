"""Multi-step operations that complete or leave nothing behind, even across a crash.

Each step that makes something (a placement claim, a volume, a domain, a migration) is written
to the store's journal before the operation moves on. If a later step fails, or the operator
presses Ctrl-C, what was made is undone in reverse and the journal entry goes. If the process
dies outright, the entry stays: `virtfleet ops list` shows it as interrupted and `virtfleet ops
cleanup` undoes its steps from the journal, in any later process.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from virtfleet.errors import Busy, Conflict, NotFound, VirtfleetError
from virtfleet.inventory.records import Made, OperationRecord
from virtfleet.inventory.store import Store
from virtfleet.provision.locks import holder_alive
from virtfleet.virt.fanout import ConnectionPool


class Operation:
    """A running operation: what it has made so far, on record in the store. `on_step` hears
    of each step once it is on record (the API's operation progress)."""

    def __init__(self, store: Store, record: OperationRecord,
                 on_step: Callable[[Made], None] | None = None) -> None:
        self.store = store
        self.id = record.id
        self.steps: list[Made] = list(record.steps)
        self.on_step = on_step

    def made(self, what: Made) -> None:
        self.steps.append(what)
        self.store.record_step(self.id, self.steps)
        if self.on_step is not None:
            self.on_step(what)

    def forget(self, what: Made) -> None:
        """`what` is not this operation's to undo after all."""
        self.steps.remove(what)
        self.store.record_step(self.id, self.steps)

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
    record = OperationRecord(id=uuid.uuid4().hex, kind=kind, target=target,
                             hostname=socket.gethostname(), pid=os.getpid(),
                             started_at=datetime.now(UTC), state="running", steps=steps)
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
        left = undo_steps(op.steps, store, pool)
        if left:
            store.fail_operation(op.id, [m for m, _why in left], _message(exc))
        else:
            store.end_operation(op.id)
        if isinstance(exc, VirtfleetError):
            exc.add("; could not roll back: " + "; ".join(
                f"{m.describe()} ({why})" for m, why in left) + " (see 'virtfleet ops list')"
                if left else "; nothing was left behind")
        raise
    store.end_operation(op.id)


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


def interrupted(rec: OperationRecord) -> bool:
    """Its process is gone (or it failed to roll back): nobody will finish or undo it."""
    return rec.state == "failed" or not holder_alive(rec.hostname, rec.pid, rec.started_at)


def clean_up(store: Store, pool: ConnectionPool, rec: OperationRecord) -> list[tuple[Made, str]]:
    """Undo an interrupted operation's steps; return what is still left."""
    if not interrupted(rec):
        raise Busy(f"operation {rec.id[:12]} ({rec.kind} {rec.target}) is still running as pid "
                   f"{rec.pid} on {rec.hostname}")
    left = undo_steps(list(rec.steps), store, pool)
    if left:
        store.fail_operation(rec.id, [m for m, _ in left], "; ".join(w for _, w in left))
    else:
        store.end_operation(rec.id)
    return left
