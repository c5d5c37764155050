"""What every generator asks of a layout: each interface's kind, master, and addresses."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address

from pydantic import ValidationError

from virtfleet.errors import InvalidInput
from virtfleet.inventory.niclayout import (
    BondSpec,
    Bridge,
    Ethernet,
    NicLayout,
    OvsBridge,
    StaticAddress,
    Vlan,
    check_layout,
)
from virtfleet.pydantic_errors import rule

Iface = Ethernet | BondSpec | Vlan | Bridge | OvsBridge


@dataclass(frozen=True)
class Link:
    """One interface as the generators see it."""

    iface: Iface
    master_kind: str | None  # bond, bridge, ovs
    master: str | None
    addresses: tuple[StaticAddress, ...]

    @property
    def name(self) -> str:
        return self.iface.name

    @property
    def gateway(self) -> IPv4Address | None:
        return next((a.gateway for a in self.addresses if a.gateway is not None), None)

    @property
    def dns(self) -> tuple[IPv4Address, ...]:
        out: list[IPv4Address] = []
        for a in self.addresses:
            out.extend(d for d in a.dns if d not in out)
        return tuple(out)


def links(layout: NicLayout) -> Iterator[Link]:
    """Interfaces in dependency order: NICs, bonds, VLANs, bridges, OVS bridges."""
    masters = layout.masters()
    for group in (layout.ethernets, layout.bonds, layout.vlans, layout.bridges,
                  layout.ovs_bridges):
        for iface in group:
            kind, master = masters.get(iface.name, (None, None))
            addrs = tuple(a for a in layout.addresses if a.interface == iface.name)
            yield Link(iface, kind, master, addrs)


def build_layout(data: dict[str, list[dict[str, object]]], source: str) -> NicLayout:
    """A layout from what a parser read, held to the same rules as the fleet file's."""
    try:
        layout = NicLayout.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InvalidInput(f"{source}: {where}", rule(err)) from None
    check_layout(layout, source)
    return layout.canonical()
