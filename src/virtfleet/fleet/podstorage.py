"""A pod's shared storage as libvirt pools: the same pool, on every hypervisor of the pod.

The fleet file declares each pod's share (an NFS export, or in a lab a directory every host
sees). Live migration and restart-elsewhere inside a pod need a VM's disks to sit in such a
pool, and that is a fact one can check through libvirt: every hypervisor of the pod has an
active pool with the same NFS source mounted at the same path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from virtfleet.errors import Conflict, VirtfleetError
from virtfleet.inventory.fleetfile import PodStorage
from virtfleet.virt import pools
from virtfleet.virt.host import Host
from virtfleet.virt.pools import PoolDetail
from virtfleet.xml.storage import Pool, pool_definition


def pod_pool_name(pod: str, storage: PodStorage) -> str:
    return storage.pool or f"{pod}-shared"


def pod_pool(pod: str, storage: PodStorage) -> Pool:
    """The pool document for a pod's declared storage."""
    name = pod_pool_name(pod, storage)
    if storage.type == "netfs":
        host, _, export = storage.source.partition(":")
        return pool_definition("netfs", name, target=storage.target, source_host=host,
                               source_path=export)
    return pool_definition("dir", name, target=storage.target)


def _same(have: PoolDetail, want: Pool) -> bool:
    return have.type == want.type and have.target == want.target_path and (
        have.source == want.source_text())


def ensure_pod_pool(host: Host, want: Pool) -> str:
    """Make the pod's pool defined, active and autostarted on `host`; say what was done.

    An existing pool of that name with another source is a Conflict (never redefined under a
    running VM). A pool this call defined is undefined again if it cannot be started.
    """
    name = want.name or ""
    existing = {p.name: p for p in pools.list_pools(host)}
    have = existing.get(name)
    done = []
    if have is not None and not _same(have, want):
        raise Conflict(f"pool {name!r} exists with another source ({have.type} "
                       f"{have.source or have.target}); undefine it or rename the pod's pool",
                       host=host.label)
    if have is None:
        have = pools.define_pool(host, want)
        done.append("defined")
        try:
            pools.build_pool(host, name)  # dir and netfs: make the target directory
            have = pools.start_pool(host, name)
        except VirtfleetError:
            pools.undefine_pool(host, name)
            raise
        done.append("started")
    elif not have.active:
        have = pools.start_pool(host, name)
        done.append("started")
    if not have.autostart:
        pools.set_autostart(host, name, True)
        done.append("autostart")
    return ", ".join(done) or "already in place"


def shareable(pool: PoolDetail, pod_storage: PodStorage | None) -> str | None:
    """Why `pool` can be the same storage on other hypervisors (what makes it so), or None for
    a pool local to its hypervisor."""
    if pool.type in ("netfs", "iscsi"):
        return f"same {pool.type} source {pool.source} at {pool.target}"
    if (pool.type == "dir" and pod_storage is not None and pod_storage.type == "dir"
            and pool.target == pod_storage.target):
        # libvirt cannot see that a directory is shared; the fleet file declares it.
        return f"the pod's declared shared directory {pool.target}"
    return None


def same_pool(pool: PoolDetail, theirs: Sequence[PoolDetail]) -> PoolDetail | None:
    """Another hypervisor's active pool on the same storage as `pool`, if it has one."""
    return next((p for p in theirs if p.active and p.type == pool.type
                 and p.target == pool.target and p.source == pool.source), None)


@dataclass(frozen=True)
class Sharing:
    """Whether a pool is the same storage on every hypervisor of its pod, and why (not)."""

    pool: str
    shared: bool
    basis: str  # what was compared, or why the answer is no

    def as_json(self) -> dict[str, object]:
        return dict(self.__dict__)


def judge_sharing(pool: PoolDetail, pod_storage: PodStorage | None,
                  others: Mapping[str, Sequence[PoolDetail] | None]) -> Sharing:
    """`pool` as its hypervisor reports it; `others`: every other hypervisor of the pod and its
    pools (None: it did not answer, so sharing cannot be proven)."""
    if not pool.active:
        return Sharing(pool.name, False, "pool is not active")
    basis = shareable(pool, pod_storage)
    if basis is None:
        return Sharing(pool.name, False, f"a {pool.type} pool is local to its hypervisor")
    missing = []
    for name, theirs in sorted(others.items()):
        if theirs is None:
            return Sharing(pool.name, False, f"{name} did not answer")
        if same_pool(pool, theirs) is None:
            missing.append(name)
    if missing:
        return Sharing(pool.name, False, f"not on {', '.join(missing[:5])}"
                       + (" ..." if len(missing) > 5 else ""))
    return Sharing(pool.name, True, basis)
