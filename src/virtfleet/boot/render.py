"""Everything a fleet's network installs need, generated in memory, then written as one tree.

Nothing touches the disk until every file of every site has been generated (so any bad input
is refused with nothing written), and the tree appears all at once: it is written into a
temporary directory beside --out and renamed into place.

    <out>/<site>/dhcpd/<scope>-primary.conf  (and -secondary; <scope>.conf without a pair)
    <out>/<site>/kea/<scope>-primary.json
    <out>/<site>/haproxy/haproxy.cfg          clustered topology only
    <out>/<site>/tftp/pxelinux.cfg/default, pxelinux.cfg/01-<mac>
    <out>/<site>/tftp/grub/grub.cfg, grub/grub.cfg-01-<mac>
    <out>/<site>/http/ipxe/boot.ipxe, ipxe/hosts/<mac>.ipxe
    <out>/<site>/http/ks/<hypervisor>.ks
    <out>/vm/<profile>.ks                     profiles of kind vm
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from virtfleet.boot import dhcpd, grub, haproxy, ipxe, kea, kickstart, pxelinux
from virtfleet.boot.scopes import boot_hosts, dhcp_scopes
from virtfleet.errors import InvalidInput
from virtfleet.inventory.fleetfile import Fleet, Site

MARKER = ".virtfleet-boot"  # says a directory is ours to replace on the next render


@dataclass(frozen=True)
class GeneratedFile:
    path: str  # relative to the output directory
    kind: str  # dhcpd, kea, haproxy, pxelinux, grub, ipxe, kickstart
    text: str
    mode: int = 0o644


def _scope_file(scope: str, role: str | None, ext: str) -> str:
    return f"{scope}-{role}.{ext}" if role else f"{scope}.{ext}"


def render_site(fleet: Fleet, site: Site) -> list[GeneratedFile]:
    out: list[GeneratedFile] = []
    top = site.name
    omapi_secret = dhcpd.new_omapi_secret()  # fresh each render, shared by the pair
    for scope in dhcp_scopes(fleet, site):
        for role in dhcpd.roles(scope):
            # 0600: the file holds the OMAPI key, which can rewrite leases.
            out.append(GeneratedFile(f"{top}/dhcpd/{_scope_file(scope.name, role, 'conf')}",
                                     "dhcpd", dhcpd.render_dhcpd(scope, role, omapi_secret),
                                     0o600))
            out.append(GeneratedFile(f"{top}/kea/{_scope_file(scope.name, role, 'json')}",
                                     "kea", kea.render_kea(scope, role)))
    hosts = list(boot_hosts(fleet, site))
    lb = haproxy.render_haproxy(site)
    if lb is not None:
        out.append(GeneratedFile(f"{top}/haproxy/haproxy.cfg", "haproxy", lb))
    if site.boot is None:
        return out
    out += [
        GeneratedFile(f"{top}/tftp/pxelinux.cfg/default", "pxelinux", pxelinux.default_menu()),
        GeneratedFile(f"{top}/tftp/grub/grub.cfg", "grub", grub.default_config()),
        GeneratedFile(f"{top}/http/ipxe/boot.ipxe", "ipxe", ipxe.chain_script()),
    ]
    per_host: list[tuple[str, str, Callable[..., str], Callable[..., str]]] = [
        ("tftp", "pxelinux", pxelinux.host_file_name, pxelinux.host_menu),
        ("tftp", "grub", grub.host_file_name, grub.host_config),
        ("http", "ipxe", ipxe.host_file_name, ipxe.host_script),
    ]
    for host in hosts:
        for root, kind, name, make in per_host:
            out.append(GeneratedFile(f"{top}/{root}/{name(host)}", kind, make(host)))
        # 0600: a kickstart holds the root password hash and the management SSH key.
        out.append(GeneratedFile(f"{top}/http/ks/{host.name}.ks", "kickstart",
                                 kickstart.hypervisor_kickstart(host), 0o600))
    return out


def render_fleet(fleet: Fleet, site: str | None = None) -> list[GeneratedFile]:
    """Every file for the fleet (or one site); raises InvalidInput before anything is made."""
    sites = fleet.sites
    if site is not None:
        sites = tuple(s for s in fleet.sites if s.name == site)
        if not sites:
            known = ", ".join(s.name for s in fleet.sites) or "none"
            raise InvalidInput("site", f"no site {site!r} in the fleet file (known: {known})")
    files: list[GeneratedFile] = []
    for s in sites:
        files += render_site(fleet, s)
    for i, profile in enumerate(fleet.profiles):
        if profile.kind == "vm":
            text = kickstart.vm_kickstart(profile, field=f"profiles[{i}]")
            files.append(GeneratedFile(f"vm/{profile.name}.ks", "kickstart", text, 0o600))
    return files


def _check_target(out: Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise InvalidInput("out", f"{str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise InvalidInput("out", f"{str(out)!r} is not empty and was not made by "
                           "'virtfleet boot render'; choose a new directory")


def write_tree(files: list[GeneratedFile], out: Path,
               before_publish: Callable[[Path], None] | None = None) -> list[Path]:
    """Write `files` under `out` all at once; `before_publish` may inspect (and refuse) the
    finished temporary tree. Returns the final paths."""
    out = out.absolute()
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    old: Path | None = None
    try:
        (tmp / MARKER).write_text("made by virtfleet boot render; replaced on each render\n")
        for f in files:
            target = tmp / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, f.mode)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(f.text)
        tmp.chmod(0o755)  # mkdtemp made it 0700
        if before_publish is not None:
            before_publish(tmp)
        if out.is_dir():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / "tree")
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists():
            os.rename(old / "tree", out)  # put the previous render back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return [out / f.path for f in files]
