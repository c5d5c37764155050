"""A hypervisor's own network files (bonds, VLANs, bridges, OVS) from its NIC layout: ifcfg
files, NetworkManager keyfiles and nmstate, each checked by parsing it back, then written all
at once under a directory or handed back as text.

    files = render_network_files(fleet, RenderNetworkFiles("hv1", ("keyfile",)))

The layout comes from the fleet (a fleet file's, or the store's inventory, which holds no NIC
layouts or addresses: the built-in layout, unaddressed). Nothing is written if any input is bad.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from virtfleet.boot.render import GeneratedFile, write_tree
from virtfleet.inventory.fleetfile import Fleet
from virtfleet.netcfg.render import FORMATS, notes, render_host
from virtfleet.validate import check_name


@dataclass(frozen=True)
class RenderNetworkFiles:
    """`host`'s files in `formats`; with `out`, written under that directory (replaced as a
    whole if an earlier render made it)."""

    host: str
    formats: tuple[str, ...] = FORMATS
    out: Path | None = None


@dataclass(frozen=True)
class NetworkFiles:
    host: str
    notes: tuple[str, ...]  # what the files cannot say (the BMC's port, no static address)
    files: tuple[GeneratedFile, ...]
    written: tuple[Path, ...] = ()  # with `out`: where each file went

    def as_json(self) -> dict[str, object]:
        files: list[dict[str, object]] = (
            [{"path": str(p), "kind": f.kind}
             for p, f in zip(self.written, self.files, strict=True)] if self.written
            else [{"path": f.path, "kind": f.kind, "text": f.text} for f in self.files])
        return {"host": self.host, "notes": list(self.notes), "files": files}


def render_network_files(fleet: Fleet, req: RenderNetworkFiles) -> NetworkFiles:
    check_name("host", req.host)
    layout, files = render_host(fleet, req.host, req.formats)
    written = tuple(write_tree(files, req.out)) if req.out is not None else ()
    return NetworkFiles(req.host, tuple(notes(layout)), tuple(files), written)
