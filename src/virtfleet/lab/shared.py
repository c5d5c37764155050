"""Whether a pod is a lab's, on this machine: the one place VIR_MIGRATE_UNSAFE is true to fact.

libvirt refuses to live-migrate a guest whose disks sit on a filesystem it does not know to be
shared (NFS, GFS2, Ceph ...): a plain directory could be a different disk on each host, and
even shared, its page cache could hold writes the other host cannot see. A lab pod's
"shared storage" is such a directory, but every lab hypervisor is a namespace of this one
kernel: the same directory, the same page cache. There, and only there, skipping libvirt's
check is safe.

So the proof is a fact of this machine, not a word in a file anyone can edit: a lab state file
(written by `virtfleet lab up`) names the pod's directory as a pod it made, every hypervisor
in question is a host of that lab pod, and each one's libvirtd is alive and was started with
that lab's configuration. A fleet file that calls a production directory "dir" storage gets
no such proof, and libvirt's own check stands.
"""

from __future__ import annotations

import posixpath
from collections.abc import Collection
from pathlib import Path

from virtfleet.lab import procs
from virtfleet.lab.names import lab_root
from virtfleet.lab.state import LabHost, load


def _runs_here(host: LabHost, state_dir: str) -> bool:
    pid = host.libvirtd_pid
    if pid is None or not procs.alive(pid):
        return False
    # A pid can be reused: it must be a libvirtd whose config lives in the lab's directory.
    args = procs.cmdline(pid)
    return any(a.endswith("libvirtd") for a in args[:1]) and any(
        a.startswith(state_dir.rstrip("/") + "/") for a in args)


def lab_pod(directory: str, uris: Collection[str]) -> str | None:
    """The lab (its name) that made `directory` as a pod's shared storage and runs every
    hypervisor in `uris` in that pod on this machine; None if no lab here does."""
    want = posixpath.normpath(directory)
    root = lab_root()
    if not root.is_dir():
        return None
    for state_file in sorted(root.glob("*/lab.json")):
        state = load(state_file)
        if state is None:
            continue
        for pod, pod_dir in state.pods.items():
            if posixpath.normpath(pod_dir) != want or not Path(pod_dir).is_dir():
                continue
            hosts = {h.uri: h for h in state.hosts if h.pod == pod}
            if uris and all(u in hosts and _runs_here(hosts[u], state.state_dir)
                            for u in uris):
                return state.name
    return None
