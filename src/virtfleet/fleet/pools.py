"""The pool service: libvirt storage pools (virsh's pool-* verbs) on a hypervisor, a pod, a site
or the whole fleet, with a result per host; each pod's declared shared storage made a pool on
every hypervisor of the pod; and the storage preflight.

    with PoolService(store) as service:
        answers = service.list_pools(Scope(pod="or-pod1"))
        made = service.define(DefinePool(Scope(all=True), name="scratch", type="dir",
                                         target="/srv/scratch"))
        outcomes = service.apply_pod(Scope(pod="or-pod1"))

Reading (`list_pools`, `info`, `check`) covers the whole fleet unless narrowed; a verb that
changes hosts must say where.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from virtfleet.errors import InvalidInput
from virtfleet.fleet.podstorage import ensure_pod_pool, pod_pool
from virtfleet.fleet.scope import Answers, FleetService, Outcome, Progress, Scope
from virtfleet.fleet.storage_check import StorageCheck, storage_check_of
from virtfleet.inventory.fleetfile import PodStorage
from virtfleet.inventory.records import HostRecord
from virtfleet.validate import check_name
from virtfleet.virt import pools
from virtfleet.virt.host import Host
from virtfleet.virt.pools import PoolDetail as PoolDetail  # what the service answers with
from virtfleet.xml.storage import POOL_TYPES, Pool, check_abs_path, pool_definition

SAY_WHERE = "say which hypervisors to change (`scope.all` for the whole fleet)"


# ------------------------------------------------------------------ requests


@dataclass(frozen=True)
class DefinePool:
    """One persistent pool to define on every host in scope: from `virsh pool-define-as`-like
    fields (`name`, `type` and what that type needs), or from `xml`, a pool document."""

    scope: Scope
    name: str | None = None
    type: str | None = None  # dir, fs, netfs, logical, iscsi, mpath, disk
    target: str | None = None
    source_host: str | None = None  # NFS filer or iSCSI portal
    source_path: str | None = None  # NFS export
    source_devs: tuple[str, ...] = ()
    vg: str | None = None
    iqn: str | None = None
    format: str | None = None
    xml: str | bytes | None = None

    def document(self) -> Pool:
        """The checked pool document."""
        if self.xml is not None:
            if self.name is not None or self.type is not None:
                raise InvalidInput("xml", "give either an XML file or `name` with `type`, "
                                   "not both")
            return _checked(Pool.parse(self.xml, "xml"))
        if self.name is None or self.type is None:
            raise InvalidInput("name/type", "give `name` and `type` (or `xml`)")
        return pool_definition(self.type, self.name, target=self.target,
                               source_host=self.source_host, source_path=self.source_path,
                               source_devs=self.source_devs, vg=self.vg, iqn=self.iqn,
                               fmt=self.format)


def _checked(doc: Pool) -> Pool:
    """A pool document from elsewhere, held to the rules pool_definition's fields follow."""
    if doc.type not in POOL_TYPES:
        raise InvalidInput("xml", f"pool type {doc.type!r} is not one of "
                           f"{', '.join(POOL_TYPES)}")
    check_name("xml.<name>", doc.name or "")
    if doc.target_path is not None:
        check_abs_path("xml.<target><path>", doc.target_path)
    if doc.source_dir is not None:
        check_abs_path("xml.<source><dir>", doc.source_dir)
    if doc.type != "iscsi":  # an iSCSI source "device" is the target's IQN, not a path
        for dev in doc.source_devices:
            check_abs_path("xml.<source><device>", dev.path or "")
    return doc


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class PoolOutcome(Outcome):
    """One host's part in a pool change (`name` is the pool)."""

    @property
    def result(self) -> str:
        return f"failed: {self.why}" if self.error is not None else self.done

    def as_json(self) -> dict[str, object]:
        return {"host": self.host, "pool": self.name, "result": self.result, "ok": self.ok}


@dataclass(frozen=True)
class PodPoolOutcome(PoolOutcome):
    """One host's part in `apply_pod`: its pod's shared pool made or found in place."""

    pod: str = ""

    def as_json(self) -> dict[str, object]:
        return {"host": self.host, "pod": self.pod, "pool": self.name, "result": self.result,
                "ok": self.ok}


# ------------------------------------------------------------------ the service


class PoolService(FleetService):
    """Without a `pool`, the service opens its own connections and close() ends them."""

    def _hosts(self, scope: Scope, say_where: str | None = None) -> list[HostRecord]:
        scope.check(say_where)
        return scope.hosts(self.store)

    def _pod_storage(self) -> dict[str, PodStorage | None]:
        """Each pod's declared shared storage, from the inventory."""
        return {p.name: p.storage for s in self.store.fleet().sites for p in s.pods}

    # -- reading ---------------------------------------------------------------------------

    def list_pools(self, scope: Scope, progress: Progress | None = None
                   ) -> Answers[list[PoolDetail]]:
        """`virsh pool-list --all --details` on every host in scope."""
        return self.ask(self._hosts(scope), "pool-list", pools.list_pools, progress)

    def info(self, name: str, scope: Scope, progress: Progress | None = None
             ) -> Answers[PoolDetail]:
        """`virsh pool-info NAME` on every host in scope (a host without it: NotFound)."""
        check_name("name", name)
        return self.ask(self._hosts(scope), "pool-info", lambda h: pools.pool_info(h, name),
                        progress)

    def check(self, scope: Scope, progress: Progress | None = None) -> Answers[StorageCheck]:
        """The storage preflight on every host in scope: its pod's pool active and taking
        writes, autostart pools running, SELinux's virt_use_nfs where it can be read."""
        storage = self._pod_storage()
        hosts = self._hosts(scope)
        pods = {h.name: h.pod for h in hosts}

        def work(h: Host) -> StorageCheck:
            return storage_check_of(h, storage.get(pods[h.label]), pods[h.label])

        return self.ask(hosts, "storage check", work, progress)

    # -- changing --------------------------------------------------------------------------

    def define(self, req: DefinePool, progress: Progress | None = None
               ) -> Answers[PoolDetail]:
        """Define the pool (not started) on every host in scope; a host where the name is
        taken fails with a Conflict, the others go ahead."""
        hosts = self._hosts(req.scope, SAY_WHERE)
        text = req.document().to_xml()

        def work(h: Host) -> PoolDetail:  # a document per host thread: lxml trees stay apart
            return pools.define_pool(h, Pool.parse(text))

        return self.ask(hosts, "pool-define", work, progress)

    def _each(self, name: str, scope: Scope, what: str, action: Callable[[Host], object],
              done: str, progress: Progress | None) -> list[PoolOutcome]:
        check_name("name", name)
        answers: Answers[object] = self.ask(self._hosts(scope, SAY_WHERE), what, action,
                                            progress)
        return [PoolOutcome(r.host.name, name, done if r.error is None else "", r.error)
                for r in answers.results]

    def start(self, name: str, scope: Scope, progress: Progress | None = None
              ) -> list[PoolOutcome]:
        """`virsh pool-start`: mount, log in, activate the VG, scan volumes."""
        return self._each(name, scope, "pool-start", lambda h: pools.start_pool(h, name),
                          "started", progress)

    def refresh(self, name: str, scope: Scope, progress: Progress | None = None
                ) -> list[PoolOutcome]:
        return self._each(name, scope, "pool-refresh", lambda h: pools.refresh_pool(h, name),
                          "refreshed", progress)

    def destroy(self, name: str, scope: Scope, progress: Progress | None = None
                ) -> list[PoolOutcome]:
        """`virsh pool-destroy`: stop (unmount, log out); the data stays."""
        return self._each(name, scope, "pool-destroy", lambda h: pools.destroy_pool(h, name),
                          "destroyed", progress)

    def undefine(self, name: str, scope: Scope, progress: Progress | None = None
                 ) -> list[PoolOutcome]:
        """`virsh pool-undefine` of a stopped pool: the definition goes, never the data."""
        return self._each(name, scope, "pool-undefine",
                          lambda h: pools.undefine_pool(h, name), "undefined", progress)

    def build(self, name: str, scope: Scope, *, overwrite: bool = False,
              progress: Progress | None = None) -> list[PoolOutcome]:
        """`virsh pool-build`: make the directory, or format the device; one that already
        holds a filesystem, label or volume group is left alone unless `overwrite`."""
        return self._each(name, scope, "pool-build",
                          lambda h: pools.build_pool(h, name, overwrite), "built", progress)

    def autostart(self, name: str, scope: Scope, *, on: bool = True,
                  progress: Progress | None = None) -> list[PoolOutcome]:
        return self._each(name, scope, "pool-autostart",
                          lambda h: pools.set_autostart(h, name, on),
                          "autostart on" if on else "autostart off", progress)

    def apply_pod(self, scope: Scope, progress: Progress | None = None
                  ) -> list[PodPoolOutcome]:
        """Make each pod's declared shared storage (the fleet file's `storage:`) a defined,
        active, autostarted pool on every hypervisor in scope of that pod."""
        wanted = {name: pod_pool(name, st) for name, st in self._pod_storage().items()
                  if st is not None}
        texts = {name: doc.to_xml() for name, doc in wanted.items()}
        hosts = [h for h in self._hosts(scope, SAY_WHERE) if h.pod in wanted]
        if not hosts:
            raise InvalidInput("scope.pod", "no pod in scope declares storage in the fleet "
                               "file")
        pod_of = {h.name: h.pod for h in hosts}

        def work(h: Host) -> str:  # a document per host thread: lxml trees stay apart
            return ensure_pod_pool(h, Pool.parse(texts[pod_of[h.label]]))

        return [PodPoolOutcome(r.host.name, str(wanted[r.host.pod].name), r.value or "",
                               r.error, pod=r.host.pod)
                for r in self.ask(hosts, "apply-pod", work, progress).results]
