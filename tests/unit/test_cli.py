"""The CLI end to end on test-driver hypervisors: inventory, fleet queries, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from .cli import run
from .nodes import node_uri, refused_port

REQUIRED = {"host", "site", "pod", "name", "uuid", "state", "vcpus", "memory_mib"}


def fleet(tmp_path: Path, *, extra_hosts: list[dict[str, object]] | None = None) -> dict:
    return {"sites": [
        {"name": "oregon", "pods": [
            {"name": "or-pod1", "hypervisors": [
                {"name": "hv1.or", "uri": node_uri(tmp_path, "two-vms.xml", "hv1.xml"),
                 "groups": ["web"]},
                {"name": "hv2.or", "uri": node_uri(tmp_path, "empty.xml", "hv2.xml"),
                 "groups": ["db"]},
            ]},
            {"name": "or-pod2", **({"insecure_transport": True} if extra_hosts else {}),
             "hypervisors": [
                {"name": "hv3.or", "uri": node_uri(tmp_path, "two-vms.xml", "hv3.xml")},
                *(extra_hosts or []),
             ]},
        ]},
    ]}


def write(tmp_path: Path, data: object, name: str = "fleet.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


def test_an_empty_or_truncated_fleet_file_removes_nothing(tmp_path: Path, db: Path) -> None:
    assert run(db, "apply", "-f", str(write(tmp_path, fleet(tmp_path)))).code == 0
    for text, says in (("", "is empty"), ("sites: []\n", "sites: must list at least one")):
        r = run(db, "apply", "-f", str(write(tmp_path, text, "cut.yaml")))
        assert r.code == 2 and says in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert [h["name"] for h in run(db, "host", "list", "--json").json()] == [
        "hv1.or", "hv2.or", "hv3.or"]


def test_apply_dry_run_writes_nothing_then_apply_records(tmp_path: Path, db: Path) -> None:
    f = write(tmp_path, fleet(tmp_path))
    r = run(db, "apply", "-f", str(f), "--dry-run")
    assert r.code == 0, r.err
    assert "+ hypervisor hv1.or" in r.out and "Would" in r.out
    assert run(db, "host", "list", "--json").json() == []
    r = run(db, "apply", "-f", str(f))
    assert r.code == 0, r.err
    hosts = run(db, "host", "list", "--json").json()
    assert [h["name"] for h in hosts] == ["hv1.or", "hv2.or", "hv3.or"]
    assert run(db, "apply", "-f", str(f)).out.startswith("Inventory already matches")
    # remove one, move one, regroup one
    data = fleet(tmp_path)
    pods = data["sites"][0]["pods"]
    moved = pods[0]["hypervisors"].pop(1)
    pods[1]["hypervisors"].append(moved)
    pods[1]["hypervisors"].pop(0)
    pods[0]["hypervisors"][0]["groups"] = ["web", "db"]
    r = run(db, "apply", "-f", str(write(tmp_path, data, "v2.yaml")), "--dry-run", "--json")
    plan = r.json()
    assert [c["name"] for c in plan["removed"] if c["kind"] == "hypervisor"] == ["hv3.or"]
    assert {c["name"] for c in plan["changed"] if c["kind"] == "hypervisor"} == {
        "hv1.or", "hv2.or"}


BAD = [
    ("duplicate", lambda t: fleet(t, extra_hosts=[{"name": "hv1.or", "uri": "qemu:///system"}]),
     "duplicate hypervisor name"),
    ("unknown key", lambda t: {"sites": [{"name": "a", "pods": [], "colour": "red"}]},
     "unknown key"),
    ("shell chars", lambda t: fleet(t, extra_hosts=[{"name": "x;reboot",
                                                     "uri": "qemu:///system"}]),
     "not a valid name"),
    ("xml chars", lambda t: fleet(t, extra_hosts=[{"name": "<x/>", "uri": "qemu:///system"}]),
     "not a valid name"),
    ("too long", lambda t: fleet(t, extra_hosts=[{"name": "h" * 254, "uri": "qemu:///system"}]),
     "at most 253"),
    ("command=", lambda t: fleet(t, extra_hosts=[
        {"name": "h9", "uri": "qemu+ssh://h9/system?command=/bin/sh"}]), "parameters"),
    ("socket=", lambda t: fleet(t, extra_hosts=[
        {"name": "h9", "uri": "qemu+ssh://h9/system?socket=/run/x"}]), "parameters"),
    ("no_verify=", lambda t: fleet(t, extra_hosts=[
        {"name": "h9", "uri": "qemu+tls://h9/system?no_verify=1"}]), "parameters"),
    ("outside pod", lambda t: {"sites": [{"name": "a", "hypervisors": [
        {"name": "h", "uri": "qemu:///system"}]}]}, "unknown key"),
    ("not yaml", lambda t: "sites: [ {name: a\n", "not valid YAML"),
]


@pytest.mark.parametrize("label,data,words", BAD, ids=[b[0] for b in BAD])
def test_bad_fleet_file_exits_2_names_field_and_leaves_store(tmp_path: Path, db: Path,
                                                             label: str, data: object,
                                                             words: str) -> None:
    good = write(tmp_path, fleet(tmp_path), "good.yaml")
    assert run(db, "apply", "-f", str(good)).code == 0
    before = run(db, "host", "list", "--json").json()
    r = run(db, "apply", "-f", str(write(tmp_path, data(tmp_path))))  # type: ignore[operator]
    assert r.code == 2, (label, r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in r.err
    assert run(db, "host", "list", "--json").json() == before


def test_list_json_has_the_fields_and_filters_work(tmp_path: Path, db: Path) -> None:
    run(db, "apply", "-f", str(write(tmp_path, fleet(tmp_path))))
    r = run(db, "list", "--json")
    assert r.code == 0, r.err
    vms = r.json()
    assert len(vms) == 6 and all(set(v) >= REQUIRED for v in vms)
    assert {v["host"] for v in vms} == {"hv1.or", "hv3.or"}
    assert {v["state"] for v in vms} == {"running", "paused", "shut off"}
    running = run(db, "list", "--json", "--state", "running").json()
    assert {v["name"] for v in running} == {"vm1.example.com"}
    assert {v["host"] for v in run(db, "list", "--json", "--pod", "or-pod2").json()} == {"hv3.or"}
    assert run(db, "list", "--json", "--group", "db").json() == []
    table = run(db, "list").out
    assert "shut off" in table and "vm1.example.com" in table
    assert run(db, "list", "--site", "texas").code == 3
    bad = run(db, "list", "--state", "sleeping")
    assert bad.code == 2 and "--state" in bad.err


def test_a_failed_host_is_named_and_the_rest_still_printed(tmp_path: Path, db: Path) -> None:
    dead = {"name": "dead.or", "uri": f"qemu+tcp://127.0.0.1:{refused_port()}/system"}
    run(db, "apply", "-f", str(write(tmp_path, fleet(tmp_path, extra_hosts=[dead]))))
    r = run(db, "list", "--json")
    assert r.code == 1
    assert len(r.json()) == 6
    assert "dead.or: host-unavailable" in r.err and "refused" in r.err
    # Regression (new-user trial): said "the results are partial" even when none came back.
    assert r.err.splitlines()[-1] == ("virtfleet: 1 of 4 host(s) failed; the results are from "
                                      "the other 3 only"), r.err
    # only virtfleet's own lines: libvirt must not print its errors too
    assert all(line.startswith("virtfleet: ") for line in r.err.splitlines()), r.err
    r = run(db, "host", "info", "--json")
    assert r.code == 1 and len(r.json()) == 3 and "dead.or" in r.err
    checks = {c["host"]: c for c in run(db, "host", "check", "--json").json()}
    assert set(checks["dead.or"]) == set(checks["hv1.or"])  # same shape, reachable or not
    assert checks["dead.or"]["reachable"] is False and not checks["dead.or"]["ok"]
    assert "refused" in checks["dead.or"]["problems"][0]


def test_host_facts(tmp_path: Path, db: Path) -> None:
    run(db, "apply", "-f", str(write(tmp_path, fleet(tmp_path))))
    info = run(db, "host", "info", "--json", "hv1.or").json()
    assert info == [{"host": "hv1.or", "site": "oregon", "pod": "or-pod1", "cpu_model": "x86_64",
                     "cpus": 16, "mhz": 3292, "sockets": 1, "cores_per_socket": 4,
                     "threads_per_core": 2, "numa_cells": 2, "memory_kib": 67108864}]
    text = run(db, "host", "info", "hv1.or").out
    assert "CPU frequency:" in text and "3292 MHz" in text
    assert run(db, "host", "version", "--json").json()[0]["driver"] == "TEST"
    sysinfo = run(db, "host", "sysinfo", "--json", "hv2.or").json()[0]
    assert sysinfo["type"] == "smbios" and sysinfo["bios"]
    check = run(db, "host", "check", "--json", "--pod", "or-pod1").json()
    assert [c["host"] for c in check] == ["hv1.or", "hv2.or"]
    assert all(c["reachable"] for c in check)
    assert run(db, "host", "info", "nope").code == 3


def test_host_add_remove(tmp_path: Path, db: Path) -> None:
    uri = node_uri(tmp_path, "empty.xml")
    r = run(db, "host", "add", "hv9", "--uri", uri, "--site", "texas", "--pod", "tx-pod1",
            "--group", "web")
    assert r.code == 0, r.err
    assert run(db, "host", "add", "hv9", "--uri", "qemu:///system", "--site", "texas",
               "--pod", "tx-pod1").code == 4
    bad = run(db, "host", "add", "hv10", "--uri", "qemu+ssh://x/system?command=sh",
              "--site", "texas", "--pod", "tx-pod1")
    assert bad.code == 2 and bad.err.startswith("virtfleet: error: --uri: ")
    bad = run(db, "host", "add", "hv10", "--uri", "qemu:///system", "--site", "tex as",
              "--pod", "tx-pod1")
    assert bad.code == 2 and bad.err.startswith("virtfleet: error: --site: ")
    bad = run(db, "host", "add", "hv10", "--uri", "qemu:///system", "--site", "texas",
              "--pod", "p", "--group", "a", "--group", "b&c")
    assert bad.code == 2 and bad.err.startswith("virtfleet: error: --group: ")
    assert [h["name"] for h in run(db, "host", "list", "--json").json()] == ["hv9"]
    assert run(db, "host", "remove", "hv9").code == 0
    assert run(db, "host", "remove", "hv9").code == 3


def test_sync_records_and_marks_failures(tmp_path: Path, db: Path) -> None:
    dead = {"name": "dead.or", "uri": f"qemu+tcp://127.0.0.1:{refused_port()}/system"}
    run(db, "apply", "-f", str(write(tmp_path, fleet(tmp_path, extra_hosts=[dead]))))
    r = run(db, "sync", "--json")
    assert r.code == 1
    assert r.json()["vms"] == 6
    states = {h["name"]: h["reachable"] for h in run(db, "host", "list", "--json").json()}
    assert states == {"hv1.or": True, "hv2.or": True, "hv3.or": True, "dead.or": False}


@pytest.mark.parametrize("args", [["list", "--bogus"], ["host", "add"], ["nope"],
                                  ["list", "--state"]])
def test_usage_errors_are_one_line_exit_2(tmp_path: Path, args: list[str]) -> None:
    r = run(tmp_path / "s.db", *args)
    assert r.code == 2
    assert len(r.err.strip().splitlines()) == 1 and r.err.startswith("virtfleet: error: ")


def test_bad_db_and_no_args(tmp_path: Path) -> None:
    r = run(tmp_path / "no" / "such" / "dir.db", "host", "list")
    assert r.code == 2 and "db" in r.err
    r = run("mysql://x/y", "host", "list")
    assert r.code == 2 and "sqlite or postgresql" in r.err
