"""The libvirt layer on libvirt's test driver, with per-test node files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from virtfleet.config import Timeouts
from virtfleet.errors import Conflict, HostUnavailable, HypervisorError, NotFound, OperationTimeout
from virtfleet.fleet.queries import (
    ask_fleet,
    check_of,
    domains_of,
    fleet_vms,
    node_info_of,
    version_of,
)
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


def test_templates_are_told_apart_only_when_asked_and_once_per_domain(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """with-template.xml: "tpl" is sealed (role=template in virtfleet's metadata); "old",
    "plain" and "plain2" are VMs, all four shut off."""
    import virtfleet.virt.host as host_module

    asked: list[str] = []
    read = host_module._read_template

    def counting(dom: Any) -> bool:  # the real read, counted
        asked.append(str(dom.name()))
        return read(dom)

    monkeypatch.setattr(host_module, "_read_template", counting)
    with Host.open(node_uri(tmp_path, "with-template.xml")) as h:
        assert {d.template for d in h.list_domains()} == {None}  # a cold list does not ask
        assert asked == []
        seen = {d.name: d.template for d in h.list_domains(roles=True)}
        assert seen == {"tpl": True, "old": False, "plain": False, "plain2": False}
        assert sorted(asked) == ["old", "plain", "plain2", "tpl"]
        # once per domain on a connection: a template is made by defining a new domain
        # (template create), never by changing one
        assert {d.name: d.template for d in h.list_domains(roles=True)} == seen
        tpl = next(d for d in h.list_domains() if d.name == "tpl")
        found = h.domain_by_uuid(tpl.uuid)
        assert found is not None and found.template is True
        assert len(asked) == 4
    with Host.open(node_uri(tmp_path, "two-vms.xml")) as h:
        # running and paused domains are never asked: a template never runs
        assert {d.name: d.template for d in h.list_domains(roles=True)} == {
            "vm1.example.com": False, "vm2.example.com": False, "centos.template": False}
    assert asked.count("centos.template") == 1 and len(asked) == 5


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
    # The deadline's own error, not the kernel's TCP timeout minutes later.
    with silent_server() as port, pytest.raises(OperationTimeout, match="within 0.5s"):
        Host.open(f"qemu+tcp://127.0.0.1:{port}/system", Timeouts(connect=0.5))


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
        results = fan_out(hosts, domains_of, pool, concurrency=2,
                          progress=lambda r: seen.append(r.host.name))
        pool.close()
    assert [r.host.name for r in results] == ["hv1", "dead", "hung", "hv2", "hv3"]
    assert sorted(seen) == sorted(h.name for h in hosts)
    by = {r.host.name: r for r in results}
    assert isinstance(by["dead"].error, HostUnavailable)
    assert isinstance(by["hung"].error, OperationTimeout)
    assert by["hv1"].ok and len(by["hv1"].value or []) == 3
    assert by["hv3"].ok and by["hv3"].value == []
    # the hung host got the 1 s call deadline, not the 30 s connect timeout
    assert "within 1s" in str(by["hung"].error)
    vms = fleet_vms(results)
    assert len(vms) == 6 and {v.pod for v in vms} == {"or-pod1", "or-pod2"}


def test_hung_hosts_do_not_keep_their_workers_from_the_rest(tmp_path: Path) -> None:
    """fan_out runs `concurrency` workers: each one a hung host holds is replaced when the host
    is given up, so the hosts after them are still asked (none wrongly timed out)."""
    with silent_server() as port:
        hosts = [host(f"hung{i}", f"qemu+tcp://{where}:{port}/system")
                 for i, where in enumerate(("127.0.0.1", "localhost"))]
        hosts += [host(f"hv{i}", node_uri(tmp_path, "two-vms.xml", f"hv{i}.xml"))
                  for i in range(5)]
        pool = ConnectionPool(Timeouts(connect=30, call=0.5))
        results = fan_out(hosts, domains_of, pool, concurrency=2)
        pool.close()
    assert [r.host.name for r in results] == [h.name for h in hosts]
    assert [type(r.error).__name__ for r in results[:2]] == ["OperationTimeout"] * 2
    assert all(r.ok and len(r.value or []) == 3 for r in results[2:])


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


def test_a_bug_in_the_work_is_reported_for_that_host_not_as_a_timeout(tmp_path: Path) -> None:
    hosts = [host("hv1", node_uri(tmp_path, "empty.xml"))]

    def broken(_h: Host) -> None:
        raise ValueError("parser bug")

    [r] = fan_out(hosts, broken, ConnectionPool(), deadline=30)
    assert isinstance(r.error, HypervisorError) and "parser bug" in str(r.error)


def test_libvirt_errors_map_to_virtfleet_errors() -> None:
    import libvirt

    from virtfleet.virt.errors import map_error

    def err(code: int, domain: int = libvirt.VIR_FROM_NONE) -> libvirt.libvirtError:
        e = libvirt.libvirtError("boom")
        e.err = (code, domain, "boom", 2, None, None, None, 0, 0)
        return e

    assert isinstance(map_error(err(libvirt.VIR_ERR_NO_DOMAIN), "h"), NotFound)
    assert isinstance(map_error(err(libvirt.VIR_ERR_OPERATION_INVALID), "h"), Conflict)
    assert isinstance(map_error(err(libvirt.VIR_ERR_OPERATION_TIMEOUT), "h"), OperationTimeout)
    assert isinstance(map_error(err(libvirt.VIR_ERR_NO_CONNECT), "h"), HostUnavailable)
    assert isinstance(map_error(err(libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC), "h"),
                      HostUnavailable)
    other = map_error(err(libvirt.VIR_ERR_XML_ERROR), "h")
    assert type(other) is HypervisorError and str(other) == "h: boom"


def test_state_words_are_the_shared_virsh_words() -> None:
    from virtfleet.inventory.records import STATES
    from virtfleet.virt.host import STATE_WORDS

    assert set(STATE_WORDS.values()) == set(STATES)


def test_fan_out_of_a_one_shot_pool_reports_a_silent_host_as_a_connect_timeout(
        tmp_path: Path) -> None:
    """A one-shot pool opens in fan_out's own workers and fan_out watches the connect deadline:
    the silent host still gets the open's words, and the work never runs on it."""
    ran: list[str] = []

    def work(h: Host) -> list[str]:
        ran.append(h.label)
        return domains_of(h)

    with silent_server() as port:
        hosts = [host("hung", f"qemu+tcp://127.0.0.1:{port}/system"),
                 host("hv1", node_uri(tmp_path, "two-vms.xml"))]
        pool = ConnectionPool(Timeouts(connect=0.5, call=30), one_shot=True)
        results = fan_out(hosts, work, pool, concurrency=2)
        pool.close()
    assert isinstance(results[0].error, OperationTimeout)
    assert str(results[0].error) == "hung: no answer within 0.5s while connecting"
    assert results[1].ok and ran == ["hv1"]
