"""The lab BMC's generated files and its control's argument rules (no root, no ipmi_sim).

The BMCs themselves, driven by fence_ipmilan, are tested in tests/integration/test_fence.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from virtfleet.errors import LabError
from virtfleet.lab import bmc
from virtfleet.lab.names import MAX_HOSTS, LabNames, sim_index


def test_each_hypervisor_gets_its_own_loopback_bmc_address(tmp_path: Path) -> None:
    names = LabNames.for_lab("fence", tmp_path)
    k = names.octet
    assert bmc.bmc_address(names, 1) == f"127.250.{k}.11"
    assert bmc.bmc_address(names, MAX_HOSTS) == f"127.250.{k}.210"
    for bad in (0, MAX_HOSTS + 1, sim_index(1)):
        with pytest.raises(LabError):
            bmc.bmc_address(names, bad)


def test_lan_conf_has_one_admin_user_and_our_chassis_control() -> None:
    text = bmc.lan_conf("127.250.3.11", 623, "virtfleet", "pw-123_abc",
                        "/usr/bin/python3 -m virtfleet.lab.bmc /s/bmc/h1/control.json 0x20")
    lines = [ln.strip() for ln in text.splitlines()]
    assert "addr 127.250.3.11 623" in lines
    assert 'user 2 true "virtfleet" "pw-123_abc" admin 10 md5' in lines
    assert not any(ln.startswith("user 1 ") for ln in lines)  # no anonymous access
    assert ('chassis_control "/usr/bin/python3 -m virtfleet.lab.bmc /s/bmc/h1/control.json '
            '0x20"') in lines
    assert "allowed_auths_admin md5" in lines


@pytest.mark.parametrize("user,password,control", [
    ('vf"', "pw", "/x 0x20"),
    ("vf", 'p"w', "/x 0x20"),
    ("vf", "pw\nuser 3 true", "/x 0x20"),
    ("vf", "pw", '/x 0x20"; rm -rf /'),
    ("vf", "pw#", "/x 0x20"),
    ("vf", "p\\w", "/x 0x20"),
])
def test_lan_conf_refuses_what_its_parser_or_a_shell_would_read(user: str, password: str,
                                                                control: str) -> None:
    with pytest.raises(LabError):
        bmc.lan_conf("127.250.3.11", 623, user, password, control)


def test_paths_handed_to_the_simulators_shell_are_plain() -> None:
    assert bmc._safe_path(Path("/var/lib/virtfleet/lab/x/bmc/h1/lan.conf"))
    for bad in ("/tmp/a b", "/tmp/$(reboot)", "/tmp/a;b", "/tmp/a'b", "relative/x",
                "/tmp/../etc"):
        with pytest.raises(LabError):
            bmc._safe_path(Path(bad))


def test_the_control_refuses_what_it_does_not_simulate(tmp_path: Path) -> None:
    assert bmc.main([]) == 2
    # An unreadable or foreign config is refused before any action.
    assert bmc.main([str(tmp_path / "missing.json"), "0x20", "set", "power", "0"]) == 1
    conf = tmp_path / "control.json"
    conf.write_text(json.dumps({"lab": "nolab", "root": str(tmp_path), "host": "nolab-hv1",
                                "index": 1}))
    assert bmc.main([str(conf), "0x20", "set", "power", "0"]) == 1


def test_a_lab_bmc_block_is_a_valid_fleet_bmc() -> None:
    from virtfleet.inventory.fleetfile import BmcSpec

    b = bmc.LabBmc(host="lab-hv1", index=1, address="127.250.3.11", port=623,
                   username="virtfleet", password_file="/var/lib/virtfleet/lab/lab/bmc/h1/"
                   "password", dir="/var/lib/virtfleet/lab/lab/bmc/h1")
    spec = BmcSpec.model_validate(b.fleet_bmc())
    assert spec.agent == "ipmilan" and spec.cipher == 3 and spec.power_wait == 0
