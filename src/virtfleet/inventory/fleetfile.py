"""The fleet file: the estate's inventory as code (YAML), and its typed models.

Shape (see docs/fleet-file.md):

    groups:                      # optional: host groups with a description
      - name: web
    sites:
      - name: oregon
        pods:
          - name: or-pod1
            storage: {type: netfs, source: "filer1:/vol/vms", target: /var/lib/virtfleet/pod}
            hypervisors:
              - name: hv1.or.example.com
                uri: qemu+ssh://virtfleet@hv1.or.example.com/system
                groups: [web]

Every model forbids unknown keys, so a typo is an error rather than a silently ignored setting.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv4Network, ip_address
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from virtfleet.errors import InvalidInput
from virtfleet.inventory.networks import NetworkSpec, check_fleet_networks

# BondSpec moved to niclayout.py (the layout's bonds extend it); re-exported for its users.
from virtfleet.inventory.niclayout import BondSpec as BondSpec
from virtfleet.inventory.niclayout import Mac, NicLayout, check_fleet_layouts
from virtfleet.inventory.uri import parse_uri
from virtfleet.pydantic_errors import rule
from virtfleet.validate import check_name

MAX_FLEET_FILE = 64 * 1024 * 1024
T = TypeVar("T")


def _rule(check: Callable[[], T]) -> T:
    """Run a shared check; re-raise its rule as ValueError so pydantic adds the field path."""
    try:
        return check()
    except InvalidInput as exc:
        raise ValueError(exc.rule) from None


def _name(value: str) -> str:
    _rule(lambda: check_name("name", value))
    return value


Name = Annotated[str, AfterValidator(_name)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


HA_PRIORITY_MAX = 1000
HA_PRIORITY_DEFAULT = 100


class GroupHA(_Model):
    """A group's HA policy: every VM of the group (its `app`) is HA, restarted on another
    hypervisor of its pod when its own fails (docs/ha.md); higher priorities first."""

    priority: int = Field(default=HA_PRIORITY_DEFAULT, ge=0, le=HA_PRIORITY_MAX)


class HostGroup(_Model):
    name: Name
    description: str = ""
    ha: GroupHA | None = None


class PodStorage(_Model):
    """The pod's shared storage: a filer export every hypervisor of the pod mounts."""

    type: Literal["netfs", "dir"] = "netfs"
    source: str = Field(default="", max_length=1024)  # "filer:/export" for netfs
    target: str = Field(default="/var/lib/virtfleet/pod", max_length=1024)
    pool: Name | None = None  # libvirt pool name; defaults to "<pod>-shared"

    @field_validator("target")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or "/../" in value + "/" or "\x00" in value:
            raise ValueError("must be an absolute path without '..'")
        return value

    @model_validator(mode="after")
    def _netfs_needs_source(self) -> PodStorage:
        if self.type == "netfs" and ":" not in self.source:
            raise ValueError("netfs storage needs source as 'filer-host:/export/path'")
        return self



# ---- Provisioning (issue 6): networks, boot servers, per-host install data, install profiles.
# Every value below ends up inside dhcpd/Kea/HAProxy/iPXE/GRUB/PXELINUX text or a kickstart, so
# each is held to a character set none of those formats reads specially (no quotes, spaces, ';',
# '{', '#', '$' except where a crypt hash needs it).

_SHA512_CRYPT_RE = re.compile(
    r"^\$6\$(?:rounds=[0-9]{4,9}\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{86}$")
_SSH_KEY_RE = re.compile(
    r"^(?:ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)|sk-ssh-ed25519@openssh\.com"
    r"|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]{16,}={0,3}(?: [A-Za-z0-9@._+-]{1,64})?$")
_REL_PATH_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.+-]*)*$")
_KERNEL_ARG_RE = re.compile(r"^[A-Za-z0-9_.:/=,+-]{1,200}$")
_URL_PATH_RE = re.compile(r"^[A-Za-z0-9_./~+-]*$")
_PACKAGE_RE = re.compile(r"^-?@?[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}$")
_TIMEZONE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+){0,2}$")
# An installer as libosinfo names it (rhel9.4, centos6, almalinux8, fedora40): the kickstart
# syntax to write follows from it.
_INSTALL_OS_RE = re.compile(
    r"^(rhel|centos|centos-stream|almalinux|rocky|ol|el|fedora)([0-9]{1,2})(?:\.[0-9]{1,2})?$")
_OLDEST = {"RHEL": 6, "F": 30}  # what the kickstart generator writes


def kickstart_version(install_os: str) -> str:
    """pykickstart's name for the kickstart syntax of an installer: RHEL9, RHEL6, F40."""
    m = _INSTALL_OS_RE.match(install_os)
    if m is None:
        raise ValueError(f"{install_os!r} is not an installer pykickstart knows (like rhel9, "
                         "centos6, almalinux8, rocky9, centos-stream10, fedora40)")
    family = "F" if m.group(1) == "fedora" else "RHEL"
    return f"{family}{int(m.group(2))}"


def _install_os(value: str) -> str:
    from pykickstart.version import versionMap  # the versions this pykickstart can write

    version = kickstart_version(value)
    family = version.rstrip("0123456789")
    if version not in versionMap:
        raise ValueError(f"pykickstart has no kickstart version {version} (for {value!r})")
    if int(version[len(family):]) < _OLDEST[family]:
        raise ValueError(f"{value!r}: virtfleet writes kickstarts for {family}"
                         f"{_OLDEST[family]} and later")
    return value


def _http_url(value: str) -> str:
    """An http(s) URL: scheme, host, optional port and a plain path; nothing else."""
    if any(ch.isspace() or ord(ch) < 32 for ch in value):
        raise ValueError("must not contain spaces or control characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValueError("must not carry a query or fragment")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry a user or password")
    try:
        host, port = parts.hostname or "", parts.port
    except ValueError as exc:
        raise ValueError(f"bad host or port ({exc})") from None
    if not host or port == 0:
        raise ValueError("needs a host (and a port from 1 to 65535 if given)")
    try:
        ip_address(host)
    except ValueError:
        _rule(lambda: check_name("host", host))
    if not _URL_PATH_RE.match(parts.path) or "/../" in parts.path + "/":
        raise ValueError("path may hold only letters, digits and _ . / ~ + - (no '..')")
    return value


def _base_url(value: str) -> str:
    """A base URL others are joined to: always ends in '/'."""
    value = _http_url(value)
    return value if value.endswith("/") else value + "/"


def _pattern(regex: re.Pattern[str], what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not regex.match(value):
            raise ValueError(f"{value!r} is not {what}")
        return value
    return check


def _root_password(value: str) -> str:
    if value == "locked":
        return value
    if not _SHA512_CRYPT_RE.match(value):
        raise ValueError("must be 'locked' or a SHA-512 crypt hash ($6$salt$86 characters; "
                         "make one with `openssl passwd -6`), never a plain password")
    return value


def _rel_path(value: str) -> str:
    _pattern(_REL_PATH_RE, "a relative path of letters, digits and _ . + - parts")(value)
    if ".." in value.split("/"):
        raise ValueError("must not contain '..'")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
BaseUrl = Annotated[str, AfterValidator(_base_url)]
RelPath = Annotated[str, AfterValidator(_rel_path)]
KernelArg = Annotated[str, AfterValidator(
    _pattern(_KERNEL_ARG_RE, "a kernel argument (letters, digits and _ . : / = , + -)"))]
PackageName = Annotated[str, AfterValidator(
    _pattern(_PACKAGE_RE, "a package or @group name"))]
SshKey = Annotated[str, AfterValidator(
    _pattern(_SSH_KEY_RE, "one OpenSSH public key line ('ssh-ed25519 AAAA... comment')"))]
Timezone = Annotated[str, AfterValidator(_pattern(_TIMEZONE_RE, "a time zone like Etc/UTC"))]
Port = Annotated[int, Field(ge=1, le=65535)]


class PoolRange(_Model):
    """The dynamic range a network's DHCP servers lease to unknown clients."""

    start: IPv4Address
    end: IPv4Address


class DhcpPeer(_Model):
    address: IPv4Address
    port: Port


class DhcpFailover(_Model):
    """An ISC dhcpd failover pair (and the same pair as a Kea HA pair)."""

    name: Name = "failover-partner"
    primary: DhcpPeer | None = None
    secondary: DhcpPeer | None = None
    split: int = Field(default=128, ge=0, le=256)
    mclt: int = Field(default=3600, ge=1, le=86400)
    max_response_delay: int = Field(default=60, ge=1, le=3600)
    max_unacked_updates: int = Field(default=10, ge=1, le=1000)
    load_balance_max_seconds: int = Field(default=3, ge=1, le=60)
    ha_port: Port = 8000  # Kea HA: each peer's HTTP control listener


class BootServers(_Model):
    """Where a network's clients boot from: TFTP server, HTTP base, DHCP pair."""

    next_server: IPv4Address
    http_base: BaseUrl
    dhcp: DhcpFailover | None = None


class RealServer(_Model):
    name: Name
    address: IPv4Address
    port: Port = 80


class Frontend(_Model):
    address: IPv4Address
    port: Port = 80


class BootConfig(_Model):
    """A site's boot design. clustered: one server set for every network (IP helpers relay DHCP
    to it, HAProxy spreads HTTP over real_servers); distributed: each network has its own."""

    topology: Literal["clustered", "distributed"] = "clustered"
    next_server: IPv4Address | None = None
    http_base: BaseUrl | None = None
    dhcp: DhcpFailover | None = None
    frontend: Frontend | None = None
    real_servers: tuple[RealServer, ...] = ()


class ProvisioningNetwork(_Model):
    name: Name
    subnet: IPv4Network
    gateway: IPv4Address
    dns: tuple[IPv4Address, ...] = Field(default=(), max_length=8)
    pool: PoolRange | None = None
    vlan: int | None = Field(default=None, ge=1, le=4094)
    servers: BootServers | None = None  # distributed topology only
    # Addresses that speak for this network's hosts to `boot serve` (a NAT gateway, an HTTP
    # relay): a request from one may get a token for any host of the network.
    relays: tuple[IPv4Address, ...] = Field(default=(), max_length=16)


class HostProvision(_Model):
    """How a hypervisor is installed: its boot NIC, its reserved address, its profile."""

    mac: Mac
    ip: IPv4Address
    network: Name
    profile: Name
    bond: BondSpec | None = None


class InstallProfile(_Model):
    """An OS install recipe. kernel/initrd are relative to the boot servers' root (TFTP root
    and http_base serve the same tree)."""

    name: Name
    kind: Literal["hypervisor", "vm"] = "hypervisor"
    os_tree: HttpUrl
    kernel: RelPath
    initrd: RelPath
    kernel_args: tuple[KernelArg, ...] = ("inst.text",)
    ks_arg: Literal["inst.ks", "ks"] = "inst.ks"  # "ks" for EL6 installers (CentOS 6)
    os: Annotated[str, AfterValidator(_install_os)] = "rhel9"  # picks the kickstart syntax
    root_password: Annotated[str, AfterValidator(_root_password)] = "locked"
    ssh_key: SshKey | None = None
    callback_url: HttpUrl | None = None
    packages: tuple[PackageName, ...] | None = None  # default by kind: see package_list()
    timezone: Timezone = "Etc/UTC"
    memory_mib: int = Field(default=32768, ge=256, le=16 * 2**20)  # vm: sizes swap
    disk_gib: int = Field(default=80, ge=8, le=65536)  # vm: sizes the LVM layout

    def kickstart_version(self) -> str:
        return kickstart_version(self.os)

    def package_list(self) -> tuple[str, ...]:
        if self.packages is not None:
            return self.packages
        return ("@virtualization",) if self.kind == "hypervisor" else ("@core",
                                                                         "qemu-guest-agent")

# ---- Fencing (issue 17): each hypervisor's BMC, driven by ClusterLabs' fence agents. The file
# names where the password is (a 0600 file or an environment variable), never the password:
# fleet files live in version control and are read by many people.

_BMC_USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_SYSTEMS_URI_RE = re.compile(r"^/redfish/v1/Systems/[A-Za-z0-9_.~-]+$")
BMC_DEFAULT_PORT = {"ipmilan": 623, "redfish": 443}


def _bmc_address(value: str) -> str:
    try:
        ip_address(value)
    except ValueError:
        _rule(lambda: check_name("address", value))
    return value


def _password_file(value: str) -> str:
    if not value.startswith("/") or "/../" in value + "/" or "/./" in value + "/":
        raise ValueError("must be an absolute path without '..' or '.'")
    if any(ch.isspace() or ord(ch) < 32 for ch in value):
        raise ValueError("must not contain spaces or control characters")
    return value


class BmcSpec(_Model):
    """How to power a hypervisor off and on out of band: its BMC and the fence agent for it."""

    agent: Literal["ipmilan", "redfish"]
    address: Annotated[str, AfterValidator(_bmc_address)]
    port: Port | None = None  # default: 623 for ipmilan, 443 for redfish
    username: Annotated[str, AfterValidator(
        _pattern(_BMC_USER_RE, "a BMC user name (letters, digits and _ . @ -, at most 64)"))]
    password_file: Annotated[str, AfterValidator(_password_file)] | None = None
    password_env: Annotated[str, AfterValidator(
        _pattern(_ENV_NAME_RE, "an environment variable name"))] | None = None
    cipher: int | None = Field(default=None, ge=0, le=17)  # ipmilan (RMCP+ cipher suite)
    ssl_insecure: bool | None = None  # redfish: accept a self-signed certificate
    systems_uri: Annotated[str, AfterValidator(_pattern(
        _SYSTEMS_URI_RE, "a Redfish system path like /redfish/v1/Systems/1"))] | None = None
    power_wait: int | None = Field(default=None, ge=0, le=60)  # seconds after a power action

    # Declared only to refuse it with a clear word (extra keys would just be "unknown").
    password: Any = Field(default=None, exclude=True)

    @field_validator("password", mode="before")
    @classmethod
    def _no_password(cls, value: Any) -> None:
        if value is not None:
            raise ValueError("never put the password in the fleet file: name a 0600 file "
                             "(password_file) or an environment variable (password_env)")
        return None

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else BMC_DEFAULT_PORT[self.agent]


class Hypervisor(_Model):
    name: Name
    uri: str
    groups: tuple[Name, ...] = ()
    maintenance: bool = False
    provision: HostProvision | None = None
    nic_layout: NicLayout | None = None  # see niclayout.py: nearest level wins
    bmc: BmcSpec | None = None  # out-of-band power control, for fencing (see docs/ha.md)

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        return _rule(lambda: parse_uri(value)).render()


class Pod(_Model):
    name: Name
    storage: PodStorage | None = None
    # qemu+tcp and test+tcp carry everything in clear text with no authentication: refused
    # unless the pod says so (a lab, a simulated fleet). See docs/transports.md.
    insecure_transport: bool = False
    hypervisors: tuple[Hypervisor, ...] = ()
    nic_layout: NicLayout | None = None
    libvirt_networks: tuple[NetworkSpec, ...] = ()  # see docs/networks.md


class Site(_Model):
    name: Name
    description: str = ""
    pods: tuple[Pod, ...] = ()
    networks: tuple[ProvisioningNetwork, ...] = ()
    boot: BootConfig | None = None
    nic_layout: NicLayout | None = None
    libvirt_networks: tuple[NetworkSpec, ...] = ()  # on every hypervisor of the site

    def network(self, name: str) -> ProvisioningNetwork | None:
        return next((n for n in self.networks if n.name == name), None)

    def servers_for(self, network: ProvisioningNetwork) -> BootServers:
        """The boot servers a network's clients use (valid fleets only: see _check_boot)."""
        if network.servers is not None:
            return network.servers
        boot = self.boot
        assert boot is not None and boot.next_server is not None and boot.http_base
        return BootServers(next_server=boot.next_server, http_base=boot.http_base,
                           dhcp=boot.dhcp)


class Fleet(_Model):
    groups: tuple[HostGroup, ...] = ()
    sites: tuple[Site, ...] = ()
    profiles: tuple[InstallProfile, ...] = ()
    nic_layout: NicLayout | None = None

    def profile(self, name: str) -> InstallProfile | None:
        return next((p for p in self.profiles if p.name == name), None)

    def hypervisors(self) -> Iterator[tuple[Site, Pod, Hypervisor]]:
        for site in self.sites:
            for pod in site.pods:
                for hv in pod.hypervisors:
                    yield site, pod, hv

    def group_names(self) -> list[str]:
        """Declared groups plus every group a hypervisor names, in first-seen order."""
        names = [g.name for g in self.groups]
        for _, _, hv in self.hypervisors():
            names.extend(g for g in hv.groups if g not in names)
        return names


def _once(seen: dict[Any, str], key: object, where: str, what: str, here: str | None = None
          ) -> None:
    """Note `key` as met at `here` (default `where`); met before, refuse `where` naming the
    first place, so the operator finds both copies."""
    first = seen.get(key)
    if first is not None:
        raise InvalidInput(where, f"duplicate {what} (first at {first})")
    seen[key] = where if here is None else here


def _check_unique(fleet: Fleet) -> None:
    """Names are unique fleet-wide (and URIs per hypervisor); the error points at the repeat."""
    seen: dict[str, dict[str, str]] = {k: {} for k in ("group", "site", "pod", "hypervisor",
                                                      "uri")}

    def once(kind: str, value: str, where: str) -> None:
        what = "uri" if kind == "uri" else "name"
        _once(seen[kind], value, where, f"{kind} {what} {value!r}")

    for i, g in enumerate(fleet.groups):
        once("group", g.name, f"groups[{i}].name")
    for si, site in enumerate(fleet.sites):
        once("site", site.name, f"sites[{si}].name")
        for pi, pod in enumerate(site.pods):
            once("pod", pod.name, f"sites[{si}].pods[{pi}].name")
            for hi, hv in enumerate(pod.hypervisors):
                where = f"sites[{si}].pods[{pi}].hypervisors[{hi}]"
                once("hypervisor", hv.name, f"{where}.name")
                once("uri", hv.uri, f"{where}.uri")


INSECURE_TRANSPORTS = ("tcp",)


def _check_transports(fleet: Fleet) -> None:
    """qemu+tcp / test+tcp only in pods that declare `insecure_transport: true`."""
    for si, site in enumerate(fleet.sites):
        for pi, pod in enumerate(site.pods):
            if pod.insecure_transport:
                continue
            for hi, hv in enumerate(pod.hypervisors):
                scheme = hv.uri.split("://", 1)[0]
                if scheme.partition("+")[2] in INSECURE_TRANSPORTS:
                    raise InvalidInput(
                        f"sites[{si}].pods[{pi}].hypervisors[{hi}].uri",
                        f"{scheme} is neither encrypted nor authenticated: use qemu+ssh or "
                        f"qemu+tls, or set insecure_transport: true on pod {pod.name!r} "
                        "(labs and simulations only)")


def _check_bmcs(fleet: Fleet) -> None:
    """Rules across a BMC's fields, and across BMCs: two hypervisors must never share one BMC,
    or fencing the first would power off the second."""
    seen: dict[tuple[str, int, str], str] = {}
    for si, site in enumerate(fleet.sites):
        for pi, pod in enumerate(site.pods):
            for hi, hv in enumerate(pod.hypervisors):
                bmc = hv.bmc
                if bmc is None:
                    continue
                where = f"sites[{si}].pods[{pi}].hypervisors[{hi}].bmc"
                if bmc.password_file is None and bmc.password_env is None:
                    raise InvalidInput(f"{where}.password_file", "missing: give password_file "
                                       "(a 0600 file) or password_env (a variable name)")
                if bmc.password_file is not None and bmc.password_env is not None:
                    raise InvalidInput(f"{where}.password_env",
                                       "give only one of password_file and password_env")
                only = {"cipher": "ipmilan", "ssl_insecure": "redfish",
                        "systems_uri": "redfish"}
                for key, agent in only.items():
                    if getattr(bmc, key) is not None and bmc.agent != agent:
                        raise InvalidInput(f"{where}.{key}", f"only for agent {agent} (this "
                                           f"BMC's agent is {bmc.agent})")
                key3 = (bmc.address.lower(), bmc.effective_port, bmc.systems_uri or "")
                first = seen.get(key3)
                if first is not None:
                    raise InvalidInput(f"{where}.address", f"BMC {bmc.address}:"
                                       f"{bmc.effective_port} is already the BMC of {first}: "
                                       "fencing one would power off the other")
                seen[key3] = f"hypervisor {hv.name!r}"


def _usable(net: IPv4Network, addr: IPv4Address) -> bool:
    """An address a host may hold: inside the subnet, not its network or broadcast address."""
    if addr not in net:
        return False
    return net.prefixlen >= 31 or addr not in (net.network_address, net.broadcast_address)


def _check_failover(pair: DhcpFailover | None, where: str) -> None:
    if pair is None:
        return
    for role, other in (("primary", "secondary"), ("secondary", "primary")):
        if getattr(pair, role) is None:
            raise InvalidInput(f"{where}.{role}", f"missing: a failover pair needs both primary "
                               f"and secondary (only the {other} is given)")
    assert pair.primary is not None and pair.secondary is not None
    if (pair.primary.address, pair.primary.port) == (pair.secondary.address,
                                                      pair.secondary.port):
        raise InvalidInput(f"{where}.secondary", "must differ from the primary (address, port)")


def _check_network(net: ProvisioningNetwork, where: str, topology: str) -> None:
    if not _usable(net.subnet, net.gateway):
        raise InvalidInput(f"{where}.gateway",
                           f"{net.gateway} is not a host address of subnet {net.subnet}")
    if net.pool is not None:
        for end in ("start", "end"):
            addr = getattr(net.pool, end)
            if not _usable(net.subnet, addr):
                raise InvalidInput(f"{where}.pool.{end}",
                                   f"{addr} is not a host address of subnet {net.subnet}")
        if net.pool.start > net.pool.end:
            raise InvalidInput(f"{where}.pool.end", f"{net.pool.end} is before the pool start "
                               f"{net.pool.start}")
        if net.pool.start <= net.gateway <= net.pool.end:
            raise InvalidInput(f"{where}.pool", f"range {net.pool.start}-{net.pool.end} "
                               f"contains the gateway {net.gateway}")
    if topology == "distributed" and net.servers is None:
        raise InvalidInput(f"{where}.servers",
                           "missing: the distributed topology needs each network's own servers")
    if topology == "clustered" and net.servers is not None:
        raise InvalidInput(f"{where}.servers", "only for the distributed topology; the "
                           "clustered one uses the site's boot servers")
    if net.servers is not None:
        _check_failover(net.servers.dhcp, f"{where}.servers.dhcp")


def _check_boot_config(boot: BootConfig, where: str) -> None:
    site_level = ("next_server", "http_base", "dhcp", "frontend")
    if boot.topology == "distributed":
        for key in (*site_level, "real_servers"):
            if getattr(boot, key):
                raise InvalidInput(f"{where}.{key}", "only for the clustered topology; "
                                   "give each network its own servers instead")
        return
    for key in site_level:
        if getattr(boot, key) is None:
            raise InvalidInput(f"{where}.{key}", "missing: the clustered topology needs it")
    if not boot.real_servers:
        raise InvalidInput(f"{where}.real_servers",
                           "the clustered topology needs at least one real server behind HAProxy")
    names: dict[str, str] = {}
    for i, rs in enumerate(boot.real_servers):
        _once(names, rs.name, f"{where}.real_servers[{i}].name", f"real server {rs.name!r}",
              here=f"{where}.real_servers[{i}]")
    _check_failover(boot.dhcp, f"{where}.dhcp")


def _check_boot(fleet: Fleet) -> None:
    """Rules that span models: networks, boot servers, reservations and profiles."""
    profiles: dict[str, str] = {}
    for i, prof in enumerate(fleet.profiles):
        _once(profiles, prof.name, f"profiles[{i}].name", f"profile name {prof.name!r}")
    macs: dict[str, str] = {}
    ips: dict[IPv4Address, str] = {}
    for si, site in enumerate(fleet.sites):
        topology = site.boot.topology if site.boot is not None else "clustered"
        if site.boot is not None:
            _check_boot_config(site.boot, f"sites[{si}].boot")
        nets: dict[str, str] = {}
        for ni, net in enumerate(site.networks):
            where = f"sites[{si}].networks[{ni}]"
            _once(nets, net.name, f"{where}.name", f"network name {net.name!r}")
            for other in site.networks[:ni]:
                if net.subnet.overlaps(other.subnet):
                    raise InvalidInput(f"{where}.subnet", f"{net.subnet} overlaps network "
                                       f"{other.name!r} ({other.subnet})")
            _check_network(net, where, topology)
        for pi, pod in enumerate(site.pods):
            for hi, hv in enumerate(pod.hypervisors):
                if hv.provision is None:
                    continue
                where = f"sites[{si}].pods[{pi}].hypervisors[{hi}].provision"
                _check_reservation(fleet, site, hv.provision, where, f"sites[{si}]")
                prov = hv.provision
                _once(macs, prov.mac, f"{where}.mac", f"MAC {prov.mac}")
                _once(ips, prov.ip, f"{where}.ip", f"IP {prov.ip}")


def _server_addresses(site: Site, net: ProvisioningNetwork) -> dict[IPv4Address, str]:
    """Addresses the boot servers of a network's clients hold, and what holds them."""
    boot = site.boot
    found: dict[IPv4Address, str] = {}
    servers = net.servers if net.servers is not None else boot
    if servers is None:
        return found
    if servers.next_server is not None:
        found[servers.next_server] = "the TFTP next-server"
    if servers.dhcp is not None:
        for role in ("primary", "secondary"):
            peer = getattr(servers.dhcp, role)
            if peer is not None:
                found[peer.address] = f"the DHCP {role}"
    if net.servers is None and boot is not None:
        if boot.frontend is not None:
            found[boot.frontend.address] = "the HAProxy frontend"
        for rs in boot.real_servers:
            found[rs.address] = f"real server {rs.name!r}"
    return found


def _check_reservation(fleet: Fleet, site: Site, prov: HostProvision, where: str,
                       site_where: str) -> None:
    if site.boot is None:
        raise InvalidInput(f"{site_where}.boot",
                           f"missing: {where} asks for network boot, so the site needs a boot "
                           "section")
    net = site.network(prov.network)
    if net is None:
        known = ", ".join(n.name for n in site.networks) or "none"
        raise InvalidInput(f"{where}.network",
                           f"no network {prov.network!r} in this site (known: {known})")
    if not _usable(net.subnet, prov.ip):
        what = ("outside network" if prov.ip not in net.subnet else
                "the network address of network" if prov.ip == net.subnet.network_address
                else "the broadcast address of network")
        raise InvalidInput(f"{where}.ip", f"{prov.ip} is {what} {net.name!r} ({net.subnet})")
    if prov.ip == net.gateway:
        raise InvalidInput(f"{where}.ip", f"{prov.ip} is the gateway of network {net.name!r}")
    if prov.ip in net.relays:
        raise InvalidInput(f"{where}.ip", f"{prov.ip} is a relay of network {net.name!r}, "
                           "which speaks for all its hosts")
    taken = _server_addresses(site, net).get(prov.ip)
    if taken is not None:
        raise InvalidInput(f"{where}.ip", f"{prov.ip} is the address of {taken}")
    if net.pool is not None and net.pool.start <= prov.ip <= net.pool.end:
        raise InvalidInput(f"{where}.ip", f"{prov.ip} overlaps the dynamic pool "
                           f"{net.pool.start}-{net.pool.end} of network {net.name!r}")
    profile = fleet.profile(prov.profile)
    if profile is None:
        known = ", ".join(p.name for p in fleet.profiles) or "none"
        raise InvalidInput(f"{where}.profile", f"no profile {prov.profile!r} (known: {known})")
    if profile.kind != "hypervisor":
        raise InvalidInput(f"{where}.profile",
                           f"profile {prov.profile!r} is for VMs, not hypervisors")


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "fleet"


def _first_error(exc: ValidationError) -> InvalidInput:
    err = exc.errors()[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    msg = rule(err)
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see docs/fleet-file.md)"
    elif err["type"] == "missing":
        msg = "missing: this field is required"
    return InvalidInput(_loc(loc), msg)


def parse_fleet(data: Any, source: str = "fleet file") -> Fleet:
    """Validate already-loaded YAML data as a fleet."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidInput(source, "must be a YAML mapping with a 'sites' list")
    try:
        fleet = Fleet.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc) from None
    _check_unique(fleet)
    _check_transports(fleet)
    _check_bmcs(fleet)
    _check_boot(fleet)
    check_fleet_layouts(fleet)
    check_fleet_networks(fleet)
    return fleet


def load_fleet(path: str | Path) -> Fleet:
    """Read and validate a fleet file; any problem is one InvalidInput naming the field."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_FLEET_FILE:
            raise InvalidInput(str(p), f"is larger than {MAX_FLEET_FILE // 2**20} MiB")
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput("file", f"{str(p)!r} does not exist") from None
    except IsADirectoryError:
        raise InvalidInput("file", f"{str(p)!r} is a directory") from None
    except UnicodeDecodeError:
        raise InvalidInput("file", f"{str(p)!r} is not UTF-8 text") from None
    except OSError as exc:
        raise InvalidInput("file", f"{str(p)!r} cannot be read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise InvalidInput("file", f"{str(p)!r} is not valid YAML{where}: {problem}") from None
    # A fleet file is the whole estate: applying an empty or truncated one would remove every
    # hypervisor from the inventory, so a file must name at least one site.
    if data is None:
        raise InvalidInput("file", f"{str(p)!r} is empty: a fleet file lists the estate's "
                           "sites (`host remove` takes hypervisors out one by one)")
    fleet = parse_fleet(data, source=str(p))
    if not fleet.sites:
        raise InvalidInput("sites", "must list at least one site: a fleet file without any would "
                           "remove every hypervisor (`host remove` takes them out one by one)")
    return fleet


def dump_fleet(fleet: Fleet) -> str:
    """YAML text for a fleet, leaving out defaults so it reads like a hand-written file."""
    data = fleet.model_dump(mode="json", exclude_defaults=True)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
