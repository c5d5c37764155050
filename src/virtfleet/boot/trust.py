"""Who a request to `boot serve` comes from, and whether it may speak for a host.

The client is the peer address of the TCP connection, unless that peer is one of the
`--trusted-proxy` addresses (HAProxy): then it is the last X-Forwarded-For entry not itself a
trusted proxy. Nobody else's X-Forwarded-For is read, so a client cannot name its own address.

A host's token is given, and used, only by requests from its reserved address or from a relay
of its network (`networks[].relays`: a NAT gateway that speaks for the network's hosts).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from virtfleet.boot.scopes import BootHost
from virtfleet.errors import InvalidInput

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network
MAX_HOPS = 32  # X-Forwarded-For entries read; a longer chain is refused


def normal(addr: Address) -> Address:
    """::ffff:10.1.1.20 (an IPv4 client of an IPv6 socket) is 10.1.1.20."""
    if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def parse_proxies(values: Iterable[str], field: str = "trusted_proxies"
                  ) -> tuple[Network, ...]:
    out = []
    for value in values:
        try:
            out.append(ip_network(value.strip(), strict=True))
        except ValueError:
            raise InvalidInput(field, f"{value[:60]!r} is not an IP address or network "
                               "(like 10.1.1.3 or 10.1.1.0/28)") from None
    return tuple(out)


class Clients:
    """Resolves the client address of a request (see the module's docstring)."""

    def __init__(self, proxies: Sequence[Network] = ()) -> None:
        self.proxies = tuple(proxies)

    def trusted(self, addr: Address) -> bool:
        return any(addr in net for net in self.proxies)

    def client(self, peer: str, forwarded: Sequence[str]) -> Address:
        """The client behind `peer` (the connection's address), given the request's
        X-Forwarded-For header values (read only when `peer` is a trusted proxy)."""
        try:
            addr = normal(ip_address(peer))
        except ValueError:
            raise InvalidInput("client", f"{peer[:60]!r} is not an IP address") from None
        if not self.trusted(addr):
            return addr
        hops = [hop.strip() for value in forwarded for hop in value.split(",")]
        if len(hops) > MAX_HOPS:
            raise InvalidInput("X-Forwarded-For", f"more than {MAX_HOPS} addresses")
        for hop in reversed(hops):
            try:
                found = normal(ip_address(hop))
            except ValueError:
                raise InvalidInput("X-Forwarded-For",
                                   f"{hop[:60]!r} is not an IP address") from None
            if not self.trusted(found):
                return found
            addr = found
        return addr  # only proxies (a health check): the nearest one is the client


def speaks_for(host: BootHost, client: Address) -> bool:
    """Whether a request from `client` may get or use `host`'s token."""
    return client == host.ip or client in host.network.relays
