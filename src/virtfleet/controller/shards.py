"""This controller's share of the estate on a PostgreSQL store (docs/scale-out.md).

A shard is a site. The keeper runs on the controller's heartbeat worker, every third of the
lease's time to live (`VIRTFLEET_LEASE_TTL`, default 6 s):

1. A lease whose time ran out *as this process counts it* (monotonic, from before the renewal
   was sent) is dropped before anything else: a process resumed after a pause (SIGSTOP, a VM
   frozen) stops acting there at once, without asking the database first.
2. The leases still held are renewed (one transaction, which beats the member's heartbeat);
   one the database did not renew (expired, or taken over under a newer token) is dropped.
   An unhealthy controller (a worker stuck or dead) renews nothing, so its shards move.
3. Balance: each live controller's share is ceil(shards / live unpinned controllers); one
   over its share releases the excess, one under it claims free or expired shards. A
   controller pinned with `--site` claims only its sites, and no unpinned one claims a site
   that a live pinned controller names.

Whatever changes, `on_change` is told (the controller reloads its inventory and its HA view).
Writes are fenced separately (inventory/fencing.py): dropping a shard here drops its token, so
from then on every write for it is refused.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence

from virtfleet.config import lease_ttl
from virtfleet.errors import InvalidInput, StaleLease
from virtfleet.ha.fence import Power, PowerResult
from virtfleet.ha.fencer import Fencer
from virtfleet.inventory.fencing import ShardTokens
from virtfleet.inventory.records import ControllerRecord
from virtfleet.inventory.store import Store

log = logging.getLogger("virtfleet.controller.shards")

# A member that has not beaten for this many leases is gone (killed, its machine lost): its
# row is removed by the live ones, so controller_members does not grow with every kill -9.
FORGET_AFTER_LEASES = 10

def new_holder() -> str:
    """A name for this controller's leases: its machine and pid, and a random part so a pid
    reused after a restart is never mistaken for the old holder."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class ShardKeeper:
    def __init__(self, store: Store, *, pinned: Sequence[str] = (), ttl: float | None = None,
                 healthy: Callable[[], bool] = lambda: True,
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.tokens = ShardTokens(new_holder())
        self.pinned = tuple(pinned)
        self.ttl = ttl if ttl is not None else lease_ttl()
        self.every = self.ttl / 3
        self.healthy = healthy
        self.on_change = on_change
        self.generation = 0  # bumped on every change of the shards held
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}  # shard -> monotonic end of its lease, as counted here
        self._record: ControllerRecord | None = None

    @property
    def holder(self) -> str:
        return self.tokens.holder

    def check_pins(self) -> None:
        """InvalidInput naming the first pinned site that is not in the inventory."""
        sites = set(self.store.shard_names())
        for name in self.pinned:
            if name not in sites:
                raise InvalidInput("site", f"{name!r} is not a site of the inventory")

    def join(self, rec: ControllerRecord) -> None:
        self._record = rec
        self.store.join(self.holder, rec, self.pinned)

    def leave(self) -> None:
        for shard in self.tokens.held():
            self.tokens.drop(shard)
        self.store.leave(self.holder)

    def sites(self) -> frozenset[str]:
        """The sites this controller may act for now: leased, and not past the lease's end as
        this process counts it."""
        clock = time.monotonic()
        with self._lock:
            return frozenset(s for s in self.tokens.held() if self._until.get(s, 0.0) > clock)

    def step(self) -> None:
        """Drop what lapsed, renew what is held, claim or release for balance."""
        changed = self._drop_lapsed()
        if not self.healthy():
            if changed:
                self._changed()
            return  # renew nothing: an unhealthy controller's shards go to the others
        sent = time.monotonic()
        held = self.tokens.held()
        kept, member = self.store.renew_leases(self.holder, held, self.ttl)
        if not member and self._record is not None:
            log.warning("this controller's registration was gone; registering again")
            self.store.join(self.holder, self._record, self.pinned)
        with self._lock:
            for shard in held:
                if shard in kept:
                    self._until[shard] = sent + self.ttl
                else:
                    log.warning("lost the lease of site %s (expired or taken over); no longer "
                                "acting there", shard)
                    self._drop(shard)
                    changed = True
        for gone in self.store.forget_members(FORGET_AFTER_LEASES * self.ttl):
            log.info("removed the registration of controller %s: it has not renewed anything "
                     "for over %d leases (%.0f s)", gone, FORGET_AFTER_LEASES,
                     FORGET_AFTER_LEASES * self.ttl)
        changed = self._balance(sent) or changed
        if changed:
            self._changed()

    def _drop_lapsed(self) -> bool:
        clock = time.monotonic()
        lapsed = [s for s in self.tokens.held() if self._until.get(s, 0.0) <= clock]
        with self._lock:
            for shard in lapsed:
                log.warning("the lease of site %s ran out before it was renewed (this process "
                            "was paused or cut off); no longer acting there", shard)
                self._drop(shard)
        return bool(lapsed)

    def _drop(self, shard: str) -> None:
        self.tokens.drop(shard)
        self._until.pop(shard, None)

    def _changed(self) -> None:
        self.generation += 1
        log.info("acting for sites: %s", ", ".join(sorted(self.sites())) or "none")
        self.on_change()

    def _balance(self, sent: float) -> bool:
        shards = self.store.shard_names()
        members = self.store.members(alive_within=self.ttl)
        others_pinned = {s for m in members if m.sites and m.holder != self.holder
                         for s in m.sites}
        if self.pinned:
            mine = [s for s in shards if s in self.pinned]
            target = len(mine)
        else:
            mine = [s for s in shards if s not in others_pinned]
            unpinned = max(1, sum(1 for m in members if not m.sites))
            target = math.ceil(len(mine) / unpinned)
        held = sorted(self.tokens.held())
        # Not ours any more (a pinned controller names it), then the excess over the share.
        keep = [s for s in held if s in mine][:target]
        changed = False
        for shard in [s for s in held if s not in keep]:
            token = self.tokens.get(shard)
            with self._lock:
                self._drop(shard)  # stop acting before the lease is free for another
            if token is not None:
                self.store.release_lease(self.holder, shard, token)
            log.info("released site %s to balance the controllers", shard)
            changed = True
        held = sorted(self.tokens.held())
        for shard in [s for s in mine if s not in held]:
            if len(self.tokens.held()) >= target:
                break
            lease = self.store.claim_lease(self.holder, shard, self.ttl)
            if lease is None:
                continue
            with self._lock:
                self.tokens.set(shard, lease.token)
                self._until[shard] = sent + self.ttl
            log.info("took the lease of site %s (fencing token %d)", shard, lease.token)
            changed = True
        return changed


class LeaseCheckedFencer:
    """A power-off is an act outside the store that no write of its own guards: the lease on
    the host's site is checked (under this controller's token) just before it."""

    def __init__(self, inner: Fencer, store: Store) -> None:
        self.inner = inner
        self.store = store

    def has_bmc(self, host: str) -> bool:
        return self.inner.has_bmc(host)

    def status(self, host: str) -> PowerResult:
        return self.inner.status(host)

    def off(self, host: str) -> PowerResult:
        try:
            self.store.check_lease([host])
        except StaleLease as exc:
            return PowerResult(host=host, agent="fence agent", action="off", power=Power.ERROR,
                               message=exc.detail, seconds=0.0, confirmed=False)
        return self.inner.off(host)
