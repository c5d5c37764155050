"""libvirt's side of high availability: finding a domain by UUID, its definition, marking it HA,
and defining, starting or removing a copy of it. Every call has a deadline (migration.bounded).

A domain is always named by its UUID here: after a failover the same VM may be defined on two
hosts (the stale copy on the host that failed), and a name could also be reused by another VM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import libvirt
from lxml import etree

from virtfleet.config import Timeouts
from virtfleet.errors import Conflict, NotFound
from virtfleet.virt.host import STATE_WORDS, Host
from virtfleet.virt.migration import bounded
from virtfleet.xml.domain import VF_NS

# The definition a restart elsewhere needs: the persistent one, with secrets (a console
# password must stay a password on the new host).
_CONFIG_XML = libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_INACTIVE


@dataclass(frozen=True)
class Copy:
    """One host's definition of a domain."""

    host: str
    name: str
    uuid: str
    state: str  # virsh's word
    active: bool  # a QEMU process runs it (running, paused, ... : anything but shut off)
    persistent: bool
    autostart: bool


@dataclass(frozen=True)
class Definition:
    uuid: str
    name: str
    xml: str
    autostart: bool


def _lookup(host: Host, uuid: str) -> Any | None:
    try:
        return host.conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def _existing(host: Host, uuid: str) -> Any:
    dom = _lookup(host, uuid)
    if dom is None:
        raise NotFound(f"no domain with UUID {uuid}", host=host.label)
    return dom


def _copy(host: Host, dom: Any) -> Copy:
    state, _reason = dom.state()
    persistent = bool(dom.isPersistent())
    return Copy(host=host.label, name=str(dom.name()), uuid=str(dom.UUIDString()),
                state=STATE_WORDS.get(state, "no state"), active=bool(dom.isActive()),
                persistent=persistent, autostart=bool(dom.autostart()) if persistent else False)


def find(host: Host, uuid: str, seconds: float) -> Copy | None:
    """The host's copy of domain `uuid`, or None if it has none."""
    def ask() -> Copy | None:
        dom = _lookup(host, uuid)
        return None if dom is None else _copy(host, dom)
    return bounded(host.label, seconds, ask)


def definition(host: Host, uuid: str, seconds: float) -> Definition | None:
    """The persistent definition of `uuid` on `host` (None: not defined there, or transient)."""
    def ask() -> Definition | None:
        dom = _lookup(host, uuid)
        if dom is None or not dom.isPersistent():
            return None
        return Definition(uuid, str(dom.name()), str(dom.XMLDesc(_CONFIG_XML)),
                          bool(dom.autostart()))
    return bounded(host.label, seconds, ask)


def definitions(host: Host, seconds: float) -> list[Definition]:
    """Every persistent domain's definition on `host` (a sync of its HA VMs)."""
    def ask() -> list[Definition]:
        out = []
        for dom in host.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT):
            try:
                out.append(Definition(str(dom.UUIDString()), str(dom.name()),
                                      str(dom.XMLDesc(_CONFIG_XML)), bool(dom.autostart())))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:  # went meanwhile
                    raise
        return out
    return bounded(host.label, seconds, ask)


def set_facts(host: Host, uuid: str, facts_xml: str, seconds: float) -> None:
    """Replace virtfleet's <metadata> element of `uuid`, in its persistent definition and,
    while it runs, in the running one too (no redefinition: nothing else changes)."""
    def do() -> None:
        dom = _existing(host, uuid)
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        if dom.isActive():
            flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, _bare(facts_xml), "vf", VF_NS,
                        flags)
    bounded(host.label, seconds, do)


def _bare(xml: str) -> str:
    """The element without its namespace: libvirt puts the one it is given (`uri`, `key`) on
    it, and refuses an element that already declares that prefix."""
    root = etree.fromstring(xml.encode())
    for el in root.iter():
        if isinstance(el.tag, str):
            el.tag = etree.QName(el).localname
    etree.cleanup_namespaces(root)
    return etree.tostring(root, encoding="unicode")


def set_autostart(host: Host, uuid: str, on: bool, seconds: float) -> None:
    def do() -> None:
        dom = _lookup(host, uuid)
        if dom is not None:
            dom.setAutostart(1 if on else 0)
    bounded(host.label, seconds, do)


def define(host: Host, xml: str, seconds: float) -> Copy:
    """Define a domain (autostart stays off: a restarted host must not start it by itself)."""
    def do() -> Copy:
        dom = host.conn.defineXML(xml)
        if dom.autostart():
            dom.setAutostart(0)
        return _copy(host, dom)
    return bounded(host.label, seconds, do)


def start(host: Host, uuid: str, seconds: float) -> Copy:
    """Start the host's copy of `uuid`; Conflict if it is already active there."""
    def do() -> Copy:
        dom = _existing(host, uuid)
        found = _copy(host, dom)
        if found.active:
            raise Conflict(f"{found.name} ({uuid}) is already {found.state} there",
                           host=host.label)
        dom.createWithFlags(0)
        return _copy(host, dom)
    return bounded(host.label, seconds, do)


def undefine_stale(host: Host, uuid: str, seconds: float) -> Copy | None:
    """Remove an inactive copy of `uuid` (what a failed host still has of a VM that now runs
    elsewhere). Disks and NVRAM stay: the running copy uses them. Returns what was removed,
    None if there was nothing; Conflict if the copy is active."""
    def do() -> Copy | None:
        dom = _lookup(host, uuid)
        if dom is None:
            return None
        found = _copy(host, dom)
        if found.active:
            raise Conflict(f"{found.name} ({uuid}) is {found.state} there: not touched",
                           host=host.label)
        xml = etree.fromstring(str(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).encode())
        # An NVRAM file stays (the running copy uses it); without one, no flag (not every
        # driver takes KEEP_NVRAM).
        keep = libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM if xml.find("os/nvram") is not None else 0
        dom.undefineFlags(keep)
        return found
    return bounded(host.label, seconds, do)


def probe(uri: str, label: str, seconds: float) -> None:
    """Whether the hypervisor answers at all, on a connection of its own (nothing shared with
    the controller's pool); raises HostUnavailable or OperationTimeout if it does not."""
    with Host.open(uri, Timeouts(connect=seconds, call=seconds), label=label,
                   keepalive=False) as h:
        bounded(label, seconds, h.conn.getLibVersion)
