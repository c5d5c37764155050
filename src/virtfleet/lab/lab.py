"""The Lab: N real libvirtd hypervisors on this machine, each in its own namespaces.

    lab = Lab("lab")
    state = lab.up(hosts=3, pods=2)      # clears this lab's leftovers first; state.fleet_file
    lab.guests(per_host=2)               # tiny real QEMU guests, waited until booted
    lab.status()                         # per host: pid, alive, answering, domain count
    lab.simulate(SimSpec.reference())    # test-driver node files served by "sim" daemons
    lab.restart_host("lab-hv2")          # after its libvirtd died
    lab.down()                           # idempotent

Everything the lab makes is found again from its name (see names.py and procs.py), so a lab
whose maker was killed halfway is cleared by the next `up` or `down` under the same name, and
nothing that carries another name is ever touched.
"""

from __future__ import annotations

import fcntl
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from virtfleet.config import Timeouts
from virtfleet.errors import InvalidInput, LabError, VirtfleetError
from virtfleet.inventory.fleetfile import dump_fleet, parse_fleet
from virtfleet.lab import bmc, daemon, netns, procs, simulate, transports
from virtfleet.lab import state as statefile
from virtfleet.lab.guests import BOOT_TIMEOUT, GuestResult, ensure_guests
from virtfleet.lab.names import DEFAULT_LAB, MAX_HOSTS, MAX_SIMS, LabNames, is_sim, sim_index
from virtfleet.lab.run import run
from virtfleet.lab.simulate import SimFleet, SimHost, SimSpec
from virtfleet.lab.state import LabHost, LabState

Progress = Callable[[str], None]
# Started with -f/-p paths inside the state dir.
LAB_PROGRAMS = ("libvirtd", "virtlogd", "virtlockd")
# libvirt's own `default` network. Every hypervisor has its own, in its own namespace, so the
# same subnet on each never meets another (nor this machine's).
LAB_NETWORK = {"name": "default", "mode": "nat", "subnet": "192.168.122.0/24",
               "dhcp": [{"start": "192.168.122.2", "end": "192.168.122.254"}]}


def _quiet(_msg: str) -> None:
    return None


@dataclass
class Cleared:
    """What a clear-out found and removed."""

    processes: int = 0
    namespaces: int = 0
    interfaces: int = 0
    mounts: int = 0
    state: bool = False

    @property
    def anything(self) -> bool:
        return bool(self.processes or self.namespaces or self.interfaces or self.mounts
                    or self.state)

    def describe(self) -> str:
        return (f"{self.processes} process(es), {self.namespaces} namespace(s), "
                f"{self.interfaces} interface(s), {self.mounts} mount(s)"
                + (", state files" if self.state else ""))


@dataclass
class HostStatus:
    name: str
    pod: str  # "" for a simulation daemon
    address: str
    uri: str
    pid: int | None
    alive: bool  # the libvirtd process exists
    stopped: bool  # ... but is SIGSTOPped
    answering: bool  # an RPC got an answer
    domains: int | None
    error: str = ""

    def as_json(self) -> dict[str, object]:
        return dict(self.__dict__)


def _mounts_under(directory: Path) -> list[str]:
    """Mount points at or below `directory` in our mount namespace."""
    prefix = str(directory).rstrip("/")
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        parts = line.split()
        if len(parts) < 5:
            continue
        point = parts[4].encode().decode("unicode_escape")  # \040 for spaces, etc.
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(found, key=len, reverse=True)  # innermost first


class Lab:
    def __init__(self, name: str = DEFAULT_LAB, root: Path | None = None) -> None:
        self.names = LabNames.for_lab(name, root)

    @property
    def name(self) -> str:
        return self.names.name

    @property
    def state_dir(self) -> Path:
        return self.names.state_dir

    def state(self) -> LabState | None:
        return statefile.load(self.names.state_file)

    def require_state(self) -> LabState:
        st = self.state()
        if st is None:
            raise LabError(f"lab {self.name} is not up (no {self.names.state_file}); "
                           f"run: virtfleet lab up --name {self.name}")
        return st

    def _save(self, st: LabState) -> None:
        statefile.save(st, self.names.state_file)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One `up`/`down`/`simulate` per lab at a time. The lock file sits beside the state
        dir (which `down` deletes); the kernel drops the lock if its holder is killed."""
        lock_path = self.state_dir.parent / f".{self.name}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LabError(f"lab {self.name} is busy: another virtfleet is changing it "
                               "right now") from None
            yield

    # -- up -----------------------------------------------------------------------------------

    def up(self, hosts: int, pods: int = 1, progress: Progress = _quiet,
           transport: str = "tcp", *, leases: bool = False) -> LabState:
        """Clear this lab's leftovers, then build `hosts` hypervisors in `pods` pods, reached
        over qemu+`transport` (see transports.py); with `leases`, libvirt's lock manager
        guards every disk (see lockspace())."""
        transports.check_transport(transport)
        if not 1 <= hosts <= MAX_HOSTS:
            raise InvalidInput("hosts", f"must be between 1 and {MAX_HOSTS}")
        if not 1 <= pods <= hosts:
            raise InvalidInput("pods", f"must be between 1 and the number of hosts ({hosts})")
        daemon.check_tools(transport)
        with self._exclusive():
            cleared = self._clear()
            if cleared.anything:
                progress(f"cleared leftovers of lab {self.name}: {cleared.describe()}")
            indexes = list(range(1, hosts + 1))
            netns.check_free(self.names, indexes)
            try:
                return self._build(indexes, pods, progress, transport, leases)
            except BaseException:
                # No half-made lab: take down whatever got built, then report the failure.
                self._clear()
                raise

    def _new_state(self, leases: bool = False) -> LabState:
        n = self.names
        self.state_dir.mkdir(parents=True, exist_ok=True)
        st = LabState(name=n.name, subnet=str(n.subnet), bridge=n.bridge,
                      state_dir=str(self.state_dir),
                      created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                      leases=leases)
        self._save(st)  # saved before anything exists, so a killed `up` leaves a record
        netns.create_bridge(n)
        return st

    def _host(self, index: int, pod: str, transport: str = "tcp") -> LabHost:
        n = self.names
        return LabHost(name=n.host_name(index), index=index, pod=pod, netns=n.netns(index),
                       veth=n.veth(index), address=n.address(index),
                       uri=n.uri(index, transport), dir=str(n.host_dir(index)))

    def _add_host(self, st: LabState, host: LabHost,
                  client: transports.ClientSide | None = None) -> None:
        netns.create_host_net(self.names, host.index)
        host_dir = daemon.prepare_dirs(self.names, host.index, client)
        if st.leases and not is_sim(host.index):
            daemon.use_leases(host_dir, lockspace(Path(st.pods[host.pod])))
        if is_sim(host.index):
            st.sims.append(host)
        else:
            st.hosts.append(host)
        self._save(st)
        daemon.start(host)
        self._save(st)

    def _build(self, indexes: list[int], pods: int, progress: Progress,
               transport: str = "tcp", leases: bool = False) -> LabState:
        n = self.names
        t0 = time.monotonic()
        st = self._new_state(leases)
        client = transports.prepare_client(n, transport)
        st.transport, st.client_dir = transport, str(client.dir) if client.dir else None
        for p in range(1, pods + 1):
            pod_dir = n.pod_dir(p)
            pod_dir.mkdir(parents=True, exist_ok=True)
            st.pods[n.pod_name(p)] = str(pod_dir)
        for i in indexes:
            pod = n.pod_name((i - 1) * pods // len(indexes) + 1)
            self._add_host(st, self._host(i, pod, transport), client)
        transports.link_hosts(client, [Path(h.dir) for h in st.hosts],
                              [h.address for h in st.hosts])
        for host in st.hosts:
            took = daemon.wait_ready(host)
            progress(f"{host.name}: libvirtd pid {host.libvirtd_pid} answering at {host.uri} "
                     f"({took * 1000:.0f} ms after start)"
                     + transports.describe_host(transport, Path(host.dir)))
        st.fleet_file = str(self.write_fleet_file(st))
        self._save(st)
        progress(f"lab {self.name}: {len(st.hosts)} hypervisor(s) up in "
                 f"{time.monotonic() - t0:.1f}s")
        if client.dir is not None:
            progress(f"its client side is {client.dir}: export VIRTFLEET_TRANSPORT_DIR="
                     f"{client.dir}")
        return st

    def write_fleet_file(self, st: LabState) -> Path:
        """The lab as a fleet file, declared as a real estate would be: one site whose every
        hypervisor carries libvirt's usual `default` NAT network (each inside its own
        namespace), its pods with their shared storage (a directory all the pod's hosts see,
        as they would an NFS export), their hosts."""
        pods = []
        for pod, pod_dir in st.pods.items():
            pods.append({
                "name": pod,
                # qemu+tcp without authentication: allowed only where the file says so.
                **({"insecure_transport": True} if st.transport == "tcp" else {}),
                "storage": {"type": "dir", "target": pod_dir},
                "hypervisors": [{"name": h.name, "uri": h.uri} for h in st.hosts if h.pod == pod],
            })
        fleet = parse_fleet({"sites": [{"name": self.names.site_name,
                                        "description": f"virtfleet lab {self.name}",
                                        "libvirt_networks": [LAB_NETWORK],
                                        "pods": pods}]},
                            source="lab fleet file")
        path = self.names.fleet_file
        path.write_text(dump_fleet(fleet))
        return path

    # -- simulation daemons ---------------------------------------------------------------------

    def ensure_sim_daemons(self, count: int = 1, progress: Progress = _quiet) -> list[LabHost]:
        """`count` daemons that serve test-driver node files over TCP, started if needed.

        They join this lab's bridge (a lab of only them is made if none is up). A libvirtd's
        per-call cost grows with the connections it holds (~0.013 ms per open connection per
        list here), so a large simulated fleet spreads its hypervisors over several.
        """
        if not 1 <= count <= MAX_SIMS:
            raise InvalidInput("daemons", f"must be between 1 and {MAX_SIMS}")
        daemon.check_tools()
        with self._exclusive():
            return self._ensure_sims([sim_index(j) for j in range(1, count + 1)], progress)

    def _ensure_sims(self, wanted: list[int], progress: Progress) -> list[LabHost]:
        st = self.state()
        if st is None:
            cleared = self._clear()
            if cleared.anything:
                progress(f"cleared leftovers of lab {self.name}: {cleared.describe()}")
            netns.check_free(self.names, wanted)
            try:
                st = self._new_state()
            except BaseException:
                self._clear()
                raise
        have = {h.index: h for h in st.sims}
        netns.check_free(self.names, [i for i in wanted if i not in have])
        started: list[LabHost] = []
        try:
            for index in wanted:
                host = have.get(index)
                if host is None:
                    host = self._host(index, "")
                    self._add_host(st, host)
                elif not (host.libvirtd_pid and procs.alive(host.libvirtd_pid)):
                    daemon.restart(host)
                    self._save(st)
                else:
                    continue
                started.append(host)
            for host in started:
                took = daemon.wait_ready(host)
                progress(f"{host.name}: simulation libvirtd pid {host.libvirtd_pid} answering "
                         f"at {host.address} ({took * 1000:.0f} ms after start)")
        except BaseException:
            for host in started:
                if host.index not in have:
                    self._remove_slot(st, host)
            raise
        return [st.host(self.names.host_name(i)) for i in wanted]

    def _remove_slot(self, st: LabState, host: LabHost) -> None:
        procs.terminate(netns.netns_pids(host.netns))
        netns.delete_netns(host.netns)
        netns.delete_link(host.veth)
        st.hosts = [h for h in st.hosts if h.index != host.index]
        st.sims = [h for h in st.sims if h.index != host.index]
        if st.hosts or st.sims:
            self._save(st)
        else:
            self._clear()

    def simulate(self, spec: SimSpec, out: Path | None = None, local: bool = False,
                 daemons: int | None = None, progress: Progress = _quiet) -> tuple[SimFleet, Path]:
        """Write a simulated fleet's node files and its fleet file; return both.

        URIs are test+tcp:// through this lab's simulation daemons (started if needed; by
        default one per 100 hypervisors, at most 15), or with `local` test:/// for the
        in-process driver (no daemon, no root needed).
        """
        uri_for: Callable[[SimHost], str] = simulate.local_uri
        if not local:
            count = daemons if daemons is not None else min(15, -(-spec.hypervisors // 100))
            sims = self.ensure_sim_daemons(count, progress)
            uri_for = simulate.tcp_uri([h.address for h in sims], spec.hypervisors)
        t0 = time.monotonic()
        sim = simulate.write_nodes(spec, out if out is not None else self.names.sim_dir)
        fleet = simulate.write_fleet_file(sim, uri_for)
        progress(f"{len(sim.hosts)} node files, {sim.vms} VMs written to {sim.out_dir} in "
                 f"{time.monotonic() - t0:.2f}s")
        return sim, fleet

    # -- hosts after up -----------------------------------------------------------------------

    def restart_host(self, name: str) -> LabHost:
        """Start a hypervisor's daemons again after they died (guests that still run stay)."""
        with self._exclusive():
            st = self.require_state()
            host = st.host(name)
            daemon.restart(host)
            self._save(st)
            daemon.wait_ready(host)
            return host

    def guests(self, per_host: int, wait: bool = True, timeout: float = BOOT_TIMEOUT,
               progress: Progress = _quiet) -> list[GuestResult]:
        """Make every lab hypervisor run exactly `per_host` tiny guests (see guests.py)."""
        return ensure_guests(self.require_state(), per_host, wait=wait, timeout=timeout,
                             progress=progress)

    def status(self, timeout: float = 3.0) -> list[HostStatus]:
        st = self.require_state()
        hosts = st.all_hosts()
        if not hosts:
            return []
        with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
            return list(pool.map(lambda h: _host_status(h, timeout), hosts))

    # -- down and leftovers -------------------------------------------------------------------

    def down(self) -> Cleared:
        """Stop and remove everything this lab made. Safe to run any number of times."""
        with self._exclusive():
            return self._clear()

    def _clear(self) -> Cleared:
        """Find this lab's pieces on the machine (by name, not only from the state file), and
        remove them: processes, namespaces, interfaces, mounts, state directory."""
        n = self.names
        out = Cleared()
        namespaces = netns.owned_namespaces(n)
        pids: set[int] = set()
        for ns in namespaces:
            pids.update(netns.netns_pids(ns))
        if self.state_dir.exists():
            pids.update(procs.pids_mentioning(self.state_dir, LAB_PROGRAMS))
        pids = {p for p in pids if procs.alive(p)}
        stuck = procs.terminate(pids)
        if stuck:
            raise LabError(f"lab {self.name}: processes {sorted(stuck)} would not stop")
        out.processes = len(pids)
        # The BMCs live in this machine's own namespace (a power-off must not kill them), so
        # the namespace sweep above does not find them.
        out.processes += bmc.clear_bmcs(n)
        for ns in namespaces:
            netns.delete_netns(ns)
        out.namespaces = len(namespaces)
        links = netns.owned_links(n)
        # Veths first: the bridge goes last, once nothing is plugged into it.
        for link in sorted(links, key=lambda name: name == n.bridge):
            netns.delete_link(link)
        out.interfaces = len(links)
        self._wait_gone()
        # The daemons' bind mounts live only in their own mount namespaces and died with them;
        # anything mounted under the state dir here would be a stray, and rmtree must not
        # descend into it.
        for point in _mounts_under(self.state_dir):
            run(["umount", "--lazy", point], f"unmounting {point}", check=False)
            out.mounts += 1
        if _mounts_under(self.state_dir):
            raise LabError(f"lab {self.name}: mounts remain under {self.state_dir}")
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)
            out.state = True
        return out

    def _wait_gone(self, seconds: float = 5.0) -> None:
        # Namespace teardown is asynchronous in the kernel: a veth can outlive `ip netns delete`
        # by a moment.
        deadline = time.monotonic() + seconds
        while True:
            links = netns.owned_links(self.names)
            spaces = netns.owned_namespaces(self.names)
            if not links and not spaces:
                return
            if time.monotonic() >= deadline:
                raise LabError(f"lab {self.name}: could not remove "
                               + ", ".join([*links, *spaces]))
            for link in links:
                netns.delete_link(link)
            time.sleep(0.1)


def lockspace(pod_dir: Path) -> Path:
    """Where a pod's disk leases live: beside its shared directory, on the same shared storage
    (inside it, libvirt's dir pool would list the lease directory as a volume)."""
    return pod_dir.with_name(pod_dir.name + "-leases")


def _host_status(host: LabHost, timeout: float) -> HostStatus:
    from virtfleet.virt.host import Host

    pid = host.libvirtd_pid
    alive = pid is not None and procs.alive(pid)
    stopped = alive and pid is not None and procs.stopped(pid)
    answering, domains, error = False, None, ""
    if alive and not stopped:
        try:
            with Host.open(host.admin_uri, Timeouts(connect=timeout, call=timeout),
                           label=host.name) as h:
                domains = len(h.list_domains())
                answering = True
        except VirtfleetError as exc:
            error = exc.message
    elif stopped:
        error = "libvirtd is stopped (SIGSTOP)"
    else:
        error = "libvirtd is not running"
    return HostStatus(name=host.name, pod=host.pod, address=host.address, uri=host.uri,
                      pid=pid, alive=alive, stopped=stopped, answering=answering,
                      domains=domains, error=error)
