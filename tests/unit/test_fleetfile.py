import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from virtfleet.errors import InvalidInput
from virtfleet.inventory.fleetfile import dump_fleet, load_fleet, parse_fleet

MINIMAL = """\
sites:
  - name: oregon
    pods:
      - name: or-pod1
        hypervisors:
          - name: hv1.or.example.com
            uri: qemu+ssh://virtfleet@hv1.or.example.com/system
            groups: [web]
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "fleet.yaml"
    p.write_text(text)
    return p


def test_the_issue_minimal_shape_is_accepted(tmp_path: Path) -> None:
    fleet = load_fleet(write(tmp_path, MINIMAL))
    [(site, pod, hv)] = list(fleet.hypervisors())
    assert (site.name, pod.name, hv.name) == ("oregon", "or-pod1", "hv1.or.example.com")
    assert hv.groups == ("web",)
    assert fleet.group_names() == ["web"]


def test_full_shape_round_trips(tmp_path: Path) -> None:
    text = """\
groups:
  - name: web
    description: Apache front ends
sites:
  - name: oregon
    pods:
      - name: or-pod1
        storage: {type: netfs, source: "filer1.or.example.com:/vol/vms", pool: or-pod1-nfs}
        insecure_transport: true
        hypervisors:
          - {name: hv1, uri: "qemu+tcp://10.250.0.11/system", groups: [web], maintenance: true}
"""
    fleet = load_fleet(write(tmp_path, text))
    again = parse_fleet(__import__("yaml").safe_load(dump_fleet(fleet)))
    assert again == fleet


@pytest.mark.parametrize("text,field,words", [
    (MINIMAL + "          - name: hv1.or.example.com\n"
               "            uri: qemu+ssh://hv9/system\n",
     "sites[0].pods[0].hypervisors[1].name", "duplicate hypervisor name 'hv1.or.example.com'"),
    (MINIMAL.replace("groups: [web]", "grups: [web]"),
     "sites[0].pods[0].hypervisors[0].grups", "unknown key"),
    (MINIMAL.replace("hv1.or.example.com\n", "hv1;rm -rf /\n", 1),
     "sites[0].pods[0].hypervisors[0].name", "not a valid name"),
    (MINIMAL.replace("hv1.or.example.com\n", "<hv1>&amp;\n", 1),
     "sites[0].pods[0].hypervisors[0].name", "not a valid name"),
    (MINIMAL.replace("hv1.or.example.com\n", "a" * 254 + "\n", 1),
     "sites[0].pods[0].hypervisors[0].name", "at most 253"),
    (MINIMAL.replace("/system", "/system?command=/bin/sh"),
     "sites[0].pods[0].hypervisors[0].uri", "parameters"),
    (MINIMAL.replace("/system", "/system?socket=/tmp/x"),
     "sites[0].pods[0].hypervisors[0].uri", "parameters"),
    (MINIMAL.replace("/system", "/system?no_verify=1"),
     "sites[0].pods[0].hypervisors[0].uri", "parameters"),
    ("sites:\n  - name: oregon\n    hypervisors:\n      - {name: hv1, uri: 'qemu:///system'}\n",
     "sites[0].hypervisors", "unknown key"),
    ("hypervisors:\n  - {name: hv1, uri: 'qemu:///system'}\n", "hypervisors", "unknown key"),
    ("sites: [oregon\n", "file", "not valid YAML"),
    ("- just\n- a list\n", "fleet.yaml", "mapping"),
    ("sites:\n  - name: a\n  - name: a\n", "sites[1].name", "duplicate site name 'a'"),
    # An empty or truncated file would remove the whole estate on apply.
    ("", "file", "is empty"),
    ("# all commented out\n", "file", "is empty"),
    ("sites: []\n", "sites", "at least one site"),
    ("groups:\n  - name: web\n", "sites", "at least one site"),
])
def test_bad_fleet_files_name_the_field(tmp_path: Path, text: str, field: str,
                                        words: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        load_fleet(write(tmp_path, text))
    assert exc.value.field.endswith(field), exc.value
    assert words in exc.value.rule, exc.value
    assert "\n" not in str(exc.value)


def test_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        load_fleet(tmp_path / "nope.yaml")
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InvalidInput, match="not UTF-8"):
        load_fleet(bad)


# ---- provisioning fields (issue 6): networks, boot servers, reservations, profiles ----

BOOT_FLEET = Path(__file__).parent / "golden" / "boot" / "chapter-fleet.yaml"
HV = ("sites", 0, "pods", 0, "hypervisors")


def _boot_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(BOOT_FLEET.read_text())
    return data


def _at(data: Any, *path: str | int) -> Any:
    for key in path:
        data = data[key]
    return data


def _set(path: tuple[str | int, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(data: dict[str, Any]) -> None:
        _at(data, *path[:-1])[path[-1]] = value
    return apply


def _drop(path: tuple[str | int, ...]) -> Callable[[dict[str, Any]], None]:
    def apply(data: dict[str, Any]) -> None:
        del _at(data, *path[:-1])[path[-1]]
    return apply


def test_provisioning_fields_are_parsed_and_round_trip() -> None:
    fleet = parse_fleet(_boot_data())
    site = fleet.sites[0]
    [net] = site.networks
    assert str(net.subnet) == "10.1.1.0/24" and site.boot is not None
    assert site.boot.dhcp is not None and site.boot.dhcp.split == 128
    prov = site.pods[0].hypervisors[0].provision
    assert prov is not None and prov.mac == "00:e0:81:c5:76:0a"  # normalised to lower case
    assert site.servers_for(net).http_base == "http://ks/"
    assert parse_fleet(yaml.safe_load(dump_fleet(fleet))) == fleet


PROV = (*HV, 0, "provision")
PROV2 = (*HV, 1, "provision")
NET = ("sites", 0, "networks", 0)
PROFILE = ("profiles", 1)


@pytest.mark.parametrize("change,field,words", [
    (_set((*PROV2, "mac"), "00:E0:81:C5:76:0A"), "hypervisors[1].provision.mac",
     "duplicate MAC 00:e0:81:c5:76:0a"),
    (_set((*PROV2, "ip"), "10.1.1.20"), "hypervisors[1].provision.ip", "duplicate IP 10.1.1.20"),
    (_set((*PROV, "ip"), "10.1.2.20"), "hypervisors[0].provision.ip",
     "outside network 'or-prov1' (10.1.1.0/24)"),
    (_set((*PROV, "ip"), "10.1.1.255"), "hypervisors[0].provision.ip",
     "is the broadcast address of network 'or-prov1'"),
    (_set((*PROV, "ip"), "10.1.1.100"), "hypervisors[0].provision.ip",
     "overlaps the dynamic pool 10.1.1.50-10.1.1.250"),
    (_set((*PROV, "ip"), "10.1.1.1"), "hypervisors[0].provision.ip", "is the gateway"),
    (_set((*PROV, "ip"), "10.1.1.4"), "hypervisors[0].provision.ip",
     "is the address of the DHCP primary"),
    (_set((*PROV, "ip"), "10.1.1.11"), "hypervisors[0].provision.ip",
     "is the address of real server 'ks1'"),
    (_set((*PROV2, "bond", "interfaces"), ["eth0", "averyveryverylongname0"]),
     "hypervisors[1].provision.bond.interfaces[1]", "interface name"),
    (_drop(("sites", 0, "boot", "dhcp", "secondary")), "boot.dhcp.secondary",
     "failover pair needs both primary and secondary"),
    (_drop(("sites", 0, "boot", "dhcp", "primary")), "boot.dhcp.primary",
     "only the secondary is given"),
    (_set((*PROV, "mac"), "00:e0:81:c5:76"), "hypervisors[0].provision.mac",
     "not a MAC address"),
    (_set((*PROV, "mac"), "01:00:5e:00:00:01"), "hypervisors[0].provision.mac", "multicast"),
    (_set((*PROFILE, "root_password"), "$6$salt$tooshort"), "profiles[1].root_password",
     "SHA-512 crypt"),
    (_set((*PROFILE, "root_password"), "hunter2"), "profiles[1].root_password",
     "never a plain password"),
    (_set((*PROFILE, "root_password"), "$1$salt$" + "a" * 22), "profiles[1].root_password",
     "SHA-512 crypt"),
    (_set((*PROFILE, "ssh_key"), "ssh-ed25519 AAAAC3Nza'; rm -rf /"), "profiles[1].ssh_key",
     "OpenSSH public key"),
    (_set((*PROFILE, "callback_url"), "http://ks/cb?x=1"), "profiles[1].callback_url",
     "query"),
    (_set((*PROFILE, "kernel"), "../../etc/shadow"), "profiles[1].kernel", "relative path"),
    (_set((*PROFILE, "kernel_args"), ['a"b']), "profiles[1].kernel_args[0]",
     "kernel argument"),
    (_set((*PROV, "network"), "nowhere"), "hypervisors[0].provision.network",
     "no network 'nowhere'"),
    (_set((*PROV, "profile"), "centos-vm"), "hypervisors[0].provision.profile", "for VMs"),
    (_set((*PROV, "profile"), "nope"), "hypervisors[0].provision.profile", "no profile 'nope'"),
    (_set((*NET, "pool", "start"), "10.1.2.1"), "networks[0].pool.start", "not a host address"),
    (_set((*NET, "pool", "end"), "10.1.1.40"), "networks[0].pool.end", "before the pool start"),
    (_set((*NET, "gateway"), "10.9.9.9"), "networks[0].gateway", "not a host address"),
    (_set((*NET, "subnet"), "10.1.1.1/24"), "networks[0].subnet", "IPv4 network"),
    (_set((*NET, "vlan"), 4095), "networks[0].vlan", "4094"),
    (_set((*NET, "name"), "net;reboot"), "networks[0].name", "not a valid name"),
    (_set(("sites", 0, "boot", "http_base"), "ftp://ks/"), "boot.http_base", "http://"),
    (_set(("sites", 0, "boot", "http_base"), 'http://ks/"x'), "boot.http_base", "path may"),
    (_set(("sites", 0, "boot", "real_servers"), []), "boot.real_servers", "at least one"),
    (_set(("sites", 0, "boot", "topology"), "distributed"), "boot.next_server",
     "only for the clustered topology"),
    (_drop(("sites", 0, "boot")), "sites[0].boot", "needs a boot section"),
    (_set((*PROV, "mack"), "x"), "hypervisors[0].provision.mack", "unknown key"),
    (_drop((*PROV, "mac")), "hypervisors[0].provision.mac", "required"),
])
def test_bad_provisioning_names_the_field(change: Callable[[dict[str, Any]], None], field: str,
                                          words: str) -> None:
    exc = _refusal(change)
    assert exc.field.endswith(field), exc
    assert words in exc.rule, exc
    assert "\n" not in str(exc)


def _refusal(change: Callable[[dict[str, Any]], None]) -> InvalidInput:
    """What parse_fleet says of the boot fleet after `change`."""
    data = _boot_data()
    change(data)
    with pytest.raises(InvalidInput) as exc:
        parse_fleet(data)
    return exc.value


def test_distributed_networks_need_their_own_servers() -> None:
    data = _boot_data()
    boot = data["sites"][0]["boot"]
    data["sites"][0]["boot"] = {"topology": "distributed"}
    with pytest.raises(InvalidInput) as exc:
        parse_fleet(data)
    assert exc.value.field == "sites[0].networks[0].servers"
    data["sites"][0]["networks"][0]["servers"] = {
        "next_server": boot["next_server"], "http_base": boot["http_base"], "dhcp": boot["dhcp"]}
    assert parse_fleet(data).sites[0].boot is not None


def _copy_of(path: tuple[str | int, ...], index: int) -> Callable[[dict[str, Any]], None]:
    """Append a copy of list item `index` at `path` (so its name repeats)."""
    def apply(data: dict[str, Any]) -> None:
        items = _at(data, *path)
        items.append(copy.deepcopy(items[index]))
    return apply


@pytest.mark.parametrize("change,field,rule", [
    (_copy_of(("profiles",), 0), "profiles[3].name",
     "duplicate profile name 'centos-kvm' (first at profiles[0].name)"),
    (_copy_of(("sites", 0, "boot", "real_servers"), 0), "sites[0].boot.real_servers[2].name",
     "duplicate real server 'ks1' (first at sites[0].boot.real_servers[0])"),
    (_copy_of(("sites", 0, "networks"), 0), "sites[0].networks[1].name",
     "duplicate network name 'or-prov1' (first at sites[0].networks[0].name)"),
])
def test_a_repeat_names_both_places(change: Callable[[dict[str, Any]], None], field: str,
                                    rule: str) -> None:
    exc = _refusal(change)
    assert (exc.field, exc.rule) == (field, rule)
