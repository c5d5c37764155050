"""`virtfleet plan`: the chapter's figures, capacity arithmetic, headroom on test-driver hosts,
and bad input, all through the real command in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from virtfleet.placement.capacity import (
    Hardware,
    PlanPolicy,
    Workload,
    plan_capacity,
    reference,
    swap_gib,
)

from .cli import Result
from .nodes import node_uri, refused_port

# `plan` through the real entry point: main.main() handles errors and exit codes exactly as for
# every other command.
_RUN_PLAN = "from virtfleet.cli import main\nmain.main()\n"


def plan(db: Path, *args: str) -> Result:
    env = {**os.environ, "VIRTFLEET_DB": str(db)}
    env.pop("COLUMNS", None)
    p = subprocess.run([sys.executable, "-c", _RUN_PLAN, "plan", *args], env=env,
                       capture_output=True, text=True, timeout=120, check=False)
    return Result(p.returncode, p.stdout, p.stderr)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


# ------------------------------------------------------------------------------ reference


def test_reference_figures_are_the_chapters(db: Path) -> None:
    r = plan(db, "reference", "--json")
    assert r.code == 0, r.err
    got: dict[str, Any] = r.json()
    assert got == reference()
    assert got["sites"] == ["oregon", "texas", "virginia"]
    assert got["hypervisor"] == {"sockets": 2, "cores_per_socket": 10, "threads_per_core": 2,
                                 "vcpus": 40, "dimms": 12, "dimm_gb": 32, "memory_gb": 384}
    assert (got["vms_per_hypervisor"], got["vm_vcpus_per_hypervisor"],
            got["vm_memory_per_hypervisor_gb"]) == (10, 40, 320)
    assert (got["hypervisors_per_pod"], got["pods_per_site"], got["hypervisors_per_site"],
            got["hypervisors_total"]) == (100, 5, 500, 1500)
    assert (got["vms_per_site"], got["vms_total"]) == (5000, 15000)
    assert got["filer_clusters_per_site"] == 5
    vm = got["vm"]
    assert (vm["apache_children"], vm["apache_child_mb"], vm["apache_gb"], vm["os_gb"],
            vm["total_gb"]) == (1200, 20, 24, 8, 32)
    assert got["swap_table"] == [
        {"ram": "<= 2 GB", "swap": "2x RAM"}, {"ram": "> 2 GB - 8 GB", "swap": "= RAM"},
        {"ram": "> 8 GB - 64 GB", "swap": "at least 4 GB"},
        {"ram": "> 64 GB", "swap": "at least 4 GB"}]


def test_reference_text(db: Path) -> None:
    r = plan(db, "reference")
    assert r.code == 0, r.err
    for line in ("2 x 10-core/20-thread = 40 vCPUs", "10 x 4 vCPUs = 40 vCPUs",
                 "10 x 32 GB = 320 GB", "-> 12 x 32 GB DIMMs = 384 GB",
                 "5 pods x 100 hypervisors = 500 hypervisors per site, 1500 in all",
                 "1000 per pod, 5000 per site, 15000 in all",
                 "1200 children x 20 MB = 24 GB + 8 GB OS = 32 GB", "RHEL swap table",
                 "> 8 GB - 64 GB   at least 4 GB"):
        assert line in r.out


@pytest.mark.parametrize(("ram", "rule", "swap"), [
    (1, "2x RAM", 2), (2, "2x RAM", 4), (4, "= RAM", 4), (8, "= RAM", 8),
    (32, "at least 4 GB", 4), (64, "at least 4 GB", 4), (256, "at least 4 GB", 4)])
def test_swap_rule(ram: int, rule: str, swap: float) -> None:
    assert swap_gib(ram) == (rule, swap)


# ------------------------------------------------------------------------------ capacity


def test_capacity_with_n_plus_one_and_growth() -> None:
    p = plan_capacity(Workload(vms=15_000, vcpus=4, memory_gib=32, disk_gib=100,
                               growth_pct=10),
                      Hardware(sockets=2, cores=10, threads=2, dimm_slots=24, dimm_gib=32),
                      PlanPolicy(sites=3, pod_size=100, spares_per_pod=1))
    assert p.total_vms == 16_500 and p.vms_per_site == 5_500
    assert p.vms_per_host == 10 and p.runs_out_first == "cpu"
    assert p.active_hosts_per_site == 550
    assert p.pods_per_site == 6  # 550 active / 99 usable per pod
    assert p.hosts_per_pod == 93  # ceil(550 / 6) = 92 active + 1 spare
    assert p.hosts_per_site == 558 and p.hosts_total == 1674
    assert p.filer_clusters_total == 18 and p.filer_gib_per_pod == 917 * 100


def test_capacity_memory_bound_and_cpu_overcommit() -> None:
    p = plan_capacity(Workload(vms=100, vcpus=2, memory_gib=64),
                      Hardware(sockets=2, cores=8, threads=2, dimm_slots=8, dimm_gib=32),
                      PlanPolicy(cpu_ratio=2.0, reserve_gib=16, spares_per_pod=0))
    assert (p.host_vcpus, p.vms_per_host_by_cpu, p.vms_per_host_by_memory) == (64, 32, 3)
    assert p.runs_out_first == "memory" and p.vms_per_host == 3
    assert (p.dimms, p.host_memory_gib) == (8, 256)  # 192 + 16 = 208 -> 7 -> 8 (2 sockets)
    assert p.active_hosts_per_site == 34


def test_capacity_cli_json(db: Path) -> None:
    r = plan(db, "capacity", "--vms", "1000", "--spares-per-pod", "1", "--pod-size", "20",
             "--json")
    assert r.code == 0, r.err
    got = r.json()
    assert (got["vms_per_host"], got["active_hosts_per_site"], got["pods_per_site"],
            got["hosts_per_pod"]) == (10, 100, 6, 18)


@pytest.mark.parametrize(("args", "message"), [
    (["capacity", "--vms", "0"], "--vms: must be greater than 0"),
    (["capacity", "--vcpus", "-4"], "--vcpus: must be greater than 0"),
    (["capacity", "--memory-gib", "0"], "--memory-gib: must be greater than 0"),
    (["capacity", "--memory-ratio", "1.5"], "--memory-ratio: 1.5 overcommits memory; pass "
     "--allow-memory-overcommit to accept it"),
    (["capacity", "--vcpus", "48"], "--vcpus: one VM of 48 vCPUs"),
    (["capacity", "--spares-per-pod", "5", "--pod-size", "5"], "--spares-per-pod: 5 must be"),
    (["headroom", "--vcpus", "0"], "--vcpus: must be greater than 0"),
    (["headroom", "--memory-mib", "-1"], "--memory-mib: must be greater than 0"),
    (["headroom", "--memory-ratio", "2"], "--memory-ratio: ratio 2.0 overcommits memory; pass "
     "--allow-memory-overcommit to accept it"),
    (["place", "web", "--count", "0"], "--count: must be greater than 0"),
    (["place", "web;x"], "NAME: 'web;x' is not a valid name"),
    # typer's own conversion (pydantic too) words a bad value as virtfleet does
    (["capacity", "--vms", "ten"], "--vms: must be a whole number (see"),
    (["capacity", "--memory-ratio", "lots"], "--memory-ratio: must be a number (see"),
    (["place", "web", "--affinity", "host", "--anti-affinity", "host", "--count", "2"],
     "--anti-affinity: host anti-affinity contradicts host affinity"),
])
def test_bad_input_is_one_line_naming_the_field(db: Path, args: list[str], message: str) -> None:
    r = plan(db, *args)
    assert r.code == 2, (r.out, r.err)
    assert r.err.count("\n") == 1 and message in r.err, r.err
    assert "Traceback" not in r.err and "Input should" not in r.err


def test_overcommit_in_a_policy_file_names_both_ways_to_allow_it(db: Path, tmp_path: Path
                                                                  ) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("groups:\n  web:\n    memory: 2\n")
    r = plan(db, "headroom", "--policy", str(policy))
    assert r.code == 2 and r.err == (
        "virtfleet: error: --policy groups.web.memory: ratio 2.0 overcommits memory; pass "
        "--allow-memory-overcommit (or allow_memory_overcommit: true in the --policy file) to "
        "accept it\n"), r.err


def test_memory_overcommit_is_accepted_with_the_flag(db: Path) -> None:
    r = plan(db, "capacity", "--memory-ratio", "1.5", "--allow-memory-overcommit", "--json")
    assert r.code == 0, r.err
    assert r.json()["vms_per_host_by_memory"] == 35  # (768 - 16) * 1.5 // 32


# ------------------------------------------------------------------------------ live fleet


def live_fleet(tmp_path: Path, db: Path, *, dead: bool = False) -> None:
    extra = [{"name": "dead.or", "uri": f"qemu+tcp://127.0.0.1:{refused_port()}/system",
              "groups": ["web"]}] if dead else []
    fleet = {"sites": [{"name": "oregon", "pods": [
        {"name": "or-pod1", "insecure_transport": dead, "hypervisors": [
            {"name": "hv1.or", "uri": node_uri(tmp_path, "empty.xml", "hv1.xml"),
             "groups": ["web"]},
            {"name": "hv2.or", "uri": node_uri(tmp_path, "empty.xml", "hv2.xml"),
             "groups": ["web"]},
            *extra]},
        {"name": "or-pod2", "hypervisors": [
            {"name": "hv3.or", "uri": node_uri(tmp_path, "two-vms.xml", "hv3.xml")},
            {"name": "hv4.or", "uri": node_uri(tmp_path, "empty.xml", "hv4.xml")}]},
    ]}]}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(fleet))
    env = {**os.environ, "VIRTFLEET_DB": str(db)}
    subprocess.run([sys.executable, "-m", "virtfleet.cli.main", "apply", "-f", str(path)],
                   env=env, check=True, capture_output=True)


def test_headroom_on_test_driver_hosts(tmp_path: Path, db: Path) -> None:
    live_fleet(tmp_path, db)
    r = plan(db, "headroom", "--vcpus", "1", "--memory-mib", "1024", "--json")
    assert r.code == 0, r.err
    got = r.json()
    fits = {h["host"]: (h["fits"], h["bound_by"]) for h in got["hosts"]}
    # empty: 40 threads, (384 - 16) GiB; two-vms: 16 threads with 7 vCPUs defined (every
    # defined VM counts), 64 GiB less its reserve (an eighth: 8 GiB) less 42 GiB = 14 GiB.
    assert fits == {"hv1.or": (40, "cpu"), "hv2.or": (40, "cpu"), "hv3.or": (9, "cpu"),
                    "hv4.or": (40, "cpu")}
    assert got["fits"] == 129
    loss = {(c["kind"], c["lost"]): c for c in got["loss"]}
    assert loss[("host", "hv3.or")]["displaced"] == 3 and loss[("host", "hv3.or")]["ok"]
    # Losing pod 2: its ungrouped VMs cannot go to pod 1, whose hosts are all in group web.
    assert loss[("pod", "or-pod2")]["placed"] == 0 and not loss[("pod", "or-pod2")]["ok"]
    assert loss[("pod", "or-pod2")]["runs_out_first"] == "no hypervisor of its group"
    assert loss[("host", "hv2.or")]["runs_out_first"] == "nothing displaced"
    assert loss[("host", "hv2.or")]["ok"]

    r = plan(db, "headroom", "--group", "web", "--json")
    assert r.code == 0, r.err
    assert r.json()["fits"] == 20  # 2 x 10 reference VMs
    r = plan(db, "headroom", "--group", "nope")
    assert r.code == 2 and "--group: unknown group 'nope'" in r.err
    r = plan(db, "headroom")
    assert r.code == 0 and "30 more VMs of 4 vCPUs/32768 MiB fit" in r.out  # every host
    assert "If one is lost" in r.out


def test_dead_host_is_named_excluded_and_exit_1(tmp_path: Path, db: Path) -> None:
    live_fleet(tmp_path, db, dead=True)
    r = plan(db, "headroom", "--group", "web", "--json")
    assert r.code == 1
    assert "dead.or" in r.err and "1 of 5 host(s) failed; the results are from the other 4 only" \
        in r.err
    assert {h["host"] for h in r.json()["hosts"]} == {"hv1.or", "hv2.or"}


def test_place_explain_and_claim(tmp_path: Path, db: Path) -> None:
    live_fleet(tmp_path, db)
    r = plan(db, "place", "app", "--group", "web", "--count", "2", "--anti-affinity", "host",
             "--explain", "--claim", "--json")
    assert r.code == 0, r.err
    got = r.json()
    assert sorted(p["host"] for p in got["placements"]) == ["hv1.or", "hv2.or"]
    removed = {f["filter"]: {h["host"] for h in f["hosts"]} for f in got["explain"]["filters"]}
    assert removed["GroupIsolationFilter"] == {"hv3.or", "hv4.or"}
    # The claims count: 9 more reference VMs per web host, not 10.
    r = plan(db, "headroom", "--group", "web", "--json")
    assert r.json()["fits"] == 18
    r = plan(db, "place", "big", "--group", "web", "--count", "3", "--anti-affinity", "host")
    assert r.code == 4
    assert "big: anti-affinity by host: placed 2 of 3" in r.err
    r = plan(db, "place", "x", "--count", "2", "--pod", "or-pod1", "--anti-affinity", "pod")
    assert r.code == 2 and "--anti-affinity: pod anti-affinity of 2 VMs" in r.err
    text = plan(db, "place", "solo", "--explain")
    assert text.code == 0 and "GroupIsolationFilter: removed 2" in text.out
    assert json.loads(plan(db, "place", "solo", "--json").out)["placements"][0]["host"] in (
        "hv3.or", "hv4.or")
