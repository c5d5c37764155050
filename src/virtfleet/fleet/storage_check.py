"""Storage preflight for `host check`: the pod's pool is active and takes writes, autostarted
pools are running, and SELinux lets QEMU use NFS where that can be known.

What can be checked remotely is what libvirt tells: pool state, a volume created and deleted
(a real write through the mount), and the host's security model from its capabilities. Whether
SELinux is enforcing and the `virt_use_nfs` boolean are not exposed by libvirt, so they are read
only when the hypervisor is this machine (a qemu:/// URI) and reported as unknown otherwise.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from virtfleet.errors import VirtfleetError
from virtfleet.fleet.podstorage import pod_pool_name
from virtfleet.inventory.fleetfile import PodStorage
from virtfleet.virt import pools
from virtfleet.virt.host import Host
from virtfleet.xml.parse import parse_xml

if TYPE_CHECKING:
    from virtfleet.fleet.queries import HostCheck
    from virtfleet.inventory.store import Store

SELINUX_ENFORCE = Path("/sys/fs/selinux/enforce")


@dataclass(frozen=True)
class StorageCheck:
    pod_pool: str | None
    pod_pool_ok: bool | None  # None: the pod declares no storage
    selinux: str  # enforcing, permissive, disabled, unknown (remote), none (no selinux driver)
    virt_use_nfs: bool | None
    problems: tuple[str, ...]
    notes: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, object]:
        return {**self.__dict__, "problems": list(self.problems), "notes": list(self.notes),
                "ok": self.ok}


def _secmodels(host: Host) -> list[str]:
    caps = parse_xml(host.capabilities_xml(), "capabilities", expect="capabilities")
    return [str(m.text) for m in caps.iterfind("host/secmodel/model") if m.text]


def _is_local(uri: str) -> bool:
    return uri.split("://", 1)[0] == "qemu" and uri.split("://", 1)[1].startswith("/")


def _local_selinux() -> tuple[str, bool | None]:
    try:
        mode = "enforcing" if SELINUX_ENFORCE.read_text().strip() == "1" else "permissive"
    except OSError:
        return "disabled", None
    proc = subprocess.run(["getsebool", "virt_use_nfs"], capture_output=True, text=True,
                          check=False, timeout=10)
    if proc.returncode != 0:
        return mode, None
    return mode, proc.stdout.strip().endswith("on")


def storage_check_of(host: Host, storage: PodStorage | None, pod: str) -> StorageCheck:
    problems: list[str] = []
    notes: list[str] = []
    have = {p.name: p for p in pools.list_pools(host)}
    for p in have.values():
        if p.autostart and not p.active:
            problems.append(f"pool {p.name} is set to autostart but is {p.state}")
    name = pod_pool_name(pod, storage) if storage is not None else None
    pod_ok: bool | None = None
    if storage is not None and name is not None:
        mine = have.get(name)
        if mine is None:
            problems.append(f"pod pool {name} is not defined (virtfleet pool apply-pod)")
            pod_ok = False
        elif not mine.active:
            problems.append(f"pod pool {name} is {mine.state}"
                            + (" (NFS not mounted)" if mine.type == "netfs" else ""))
            pod_ok = False
        else:
            try:
                pools.probe_writable(host, name)
                pod_ok = True
            except VirtfleetError as exc:
                problems.append(f"pod pool {name} does not take writes: "
                                f"{exc.in_row(host.label)}")
                pod_ok = False
    selinux, use_nfs = "none", None
    if "selinux" in _secmodels(host):
        if _is_local(host.uri):
            selinux, use_nfs = _local_selinux()
        else:
            selinux = "unknown"
            if storage is not None and storage.type == "netfs":
                notes.append("SELinux is in use; libvirt does not say whether it enforces: "
                             "check `getsebool virt_use_nfs` on the host")
        if selinux == "enforcing" and storage is not None and storage.type == "netfs" \
                and use_nfs is not True:
            problems.append("SELinux enforcing and virt_use_nfs is off: QEMU cannot open "
                            "images on NFS (setsebool -P virt_use_nfs 1)")
    return StorageCheck(name, pod_ok, selinux, use_nfs, tuple(problems), tuple(notes))


# -- wiring into `host check` ------------------------------------------------------------------

def storage_by_host(store: Store) -> dict[str, tuple[str, PodStorage | None]]:
    """Every hypervisor's pod and that pod's declared storage, from the inventory."""
    fleet = store.fleet()
    return {hv.name: (pod.name, pod.storage) for _site, pod, hv in fleet.hypervisors()}


def host_check_with_storage(
        pods: Mapping[str, tuple[str, PodStorage | None]]) -> Callable[[Host], HostCheck]:
    """`check_of` whose problems include the storage preflight's (for `host check`)."""
    from virtfleet.fleet.queries import check_of

    def work(host: Host) -> HostCheck:
        base = check_of(host)
        pod, storage = pods.get(host.label, ("", None))
        found = storage_check_of(host, storage, pod)
        return replace(base, problems=base.problems + found.problems)
    return work
