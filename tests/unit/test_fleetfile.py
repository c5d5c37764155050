from pathlib import Path

import pytest

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
