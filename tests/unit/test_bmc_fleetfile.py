"""A hypervisor's `bmc:` block in the fleet file: its rules, and that credentials stay secret.

The fleet file names where the password is (a 0600 file or an environment variable), never the
password; nothing virtfleet prints or stores holds it.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from virtfleet.errors import InvalidInput
from virtfleet.ha.credentials import BmcConfigError, Secret, read_password
from virtfleet.inventory.fleetfile import BmcSpec, dump_fleet, parse_fleet

from .cli import run

HV = "sites[0].pods[0].hypervisors[0]"
PASSWORD = "Xy7-never-printed"


def ipmi(**over: Any) -> dict[str, Any]:
    bmc: dict[str, Any] = {"agent": "ipmilan", "address": "10.1.0.11", "username": "admin",
                           "password_file": "/etc/virtfleet/bmc/hv1.pass"}
    bmc.update(over)
    return {k: v for k, v in bmc.items() if v is not None}


def fleet(*bmcs: dict[str, Any] | None, uri_base: str = "qemu+ssh://hv{}/system") -> dict[str, Any]:
    hvs = []
    for i, bmc in enumerate(bmcs, start=1):
        hv: dict[str, Any] = {"name": f"hv{i}", "uri": uri_base.format(i)}
        if bmc is not None:
            hv["bmc"] = bmc
        hvs.append(hv)
    return {"sites": [{"name": "or", "pods": [{"name": "or-pod1", "hypervisors": hvs}]}]}


def test_a_bmc_block_is_optional_and_round_trips() -> None:
    f = parse_fleet(fleet(None, ipmi(address="bmc-hv2.or.example.com", port=6230, cipher=17,
                                     power_wait=4)))
    hv1, hv2 = (hv for _, _, hv in f.hypervisors())
    assert hv1.bmc is None
    assert hv2.bmc is not None and hv2.bmc.effective_port == 6230 and hv2.bmc.cipher == 17
    again = parse_fleet(yaml.safe_load(dump_fleet(f)))
    assert again == f


def test_default_ports_follow_the_agent() -> None:
    assert BmcSpec.model_validate(ipmi()).effective_port == 623
    red = BmcSpec.model_validate(ipmi(agent="redfish", password_file=None,
                                      password_env="HV1_BMC", ssl_insecure=True,
                                      systems_uri="/redfish/v1/Systems/1"))
    assert red.effective_port == 443


@pytest.mark.parametrize("bmc,field,words", [
    (ipmi(password=PASSWORD), "bmc.password", "never put the password in the fleet file"),
    (ipmi(password_file=None), "bmc.password_file", "missing"),
    (ipmi(password_env="HV1_BMC"), "bmc.password_env", "only one of"),
    (ipmi(password_file="bmc/hv1.pass"), "bmc.password_file", "absolute path"),
    (ipmi(password_file="/etc/../root/pw"), "bmc.password_file", "without '..'"),
    (ipmi(password_file="/etc/bmc pw"), "bmc.password_file", "spaces"),
    (ipmi(password_file=None, password_env="1BAD"), "bmc.password_env",
     "not an environment variable name"),
    (ipmi(password_file=None, password_env="A-B"), "bmc.password_env",
     "not an environment variable name"),
    (ipmi(agent="ilo"), "bmc.agent", "'ipmilan' or 'redfish'"),
    (ipmi(agent=None), "bmc.agent", "missing"),
    (ipmi(address="bmc;reboot"), "bmc.address", "not a valid name"),
    (ipmi(address="-oProxyCommand"), "bmc.address", "not a valid name"),
    (ipmi(port=0), "bmc.port", "must be at least 1"),
    (ipmi(port=70000), "bmc.port", "must be at most 65535"),
    (ipmi(username="ad min"), "bmc.username", "not a BMC user name"),
    (ipmi(username="-P"), "bmc.username", "not a BMC user name"),
    (ipmi(username=None), "bmc.username", "missing"),
    (ipmi(cipher=18), "bmc.cipher", "must be at most 17"),
    (ipmi(ssl_insecure=True), "bmc.ssl_insecure", "only for agent redfish"),
    (ipmi(systems_uri="/redfish/v1/Systems/1"), "bmc.systems_uri", "only for agent redfish"),
    (ipmi(agent="redfish", cipher=3), "bmc.cipher", "only for agent ipmilan"),
    (ipmi(agent="redfish", systems_uri="/etc/passwd"), "bmc.systems_uri",
     "a Redfish system path"),
    (ipmi(power_wait=-1), "bmc.power_wait", "must be at least 0"),
    (ipmi(pasword_file="/x"), "bmc.pasword_file", "unknown key"),
])
def test_bad_bmc_blocks_name_the_field(bmc: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_fleet(fleet(bmc))
    assert exc.value.field == f"{HV}.{field}"
    assert words in exc.value.rule
    assert PASSWORD not in exc.value.message


def test_two_hypervisors_never_share_a_bmc() -> None:
    # Fencing hv1 would power off hv2: refused, and the error says whose BMC it is.
    with pytest.raises(InvalidInput) as exc:
        parse_fleet(fleet(ipmi(), ipmi(address="10.1.0.11", port=623)))
    assert exc.value.field == "sites[0].pods[0].hypervisors[1].bmc.address"
    assert "already the BMC of hypervisor 'hv1'" in exc.value.rule
    # Another port, or another Redfish system of one multi-node BMC, is another device.
    parse_fleet(fleet(ipmi(), ipmi(port=624)))
    red = {"agent": "redfish", "address": "10.1.0.50", "username": "root",
           "password_env": "CHASSIS_PW"}
    parse_fleet(fleet({**red, "systems_uri": "/redfish/v1/Systems/1"},
                      {**red, "systems_uri": "/redfish/v1/Systems/2"}))
    with pytest.raises(InvalidInput):
        parse_fleet(fleet({**red, "systems_uri": "/redfish/v1/Systems/1"},
                          {**red, "systems_uri": "/redfish/v1/Systems/1"}))


# -- reading the password ---------------------------------------------------------------------


def pw_file(tmp_path: Path, text: str = PASSWORD + "\n", mode: int = 0o600) -> Path:
    p = tmp_path / "hv1.pass"
    p.write_text(text)
    p.chmod(mode)
    return p


def spec(**over: Any) -> BmcSpec:
    return BmcSpec.model_validate(ipmi(**over))


def test_the_password_comes_from_a_private_file_without_its_newline(tmp_path: Path) -> None:
    secret = read_password("hv1", spec(password_file=str(pw_file(tmp_path))))
    assert secret.reveal() == PASSWORD
    assert PASSWORD not in repr(secret) and PASSWORD not in str(secret)
    assert read_password("hv1", spec(password_file=str(pw_file(tmp_path, mode=0o400)))) \
        .reveal() == PASSWORD


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o666])
def test_a_password_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    with pytest.raises(BmcConfigError) as exc:
        read_password("hv1", spec(password_file=str(pw_file(tmp_path, mode=mode))))
    assert exc.value.host == "hv1"
    assert exc.value.field == "bmc.password_file"
    assert "readable by its owner only (chmod 600" in exc.value.rule
    assert f"{mode:04o}" in exc.value.rule
    assert exc.value.message.startswith("hv1: bmc.password_file: ")
    assert exc.value.exit_code == 2


def test_password_file_problems_are_named(tmp_path: Path) -> None:
    real = pw_file(tmp_path)
    link = tmp_path / "link.pass"
    link.symlink_to(real)
    cases = {
        str(tmp_path / "missing.pass"): "does not exist",
        str(link): "a symbolic link is refused",
        str(tmp_path): "is not a regular file",
    }
    for path, words in cases.items():
        with pytest.raises(BmcConfigError, match=words):
            read_password("hv1", spec(password_file=path))
    for text, words in [("", "empty"), ("\n", "empty"), ("a\nb\n", "one line"),
                        (" padded\n", "begin or end with a space"),
                        ('"quoted"\n', "double quotes"),
                        ("x" * 21 + "\n", "at most 20 bytes")]:
        with pytest.raises(BmcConfigError, match=words) as exc:
            read_password("hv1", spec(password_file=str(pw_file(tmp_path, text))))
        assert text.strip() not in exc.value.message or not text.strip()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the file another owner")
def test_a_password_file_of_another_user_is_refused(tmp_path: Path) -> None:
    p = pw_file(tmp_path)
    os.chown(p, 65534, 65534)
    with pytest.raises(BmcConfigError, match="must be owned by the user"):
        read_password("hv1", spec(password_file=str(p)))


def test_the_password_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    s = spec(password_file=None, password_env="VF_TEST_HV1_BMC")
    monkeypatch.delenv("VF_TEST_HV1_BMC", raising=False)
    with pytest.raises(BmcConfigError) as exc:
        read_password("hv1", s)
    assert exc.value.field == "bmc.password_env"
    assert "VF_TEST_HV1_BMC is not set" in exc.value.rule
    monkeypatch.setenv("VF_TEST_HV1_BMC", PASSWORD)
    assert read_password("hv1", s).reveal() == PASSWORD
    # Redfish passwords may be longer than IPMI's 20 bytes.
    long = "r" * 40
    monkeypatch.setenv("VF_TEST_HV1_BMC", long)
    red = BmcSpec.model_validate(ipmi(agent="redfish", password_file=None,
                                      password_env="VF_TEST_HV1_BMC"))
    assert read_password("hv1", red).reveal() == long


def test_secret_never_shows_itself() -> None:
    s = Secret(PASSWORD)
    assert PASSWORD not in f"{s} {s!r} {[s]} {({'pw': s})}"


# -- nothing prints or stores it ----------------------------------------------------------------


def test_host_list_and_the_store_never_hold_the_password(tmp_path: Path) -> None:
    pw = pw_file(tmp_path)
    data = fleet(ipmi(password_file=str(pw)),
                 ipmi(address="10.1.0.12", password_file=None, password_env="HV2_BMC_PW"),
                 uri_base="test:///" + str(tmp_path) + "/hv{}.xml")
    f = tmp_path / "fleet.yaml"
    f.write_text(yaml.safe_dump(data))
    db = tmp_path / "store.db"
    env = {"HV2_BMC_PW": PASSWORD + "2"}
    outputs = []
    for args in (["apply", "-f", str(f), "--dry-run"], ["apply", "-f", str(f)],
                 ["host", "list"], ["host", "list", "--json"]):
        r = run(db, *args, env=env)
        assert r.code == 0, r.err
        outputs.append(r.out + r.err)
    listed = run(db, "host", "list", "--json", env=env).json()
    assert [h["name"] for h in listed] == ["hv1", "hv2"]
    for text in outputs:
        assert PASSWORD not in text
    # Not in the store, in any form SQLite keeps it (tables, or free pages of the file).
    raw = db.read_bytes()
    assert PASSWORD.encode() not in raw
    with sqlite3.connect(db) as conn:
        dump = "\n".join(conn.iterdump())
    assert PASSWORD not in dump
    # And a fleet file written back from the model names only where the password is.
    from virtfleet.inventory.fleetfile import load_fleet
    text = dump_fleet(load_fleet(f))
    assert PASSWORD not in text and str(pw) in text and "HV2_BMC_PW" in text
