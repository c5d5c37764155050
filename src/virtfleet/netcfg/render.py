"""One hypervisor's network files, generated in memory and checked before anything is written.

    <host>/ifcfg/ifcfg-<interface>                 /etc/sysconfig/network-scripts/
    <host>/keyfile/<connection>.nmconnection       /etc/NetworkManager/system-connections/ (0600)
    <host>/nmstate/<host>.yml                      for `nmstatectl apply`

Writing reuses boot's all-or-nothing tree writer (virtfleet.boot.render.write_tree).
"""

from __future__ import annotations

from collections.abc import Iterable

from virtfleet.boot.render import GeneratedFile
from virtfleet.errors import InvalidInput, VirtfleetError
from virtfleet.inventory.fleetfile import Fleet
from virtfleet.inventory.niclayout import NicLayout, host_layout
from virtfleet.netcfg import ifcfg, keyfile, nmstate

FORMATS = ("ifcfg", "keyfile", "nmstate")


class RoundTripFailed(VirtfleetError):
    """Generated files did not parse back into their layout (a virtfleet bug: please report)."""


def _expected(layout: NicLayout) -> NicLayout:
    """What the files can say: no IPMI (the OS does not configure the BMC's port)."""
    return layout.model_copy(update={"ipmi": None, "management": None}).canonical()


def host_files(host: str, layout: NicLayout, formats: Iterable[str]) -> list[GeneratedFile]:
    """The files of `formats` for a concrete layout (see niclayout.host_layout)."""
    wanted = set(formats)
    unknown = wanted - set(FORMATS)
    if unknown:
        raise InvalidInput("formats", f"{sorted(unknown)[0]!r} is not one of "
                           f"{', '.join(FORMATS)}, all")
    files: list[GeneratedFile] = []
    if "ifcfg" in wanted:
        texts = ifcfg.render_ifcfg(layout)
        if ifcfg.parse_ifcfg(texts) != _expected(layout):
            raise RoundTripFailed(f"ifcfg files for {host} do not parse back to its layout")
        files += [GeneratedFile(f"{host}/ifcfg/{n}", "ifcfg", t) for n, t in texts.items()]
    if "keyfile" in wanted:
        texts = keyfile.render_keyfiles(host, layout)
        if keyfile.parse_keyfiles(texts) != _expected(layout):
            raise RoundTripFailed(f"keyfiles for {host} do not parse back to its layout")
        # NetworkManager refuses keyfiles others can read.
        files += [GeneratedFile(f"{host}/keyfile/{n}", "keyfile", t, 0o600)
                  for n, t in texts.items()]
    if "nmstate" in wanted:
        files.append(GeneratedFile(f"{host}/nmstate/{host}.yml", "nmstate",
                                   nmstate.render_nmstate(layout)))
    return files


def render_host(fleet: Fleet, host: str, formats: Iterable[str] = FORMATS
                ) -> tuple[NicLayout, list[GeneratedFile]]:
    """A hypervisor's concrete layout and its files; InvalidInput before anything is made."""
    layout = host_layout(fleet, host)
    return layout, host_files(host, layout, formats)


def notes(layout: NicLayout) -> list[str]:
    """What the files cannot say, for the operator."""
    out = []
    if layout.ipmi is not None:
        where = f" at {layout.ipmi.address}" if layout.ipmi.address is not None else ""
        out.append(f"ipmi: the BMC's {layout.ipmi.port} port{where} is out of band; set it "
                   "with ipmitool lan set, not with these files")
    if not layout.addresses:
        out.append("no static address: the host has no provision.ip in the fleet file (or its "
                   "layout names no management interface), so every interface is left unaddressed")
    return out
