"""Kickstart files, built with pykickstart's handler objects and checked by parsing them back.

Each profile's `os` picks the syntax (RHEL6 for CentOS 6, RHEL9, F40, ...): the file is
written by that version's handler and parsed back by it, so an old installer gets what it reads.

Hypervisors: static network from the inventory (bond and VLAN when the host has them),
`clearpart --all`, `url --url` (current installers dropped `install --url`), the
virtualization group, and a %post that enables libvirtd, installs the management key and calls
home so `boot serve` knows the install finished. VM templates: 500 MB /boot, the rest LVM in
vg0 with lv_root, lv_home, lv_var, lv_swap (so full logs or homes cannot fill /); swap from
the RHEL table; noatime (it already implies nodiratime, so one option says it all).
"""

from __future__ import annotations

import copy
import re
import secrets
import shlex
import threading
from dataclasses import dataclass
from functools import cache
from ipaddress import IPv4Address

# pykickstart ships no type information; its objects are Any to mypy.
from pykickstart.base import BaseHandler
from pykickstart.constants import (
    AUTOPART_TYPE_LVM,
    CLEARPART_TYPE_ALL,
    DISPLAY_MODE_TEXT,
    KS_REBOOT,
    KS_SCRIPT_POST,
    SELINUX_ENFORCING,
)
from pykickstart.errors import KickstartError
from pykickstart.parser import Group, KickstartParser, Script
from pykickstart.version import makeVersion, stringToVersion

from virtfleet.boot.cmdline import eth_names_args
from virtfleet.boot.scopes import BootHost
from virtfleet.errors import InvalidInput
from virtfleet.inventory.fleetfile import InstallProfile

# The default installer generation (a profile's `os` picks another: see InstallProfile).
KS_VERSION = "RHEL9"
GIB = 1024  # MiB
BOOT_MIB = 500
MIN_ROOT_MIB = 4 * GIB


def swap_mib(memory_mib: int) -> int:
    """Red Hat's swap recommendation: twice RAM up to 2 GB, equal to RAM up to 8 GB, and 4 GB
    above that."""
    if memory_mib <= 2 * GIB:
        return 2 * memory_mib
    if memory_mib <= 8 * GIB:
        return memory_mib
    return 4 * GIB


@cache
def _pristine(version: str) -> tuple[BaseHandler, dict[int, object]]:
    handler = makeVersion(stringToVersion(version))
    parsers = {id(cmd.op): cmd.op for cmd in handler.commands.values()
               if getattr(cmd, "op", None) is not None}
    return handler, parsers


def _handler(version: str = KS_VERSION) -> BaseHandler:
    """A fresh, empty handler. makeVersion builds ~70 argparse parsers (about 60 ms, so 1,500
    hypervisors took minutes); a copy of a pristine handler that shares those parsers takes
    about 3 ms. The parsers are only read after construction, except the line number pykickstart
    notes for its messages, hence _LOCK."""
    pristine, parsers = _pristine(version)
    return copy.deepcopy(pristine, dict(parsers))


_LOCK = threading.Lock()  # one kickstart at a time: the shared parsers above


def _set(command: object, **attrs: object) -> None:
    """Fill a pykickstart command and mark it seen, so it is written out."""
    for key, value in attrs.items():
        if not hasattr(command, key):
            raise AttributeError(f"{type(command).__name__} has no {key!r}")
        setattr(command, key, value)
    command.seen = True  # type: ignore[attr-defined]


def _common(h: BaseHandler, profile: InstallProfile, calls_home: bool = False) -> None:
    _set(h.displaymode, displayMode=DISPLAY_MODE_TEXT)
    _set(h.url, url=profile.os_tree.rstrip("/"))
    _set(h.lang, lang="en_US.UTF-8")
    if hasattr(h.keyboard, "vc_keymap"):
        _set(h.keyboard, vc_keymap="us")
    else:  # RHEL6: one keyboard layout, no --vckeymap
        _set(h.keyboard, keyboard="us")
    _set(h.timezone, timezone=profile.timezone, isUtc=True)
    _set(h.selinux, selinux=SELINUX_ENFORCING)
    _set(h.firewall, enabled=True, services=["ssh"])
    if profile.root_password == "locked":
        _set(h.rootpw, lock=True, isCrypted=False, password="")
        if "rootpw" not in str(h.rootpw):
            # RHEL6's rootpw needs a password (it would otherwise be left out, and the
            # installer would stop to ask): the crypt field "!!" matches no password.
            _set(h.rootpw, lock=True, isCrypted=True, password="!!")
    else:
        _set(h.rootpw, isCrypted=True, password=profile.root_password)
    _set(h.zerombr, zerombr=True)
    _set(h.clearpart, type=CLEARPART_TYPE_ALL, initAll=True)
    _set(h.bootloader, location="mbr")
    _set(h.reboot, action=KS_REBOOT)
    for name in profile.package_list():
        if name.startswith("@"):
            h.packages.groupList.append(Group(name[1:]))
        elif name.startswith("-"):
            h.packages.excludedList.append(name[1:])
        else:
            h.packages.packageList.append(name)
    if (profile.callback_url or calls_home) and "curl" not in h.packages.packageList:
        h.packages.packageList.append("curl")  # the %post calls home with it
    h.packages.seen = True


def _enable(version: str, service: str) -> str:
    """Start a service at boot: EL6 has SysV init, later releases systemd."""
    return f"chkconfig {service} on" if version == "RHEL6" else f"systemctl enable {service}"


def _post(lines: list[str]) -> Script:
    body = "set -eu\n" + "".join(line + "\n" for line in lines)
    return Script(body, type=KS_SCRIPT_POST, interp="/bin/bash", inChroot=True,
                  errorOnFail=True, logfile="/root/ks-post.log")


def _ssh_key_lines(profile: InstallProfile) -> list[str]:
    if profile.ssh_key is None:
        return []
    return ["install -d -m 0700 /root/.ssh",
            f"printf '%s\\n' {shlex.quote(profile.ssh_key)} >> /root/.ssh/authorized_keys",
            "chmod 0600 /root/.ssh/authorized_keys",
            "restorecon -R /root/.ssh"]


def _callback_lines(url: str | None, fields: dict[str, str]) -> list[str]:
    if url is None:
        return []
    data = " ".join(f"--data-urlencode {shlex.quote(f'{k}={v}')}" for k, v in fields.items())
    return [f"curl -fsS --retry 10 --retry-delay 5 -X POST {data} {shlex.quote(url)}"]


def _checked(h: BaseHandler, version: str, what: str) -> str:
    """The kickstart text, after pykickstart has parsed it back without complaint."""
    text = str(h)
    try:
        KickstartParser(_handler(version)).readKickstartFromString(text)
    except KickstartError as exc:
        raise InvalidInput(what, f"generated kickstart does not parse: {exc}") from None
    return text


def _netmask(host: BootHost) -> IPv4Address:
    return host.network.subnet.netmask


@dataclass(frozen=True)
class Callback:
    """Where the %post calls home, and extra form fields to send (`boot serve`: its own
    callback URL and the host's token, instead of the profile's callback_url)."""

    url: str
    fields: tuple[tuple[str, str], ...] = ()


def hypervisor_kickstart(host: BootHost, callback: Callback | None = None) -> str:
    """The kickstart for one hypervisor, from its reservation, network and profile."""
    with _LOCK:
        return _hypervisor_kickstart(host, callback)


def _hypervisor_kickstart(host: BootHost, callback: Callback | None) -> str:
    profile = host.profile
    version = profile.kickstart_version()
    h = _handler(version)
    _common(h, profile, calls_home=callback is not None)
    names = eth_names_args(host)
    if names:  # the installed system keeps the eth names its bond is written with
        _set(h.bootloader, appendLine=" ".join(names))
    net = host.network
    nic: dict[str, object] = dict(
        bootProto="static", ip=str(host.ip), netmask=str(_netmask(host)),
        gateway=str(net.gateway), nameserver=",".join(str(a) for a in net.dns),
        hostname=host.name, activate=True, onboot=True, device=host.mac)
    if host.bond is not None:
        nic.update(device=host.bond.name, bondslaves=",".join(host.bond.interfaces),
                   bondopts=f"mode={host.bond.mode},miimon={host.bond.miimon}")
    if net.vlan is not None:
        nic.update(vlanid=str(net.vlan))
    h.network.network.append(h.NetworkData(**nic))
    h.network.seen = True
    # A hypervisor's local disks hold only its OS (guests live in pools): let the installer
    # lay them out (LVM) with autopart rather than fix sizes no two models share.
    if hasattr(h.autopart, "type"):
        _set(h.autopart, autopart=True, type=AUTOPART_TYPE_LVM)
    else:  # RHEL6: autopart always makes LVM
        _set(h.autopart, autopart=True)
    h.scripts.append(_post([
        _enable(version, "libvirtd"),
        *_ssh_key_lines(profile),
        *_callback_lines(callback.url if callback else profile.callback_url,
                         {"host": host.name, "mac": host.mac, "status": "installed",
                          **dict(callback.fields if callback else ())}),
    ]))
    return _checked(h, version, f"kickstart for {host.name}")


def vm_layout(profile: InstallProfile, field: str = "profile") -> dict[str, int]:
    """MiB per volume: home a quarter of the disk and var an eighth (an 80 GB guest gets 20 GB
    and 10 GB), swap by memory; root takes the rest. `field` names the profile in errors
    (e.g. 'profiles[2]')."""
    disk = profile.disk_gib * GIB
    layout = {"home": disk // 4, "var": disk // 8, "swap": swap_mib(profile.memory_mib)}
    root = disk - BOOT_MIB - sum(layout.values()) - 64  # LVM metadata and alignment
    if root < MIN_ROOT_MIB:
        raise InvalidInput(f"{field}.disk_gib",
                           f"{profile.disk_gib} GiB leaves {max(root, 0)} MiB for / after "
                           f"/boot, /home, /var and swap; / needs {MIN_ROOT_MIB} MiB")
    layout["root"] = root
    return layout


def vm_kickstart(profile: InstallProfile, field: str = "profile") -> str:
    """The kickstart for a VM template built from `profile` (DHCP network, LVM layout)."""
    with _LOCK:
        return _vm_kickstart(profile, field)


def _vm_kickstart(profile: InstallProfile, field: str) -> str:
    version = profile.kickstart_version()
    h = _handler(version)
    _common(h, profile)
    h.network.network.append(h.NetworkData(bootProto="dhcp", device="link", activate=True,
                                           onboot=True))
    h.network.seen = True
    sizes = vm_layout(profile, field)
    opts = "noatime"
    h.partition.partitions.extend([
        h.PartData(mountpoint="/boot", size=BOOT_MIB, fstype="ext4", primOnly=True),
        h.PartData(mountpoint="pv.01", size=1, grow=True, primOnly=True),
    ])
    h.partition.seen = True
    h.volgroup.vgList.append(h.VolGroupData(vgname="vg0", physvols=["pv.01"]))
    h.volgroup.seen = True
    h.logvol.lvList.extend([
        h.LogVolData(mountpoint="/", vgname="vg0", name="lv_root", fstype="ext4",
                     size=sizes["root"], grow=True, fsopts=opts),
        h.LogVolData(mountpoint="/home", vgname="vg0", name="lv_home", fstype="ext4",
                     size=sizes["home"], fsopts=opts),
        h.LogVolData(mountpoint="/var", vgname="vg0", name="lv_var", fstype="ext4",
                     size=sizes["var"], fsopts=opts),
        h.LogVolData(mountpoint="swap", vgname="vg0", name="lv_swap", fstype="swap",
                     size=sizes["swap"]),
    ])
    h.logvol.seen = True
    h.scripts.append(_post([
        *([_enable(version, "qemu-guest-agent")]
          if "qemu-guest-agent" in profile.package_list() else []),
        *_ssh_key_lines(profile),
        *_callback_lines(profile.callback_url, {"profile": profile.name,
                                                "status": "installed"}),
    ]))
    return _checked(h, version, f"kickstart for profile {profile.name}")


class Prepared:
    """Each hypervisor's `boot serve` kickstart, built and parsed back once, with marks where
    the per-request callback URL and token go.

    Building and checking a kickstart takes pykickstart about 5 ms of CPU (two handlers and a
    parse), which at 500 machines installing at once was most of `boot serve`'s work for a
    wave. Filling the marks gives the same text a fresh build would: both values land in the
    %post's curl line through shlex.quote, and are filled in only when quoting leaves them as
    they are (a token is URL-safe base64; check_base holds the URL to plain characters, but an
    IPv6 address in brackets would be quoted: that request gets a fresh build)."""

    def __init__(self) -> None:
        mark = secrets.token_hex(8)  # unguessable: nothing in a request can carry it
        self._url, self._token = f"VFURL{mark}", f"VFTOKEN{mark}"
        self._marks = re.compile(f"{self._url}|{self._token}")
        self._texts: dict[str, str | None] = {}  # None: the marks did not land once each

    def prepare(self, host: BootHost) -> str | None:
        """Build and check host's kickstart with the marks, once; later calls reuse it."""
        if host.name not in self._texts:
            text = hypervisor_kickstart(host, Callback(self._url, (("token", self._token),)))
            once = text.count(self._url) == 1 and text.count(self._token) == 1
            self._texts[host.name] = text if once else None
        return self._texts[host.name]

    def kickstart(self, host: BootHost, callback_url: str, token: str) -> str:
        """host's kickstart calling callback_url with token, as hypervisor_kickstart would
        write it."""
        plain = all(shlex.quote(v) == v for v in (callback_url, f"token={token}"))
        text = self.prepare(host) if plain else None
        if text is None:
            return hypervisor_kickstart(host, Callback(callback_url, (("token", token),)))
        values = {self._url: callback_url, self._token: token}
        return self._marks.sub(lambda m: values[m.group(0)], text)
