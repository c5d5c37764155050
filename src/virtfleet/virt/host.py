"""One hypervisor connection: opened with a deadline, kept alive, watched, and its queries.

libvirt's open() has no timeout: connecting to a host that drops packets blocks for minutes.
So the open runs in a daemon thread and the caller waits only `Timeouts.connect` seconds; a
connection that arrives late is closed. Once open, libvirt keepalive probes (driven by the
event loop thread) notice a peer that stops answering, and the close callback marks the Host
dead so the pool reopens it on next use.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import libvirt

from virtfleet.config import Timeouts
from virtfleet.errors import HostUnavailable, OperationTimeout, VirtfleetError
from virtfleet.inventory.records import DomainRecord
from virtfleet.transport.connect import connect_uri
from virtfleet.virt.errors import libvirt_errors, map_connect_error, or_none
from virtfleet.virt.eventloop import ensure_event_loop

# virsh's words for domain states (virsh-domain-monitor.c), so output reads like virsh.
STATE_WORDS = {
    libvirt.VIR_DOMAIN_NOSTATE: "no state",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "idle",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "in shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}

_STATS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_VCPU
    | libvirt.VIR_DOMAIN_STATS_BALLOON
)

LifecycleCallback = Callable[["Host", str, int, int], None]  # host, domain uuid, event, detail
DisconnectCallback = Callable[["Host", str], None]  # host, why (CLOSE_REASONS' words)

# Why libvirt closed a connection, in words for logs and `list`'s failure lines.
CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "connection failed",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "connection closed by the hypervisor",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "no answer to keepalive probes",
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "connection closed here",
}


# libvirt prints every error to stderr by default; virtfleet reports errors itself, once.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def _open_in_thread(uri: str, seconds: float, label: str) -> Any:
    """Open `uri` (the inventory's; virtfleet's transport parameters are added here) within
    `seconds`; a transport failure comes out as one clear line (transport/diagnose.py)."""
    target = connect_uri(uri, label)
    box: dict[str, Any] = {}
    lock = threading.Lock()  # decides, once, whether the caller or the opener owns the result
    done = threading.Event()

    def opener() -> None:
        try:
            conn: Any = libvirt.open(target)
        except libvirt.libvirtError as exc:
            conn, box["error"] = None, exc
        with lock:
            abandoned = box.get("abandoned", False)
            if not abandoned:
                box["conn"] = conn
        done.set()
        if abandoned and conn is not None:
            _quiet_close(conn)  # the caller gave up on it

    threading.Thread(target=opener, name=f"open {label}", daemon=True).start()
    done.wait(seconds)
    with lock:
        if not done.is_set():
            box["abandoned"] = True
            raise OperationTimeout(f"{label}: no answer within {seconds:g}s while connecting")
    if "error" in box:
        raise map_connect_error(box["error"], label, uri, seconds) from None
    return box["conn"]


def _open_inline(uri: str, seconds: float, label: str) -> Any:
    """Open `uri` in the calling thread, with no deadline of its own: for a caller that watches
    the connect deadline itself (fan_out) and so saves the second thread and its switches."""
    try:
        return libvirt.open(connect_uri(uri, label))
    except libvirt.libvirtError as exc:
        raise map_connect_error(exc, label, uri, seconds) from None


def _quiet_close(conn: Any) -> None:
    with contextlib.suppress(libvirt.libvirtError):  # already gone; nothing to release
        conn.close()


class Host:
    """An open connection to one hypervisor. Thread-safe: libvirt serialises RPC per connection."""

    def __init__(self, conn: Any, uri: str, label: str) -> None:
        self._conn = conn
        self.uri = uri
        self.label = label
        self._dead = False
        self._closed = False
        self._close_lock = threading.Lock()
        self._watched = False  # close callback registered (long-lived connections)
        self._lifecycle_ids: list[int] = []
        # Whether each shut-off domain (by UUID) is a template: a domain is made a template
        # when it is defined (template create) and never becomes one after, so a long-lived
        # connection (the controller's) asks each domain once, not at every sync.
        self._templates: dict[str, bool] = {}
        self._disconnect_callbacks: list[DisconnectCallback] = []
        self.closed_because = ""  # CLOSE_REASONS' word once libvirt closed it
        # What a hypervisor's libvirtd reports about itself does not change while it runs, and
        # a restarted one is a new connection (a new Host): asked once per connection.
        self._caps: str | None = None
        self._domain_caps: dict[str, str | VirtfleetError] = {}

    # -- connection ---------------------------------------------------------------------------

    @classmethod
    def open(cls, uri: str, timeouts: Timeouts | None = None, label: str | None = None,
             keepalive: bool = True, inline: bool = False) -> Host:
        """Connect to `uri` within the connect timeout; raise HostUnavailable/OperationTimeout.

        A long-lived connection (`keepalive=True`, the controller's) joins the event loop, sends
        keepalive probes and has a close callback, so a dead peer is noticed between calls.
        A one-shot query (`keepalive=False`) needs none of it: its fan-out deadline already
        bounds a silent peer and the connection is closed when the query ends. Staying out of
        the event loop matters at fleet scale: with a thousand sockets registered, every RPC
        wakes the loop thread to rebuild its poll set, which more than doubled the client's CPU
        for a fleet-wide list; the callback (un)registration was another 7%.
        `inline=True` opens in the calling thread and leaves the connect deadline to the caller,
        which must watch it (fan_out does).
        """
        t = timeouts or Timeouts()
        name = label or uri
        if keepalive:
            ensure_event_loop()
        conn = (_open_inline if inline else _open_in_thread)(uri, t.connect, name)
        host = cls(conn, uri, name)
        if not keepalive:
            return host
        try:
            with libvirt_errors(name):
                if "+" in uri.split("://", 1)[0]:  # only remote transports have keepalive
                    conn.setKeepAlive(t.keepalive_interval, t.keepalive_count)
                conn.registerCloseCallback(host._on_close, None)
                host._watched = True
        except VirtfleetError:
            host.close()
            raise
        return host

    def _on_close(self, _conn: Any, reason: int, _opaque: object) -> None:
        # Runs on libvirt's event thread, the moment keepalive (or the socket) gives up.
        self.closed_because = CLOSE_REASONS.get(reason, "connection lost")
        self._dead = True
        with self._close_lock:
            callbacks = list(self._disconnect_callbacks)
        for cb in callbacks:
            cb(self, self.closed_because)

    def on_disconnect(self, callback: DisconnectCallback) -> None:
        """Call `callback(host, why)` from the event thread when libvirt closes this connection
        (the peer stopped answering keepalive probes, or went away); at once if it already did.
        Only long-lived (keepalive) connections are watched; one-shot ones never call it."""
        with self._close_lock:
            self._disconnect_callbacks.append(callback)
            dead = self._dead and not self._closed
        if dead:
            callback(self, self.closed_because or "connection lost")

    @property
    def alive(self) -> bool:
        if self._dead:
            return False
        try:
            return bool(self._conn.isAlive())
        except libvirt.libvirtError:
            return False

    def close(self) -> None:
        """Release the connection. Idempotent and safe from several threads at once."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._dead = True
        # On a broken connection these fail; the callbacks died with it, so that is fine.
        for cb_id in self._lifecycle_ids:
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.domainEventDeregisterAny(cb_id)
        self._lifecycle_ids.clear()
        if self._watched:
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.unregisterCloseCallback()
            self._watched = False
        _quiet_close(self._conn)

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _check(self) -> None:
        if self._dead:
            raise HostUnavailable(f"{self.label}: connection closed")

    # -- domains ------------------------------------------------------------------------------

    def list_domains(self, roles: bool = False) -> list[DomainRecord]:
        """Every domain with state, vCPUs and memory, in as few RPCs as the driver allows.

        What `virsh list --all` shows plus the sizes: one getAllDomainStats call on QEMU.
        Persistence and autostart are per-domain facts (dominfo), not asked for here: two more
        round trips per host cost a tenth of a fleet-wide list. With `roles`, each shut-off
        domain is also asked whether it is a template (its metadata: one call each, once per
        connection; bench/fleet_query measured a cold list of the simulated fleet a third
        slower with it), else `template` is None: not asked.
        """
        return [rec for rec, _dom in self._domains(roles)]

    def domains_with_xml(self) -> list[tuple[DomainRecord, str]]:
        """list_domains() and each domain's XML: one call more per domain, none to look it up
        again by name (what a provisioning call reads of a host: provision/reading.py)."""
        with libvirt_errors(self.label):
            return [(rec, str(dom.XMLDesc(0))) for rec, dom in self._domains(False)]

    def _domains(self, roles: bool) -> list[tuple[DomainRecord, Any]]:
        self._check()
        with libvirt_errors(self.label):
            stats = self._conn.getAllDomainStats(_STATS, 0)
            out = []
            for dom, st in stats:
                uuid = dom.UUIDString()
                vcpus = st.get("vcpu.current")
                mem_kib = st.get("balloon.maximum")
                if vcpus is None or mem_kib is None:
                    # Drivers without these stats (the test driver): one info() call each.
                    info = dom.info()
                    vcpus, mem_kib = info[3], info[1]
                dom_id = dom.ID()
                state = st.get("state.state", 0)
                out.append((DomainRecord(
                    name=dom.name(),
                    uuid=uuid,
                    state=STATE_WORDS.get(state, "no state"),
                    id=dom_id if dom_id >= 0 else None,
                    vcpus=int(vcpus),
                    memory_mib=int(mem_kib) // 1024,
                    template=self._is_template(dom, uuid, state) if roles else None,
                ), dom))
        out.sort(key=lambda d: (d[0].id is None, d[0].id or 0, d[0].name))
        return out

    def _is_template(self, dom: Any, uuid: str, state: int) -> bool:
        """Whether a domain is a sealed template. Asked only of shut-off domains, as a
        template is never started (a host of running VMs costs no call more), and once per
        domain on this connection."""
        if state != libvirt.VIR_DOMAIN_SHUTOFF:
            return False
        known = self._templates.get(uuid)
        if known is None:
            known = self._templates[uuid] = _read_template(dom)
        return known

    def define_domain(self, xml: str) -> str:
        self._check()
        with libvirt_errors(self.label):
            return str(self._conn.defineXML(xml).name())

    def define_and_read(self, xml: str) -> DomainRecord:
        """Define `xml` and read back what libvirt now holds, from the handle defineXML gave
        (one call: no lookup by UUID, no separate maxMemory)."""
        self._check()
        with libvirt_errors(self.label):
            dom = self._conn.defineXML(xml)
            state, max_kib, _mem, vcpus, _t = dom.info()
            dom_id = dom.ID()
            return DomainRecord(name=str(dom.name()), uuid=str(dom.UUIDString()),
                                state=STATE_WORDS.get(state, "no state"),
                                id=dom_id if dom_id >= 0 else None, vcpus=int(vcpus),
                                memory_mib=int(max_kib) // 1024)  # template: not asked (the
            # caller wrote the XML; asking cost each clone a round trip, bench/clone)

    @property
    def conn(self) -> Any:
        """The raw libvirt connection, for the other modules of virt/ only."""
        self._check()
        return self._conn

    def lookup_domain(self, name: str) -> Any:
        """The libvirt domain handle for `name` (NotFound if this host has none)."""
        self._check()
        with libvirt_errors(self.label):
            return self._conn.lookupByName(name)

    def has_domain(self, name: str) -> bool:
        self._check()
        with libvirt_errors(self.label):
            return or_none(lambda: self._conn.lookupByName(name),
                           libvirt.VIR_ERR_NO_DOMAIN) is not None

    def start_domain(self, name: str) -> None:
        dom = self.lookup_domain(name)
        with libvirt_errors(self.label):
            dom.create()

    def destroy_domain(self, name: str) -> None:
        dom = self.lookup_domain(name)
        with libvirt_errors(self.label):
            dom.destroy()

    def undefine_domain(self, name: str) -> None:
        dom = self.lookup_domain(name)
        with libvirt_errors(self.label):
            dom.undefine()

    def domain_xml(self, name: str) -> str:
        dom = self.lookup_domain(name)
        with libvirt_errors(self.label):
            return str(dom.XMLDesc(0))

    # -- the host itself ----------------------------------------------------------------------

    def node_info(self) -> list[Any]:
        """virNodeGetInfo: [arch, memory MiB, cpus, mhz, numa nodes, sockets, cores, threads]."""
        self._check()
        with libvirt_errors(self.label):
            return list(self._conn.getInfo())

    def hostname(self) -> str:
        self._check()
        with libvirt_errors(self.label):
            return str(self._conn.getHostname())

    def sysinfo_xml(self) -> str:
        self._check()
        with libvirt_errors(self.label):
            return str(self._conn.getSysinfo(0))

    def capabilities_xml(self) -> str:
        """virConnectGetCapabilities, asked once per connection."""
        self._check()
        if self._caps is None:
            with libvirt_errors(self.label):
                self._caps = str(self._conn.getCapabilities())
        return self._caps

    def domain_capabilities_xml(self, virttype: str) -> str:
        """virConnectGetDomainCapabilities for `virttype`, asked once per connection (a
        refusal too: a host without KVM keeps refusing it)."""
        self._check()
        if virttype not in self._domain_caps:
            try:
                with libvirt_errors(self.label):
                    self._domain_caps[virttype] = str(
                        self._conn.getDomainCapabilities(None, None, None, virttype, 0))
            except VirtfleetError as exc:
                if exc.retryable:  # a timeout or a dropped connection is no answer
                    raise
                self._domain_caps[virttype] = exc
        known = self._domain_caps[virttype]
        if isinstance(known, VirtfleetError):
            raise known
        return known

    def versions(self) -> dict[str, object]:
        """What `virsh version` prints: client library, daemon library, driver and its version."""
        self._check()
        with libvirt_errors(self.label):
            return {
                "client_library": _dotted(libvirt.getVersion()),
                "daemon_library": _dotted(self._conn.getLibVersion()),
                "driver": str(self._conn.getType()),
                "hypervisor": _dotted(self._conn.getVersion()),
            }

    # -- events -------------------------------------------------------------------------------

    def on_lifecycle(self, callback: LifecycleCallback) -> None:
        """Call `callback(host, uuid, event, detail)` from the event thread on lifecycle events."""
        self._check()

        def relay(_conn: Any, dom: Any, event: int, detail: int, _opaque: object) -> None:
            callback(self, dom.UUIDString(), event, detail)

        with libvirt_errors(self.label):
            cb_id = self._conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, relay, None
            )
        self._lifecycle_ids.append(cb_id)

    def domain_by_uuid(self, uuid: str) -> DomainRecord | None:
        """One domain's record, or None if it no longer exists (undefined)."""
        self._check()
        try:
            dom = self._conn.lookupByUUIDString(uuid)
            state, _max_kib, _mem, vcpus, _t = dom.info()
            mem_kib = dom.maxMemory()
            dom_id = dom.ID()
            return DomainRecord(
                name=dom.name(), uuid=uuid, state=STATE_WORDS.get(state, "no state"),
                id=dom_id if dom_id >= 0 else None, vcpus=int(vcpus),
                memory_mib=int(mem_kib) // 1024,
                template=self._is_template(dom, uuid, state),
            )
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                self._templates.pop(uuid, None)  # gone: a domain defined again is asked anew
                return None
            with libvirt_errors(self.label):
                raise


def _read_template(dom: Any) -> bool:
    """Whether a domain's virtfleet metadata says role=template. A domain undefined
    meanwhile, or with no virtfleet metadata, is none."""
    # here, not at the top: a cold `list` never asks, and need not import the XML models
    from virtfleet.xml.domain import TEMPLATE_ROLE, VF_NS
    from virtfleet.xml.parse import parse_xml

    found = or_none(lambda: dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, VF_NS, 0),
                    libvirt.VIR_ERR_NO_DOMAIN_METADATA, libvirt.VIR_ERR_NO_DOMAIN)
    if found is None:
        return False
    # libvirt answers the element without its namespace: <instance><role>...
    root = parse_xml(found, "metadata", expect="instance")
    return (root.findtext("role") or "").strip() == TEMPLATE_ROLE


def _dotted(v: int) -> str:
    return f"{v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"
