"""The libvirt layer on libvirt's test driver, with per-test node files."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from virtfleet.config import Timeouts
from virtfleet.errors import HostUnavailable, NotFound, OperationTimeout
from virtfleet.queries import ask_fleet, check_of, domains_of, fleet_vms, node_info_of, version_of
from virtfleet.virt.fanout import ConnectionPool, fan_out
from virtfleet.virt.host import Host

from .nodes import host, node_uri, refused_port, silent_server


def test_list_domains_reads_states_sizes_in_virsh_words(tmp_path: Path) -> None:
    with Host.open(node_uri(tmp_path, "two-vms.xml")) as h:
        doms = {d.name: d for d in h.list_domains()}
    assert doms["vm1.example.com"].state == "running"
    assert doms["vm1.example.com"].vcpus == 4
    assert doms["vm1.example.com"].memory_mib == 32 * 1024
    assert doms["vm2.example.com"].state == "paused"
    assert doms["centos.template"].state == "shut off"
    assert doms["centos.template"].id is None
    assert doms["vm1.example.com"].id is not None
    # running first by id, then inactive by name, as virsh list --all orders them
    with Host.open(node_uri(tmp_path, "two-vms.xml", "again.xml")) as h:
        assert [d.name for d in h.list_domains()][-1] == "centos.template"


def test_node_info_matches_the_fixture(tmp_path: Path) -> None:
    with Host.open(node_uri(tmp_path, "two-vms.xml")) as h:
        n = node_info_of(h)
    assert (n.cpus, n.mhz, n.numa_cells, n.sockets, n.cores_per_socket, n.threads_per_core) == (
        16, 3292, 2, 1, 4, 2)
    assert n.memory_kib == 64 * 1024 * 1024


def test_version_and_check_on_test_driver(tmp_path: Path) -> None:
    with Host.open(node_uri(tmp_path, "empty.xml")) as h:
        v = version_of(h)
        c = check_of(h)
    assert v["driver"] == "TEST"
    assert str(v["client_library"]).count(".") == 2
    assert c.reachable and c.virt_types == ("test",) and not c.kvm_usable


def test_lookup_of_missing_domain_is_not_found(tmp_path: Path) -> None:
    with Host.open(node_uri(tmp_path, "empty.xml")) as h, pytest.raises(NotFound):
        h.start_domain("nope")


def test_refused_connection_is_host_unavailable() -> None:
    with pytest.raises(HostUnavailable, match="Connection refused"):
        Host.open(f"qemu+tcp://127.0.0.1:{refused_port()}/system")


def test_open_of_a_silent_host_times_out_at_the_connect_deadline() -> None:
    with silent_server() as port:
        start = time.monotonic()
        with pytest.raises(OperationTimeout, match="within 0.5s"):
            Host.open(f"qemu+tcp://127.0.0.1:{port}/system", Timeouts(connect=0.5))
        assert time.monotonic() - start < 5


def test_fan_out_returns_every_host_and_names_each_failure(tmp_path: Path) -> None:
    with silent_server() as port:
        hosts = [
            host("hv1", node_uri(tmp_path, "two-vms.xml", "hv1.xml")),
            host("dead", f"qemu+tcp://127.0.0.1:{refused_port()}/system"),
            host("hung", f"qemu+tcp://127.0.0.1:{port}/system"),
            host("hv2", node_uri(tmp_path, "two-vms.xml", "hv2.xml"), pod="or-pod2"),
            host("hv3", node_uri(tmp_path, "empty.xml", "hv3.xml")),
        ]
        pool = ConnectionPool(Timeouts(connect=30, call=1.0))
        seen: list[str] = []
        start = time.monotonic()
        results = fan_out(hosts, domains_of, pool, concurrency=2,
                          progress=lambda r: seen.append(r.host.name))
        elapsed = time.monotonic() - start
        pool.close()
    assert [r.host.name for r in results] == ["hv1", "dead", "hung", "hv2", "hv3"]
    assert sorted(seen) == sorted(h.name for h in hosts)
    by = {r.host.name: r for r in results}
    assert isinstance(by["dead"].error, HostUnavailable)
    assert isinstance(by["hung"].error, OperationTimeout)
    assert by["hv1"].ok and len(by["hv1"].value or []) == 3
    assert by["hv3"].ok and by["hv3"].value == []
    # the hung host cost one deadline, not the connect timeout, and did not hold up the others
    assert elapsed < 10
    vms = fleet_vms(results)
    assert len(vms) == 6 and {v.pod for v in vms} == {"or-pod1", "or-pod2"}


def test_pool_reuses_connections_and_reopens_dead_ones(tmp_path: Path) -> None:
    rec = host("hv1", node_uri(tmp_path, "two-vms.xml"))
    pool = ConnectionPool()
    a = pool.get(rec)
    assert pool.get(rec) is a and pool.alive(rec)
    a.close()
    assert not pool.alive(rec)
    b = pool.get(rec)
    assert b is not a and b.alive
    pool.close()


def test_ask_fleet_over_many_simulated_hosts(tmp_path: Path) -> None:
    hosts = [host(f"hv{i}", node_uri(tmp_path, "two-vms.xml", f"hv{i}.xml")) for i in range(40)]
    results = ask_fleet(hosts, domains_of)
    assert all(r.ok for r in results)
    assert len(fleet_vms(results)) == 120
