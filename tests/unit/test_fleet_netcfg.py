"""The hypervisor network files service in process: a typed request in, the checked files (or
where they were written) and the notes out; bad input names the request's field."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtfleet.errors import InvalidInput, NotFound
from virtfleet.fleet.netcfg import RenderNetworkFiles, render_network_files
from virtfleet.inventory.fleetfile import load_fleet

FLEET = Path(__file__).parent / "golden" / "netcfg" / "fleet.yaml"
HV3 = "hv3.or.example.com"


def test_files_as_text_then_written_all_at_once(tmp_path: Path) -> None:
    fleet = load_fleet(FLEET)
    shown = render_network_files(fleet, RenderNetworkFiles(HV3, ("keyfile",)))
    assert {f.kind for f in shown.files} == {"keyfile"} and shown.written == ()
    assert any("ipmi" in n for n in shown.notes)
    bond = next(f for f in shown.files if f.path == f"{HV3}/keyfile/bond0.nmconnection")
    assert bond.mode == 0o600 and shown.as_json()["files"][0]["text"]  # type: ignore[index]
    out = tmp_path / "net"
    done = render_network_files(fleet, RenderNetworkFiles(HV3, out=out))
    assert len(done.written) == len(done.files) and all(p.is_file() for p in done.written)
    assert (out / HV3 / "ifcfg" / "ifcfg-bond0").read_text().count("IPADDR=10.1.1.23") == 1


def test_bad_requests_name_their_field_and_write_nothing(tmp_path: Path) -> None:
    fleet = load_fleet(FLEET)
    out = tmp_path / "net"
    with pytest.raises(InvalidInput) as exc:
        render_network_files(fleet, RenderNetworkFiles(HV3, ("netplan",), out))
    assert exc.value.field == "formats" and "'netplan' is not one of" in exc.value.rule
    with pytest.raises(InvalidInput) as bad:
        render_network_files(fleet, RenderNetworkFiles("../hv3", out=out))
    assert bad.value.field == "host"
    with pytest.raises(NotFound):
        render_network_files(fleet, RenderNetworkFiles("hv9.or.example.com", out=out))
    assert not out.exists()
