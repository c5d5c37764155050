"""Who boots from which servers: per-host boot facts and the DHCP scopes of a site.

clustered topology: one scope per site (every network, relayed to one DHCP pair by IP helpers);
distributed: one scope per network, each with its own servers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address

from virtfleet.inventory.fleetfile import (
    BondSpec,
    BootServers,
    Fleet,
    InstallProfile,
    ProvisioningNetwork,
    Site,
)


@dataclass(frozen=True)
class BootHost:
    """Everything the generators need to know about one hypervisor's install."""

    name: str
    site: str
    pod: str
    mac: str
    ip: IPv4Address
    network: ProvisioningNetwork
    servers: BootServers
    profile: InstallProfile
    bond: BondSpec | None

    @property
    def mac_hyphen(self) -> str:
        """52-54-00-00-00-01: how PXELINUX, GRUB and iPXE's ${mac:hexhyp} spell a MAC."""
        return self.mac.replace(":", "-")

    @property
    def ks_url(self) -> str:
        return f"{self.servers.http_base}ks/{self.name}.ks"

    @property
    def ipxe_url(self) -> str:
        return f"{self.servers.http_base}ipxe/hosts/{self.mac_hyphen}.ipxe"


@dataclass(frozen=True)
class DhcpScope:
    """One DHCP server configuration (or failover pair): its networks and reservations."""

    name: str
    servers: BootServers
    networks: tuple[ProvisioningNetwork, ...]
    hosts: tuple[BootHost, ...]
    dhcp_field: str = "dhcp"  # where its failover pair is in the fleet file, for errors


def boot_hosts(fleet: Fleet, site: Site) -> Iterator[BootHost]:
    """The site's hypervisors that have provisioning data (the fleet must be validated)."""
    for pod in site.pods:
        for hv in pod.hypervisors:
            prov = hv.provision
            if prov is None:
                continue
            net = site.network(prov.network)
            profile = fleet.profile(prov.profile)
            assert net is not None and profile is not None, "validated by parse_fleet"
            yield BootHost(name=hv.name, site=site.name, pod=pod.name, mac=prov.mac,
                           ip=prov.ip, network=net, servers=site.servers_for(net),
                           profile=profile, bond=prov.bond)


def dhcp_scopes(fleet: Fleet, site: Site) -> list[DhcpScope]:
    if site.boot is None or not site.networks:
        return []
    hosts = list(boot_hosts(fleet, site))
    si = next(i for i, s in enumerate(fleet.sites) if s.name == site.name)
    if site.boot.topology == "clustered":
        servers = site.servers_for(site.networks[0])
        return [DhcpScope(site.name, servers, site.networks, tuple(hosts),
                          f"sites[{si}].boot.dhcp")]
    return [DhcpScope(net.name, site.servers_for(net), (net,),
                      tuple(h for h in hosts if h.network.name == net.name),
                      f"sites[{si}].networks[{ni}].servers.dhcp")
            for ni, net in enumerate(site.networks)]
