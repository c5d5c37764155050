"""Placement claims in the store, on SQLite and PostgreSQL: atomic, never overbooked."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from virtfleet.errors import Conflict, InvalidInput, NotFound
from virtfleet.inventory.claims import ClaimRequest
from virtfleet.inventory.fleetfile import parse_fleet
from virtfleet.inventory.records import DomainRecord
from virtfleet.inventory.store import Store

T0 = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
FLEET = {"sites": [{"name": "oregon", "pods": [{"name": "or-pod1", "hypervisors": [
    {"name": "hv1", "uri": "qemu+ssh://hv1.example.com/system"},
    {"name": "hv2", "uri": "qemu+ssh://hv2.example.com/system"},
]}]}]}


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    s.apply(parse_fleet(FLEET))
    try:
        yield s
    finally:
        s.close()


def want(vm: str, host: str = "hv1", vcpus: int = 4, mem: int = 32768,
         cpu_limit: int = 40, mem_limit: int = 10 * 32768) -> ClaimRequest:
    return ClaimRequest(host=host, vm=vm, vcpus=vcpus, memory_mib=mem, vcpu_limit=cpu_limit,
                        memory_limit_mib=mem_limit)


def test_claim_list_release(store: Store) -> None:
    got = store.claim_placements([want("a"), want("b", "hv2")], now=T0)
    assert [(c.host, c.vm) for c in got] == [("hv1", "a"), ("hv2", "b")]
    listed = store.placement_claims(now=T0)
    assert [(c.host, c.vm, c.vcpus, c.memory_mib) for c in listed] == [
        ("hv1", "a", 4, 32768), ("hv2", "b", 4, 32768)]
    assert listed[0].expires_at == T0 + timedelta(minutes=15)
    assert [c.vm for c in store.placement_claims(host="hv2", now=T0)] == ["b"]
    assert store.release_placement("hv1", "a") is True
    assert store.release_placement("hv1", "a") is False
    assert [c.vm for c in store.placement_claims(now=T0)] == ["b"]
    with pytest.raises(NotFound):
        store.placement_claims(host="nope")


def test_claims_stop_at_the_limit_and_a_batch_is_all_or_nothing(store: Store) -> None:
    store.claim_placements([want(f"vm{i}") for i in range(9)], now=T0)
    full = r"hv1: vcpus would be overbooked \(40 used or claimed \+ 4 > limit 40\)"
    with pytest.raises(Conflict, match=full):
        store.claim_placements([want("vm9"), want("vm10")], now=T0)
    assert len(store.placement_claims(now=T0)) == 9  # nothing of the failed batch was kept
    store.claim_placements([want("vm9")], now=T0)
    with pytest.raises(Conflict, match="memory would be overbooked"):
        store.claim_placements([want("big", vcpus=1, mem=1, cpu_limit=100)], now=T0)


def test_observed_vms_count_once_and_expired_claims_not_at_all(store: Store) -> None:
    doms = [DomainRecord(name=f"seen{i}", uuid=f"00000000-0000-4000-8000-{i:012d}",
                         state="running", id=i + 1, vcpus=4, memory_mib=32768) for i in range(8)]
    store.replace_host_domains("hv1", doms, T0)
    # seen0 is observed and claimed: it counts once, so 8 + new1 + new2 = 10 VMs fit.
    store.claim_placements([want("seen0"), want("new1")], now=T0)
    store.claim_placements([want("new2")], now=T0)
    with pytest.raises(Conflict, match="40 used or claimed"):
        store.claim_placements([want("new3")], now=T0)
    later = T0 + timedelta(minutes=16)
    assert store.placement_claims(now=later) == []
    # Expired claims free their room: 8 observed + 2 new claims.
    store.claim_placements([want("new2"), want("new1")], now=later)
    with pytest.raises(Conflict):
        store.claim_placements([want("new3")], now=later)


def test_duplicate_claim_and_bad_input(store: Store) -> None:
    store.claim_placements([want("a")], now=T0)
    with pytest.raises(Conflict):
        store.claim_placements([want("a")], now=T0)
    with pytest.raises(InvalidInput, match="vcpus"):
        store.claim_placements([want("b", vcpus=0)], now=T0)
    with pytest.raises(InvalidInput, match="vm"):
        store.claim_placements([want("bad;name")], now=T0)
    with pytest.raises(NotFound):
        store.claim_placements([want("c", host="hv9")], now=T0)


def test_concurrent_claims_never_overbook(store_url: str, store: Store) -> None:
    # Eight writers, each with its own engine, race for one host that has room for ten VMs.
    won: list[str] = []
    lost: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        with Store(store_url) as s:
            start.wait()
            for k in range(3):
                name = f"w{n}-{k}"
                try:
                    s.claim_placements([want(name)], now=T0)
                except Conflict:
                    with lock:
                        lost.append(name)
                else:
                    with lock:
                        won.append(name)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(won) == 10 and len(lost) == 14
    assert sorted(c.vm for c in store.placement_claims(now=T0)) == sorted(won)


def test_a_settled_claim_becomes_the_vm_and_forget_frees_both(store: Store) -> None:
    """Defined: the claim becomes an observation in one transaction, so the room stays
    counted and nothing outlives the VM; undefined: the store forgets it, room and name."""
    store.claim_placements([want("a")], now=T0)
    a = DomainRecord(name="a", uuid="00000000-0000-4000-8000-00000000000a", state="shut off",
                     id=None, vcpus=4, memory_mib=32768)
    assert store.settle_placement("hv1", a, observed_at=T0) is True
    assert store.placement_claims(now=T0) == []
    [seen] = store.fleet_vms(name="a")
    assert (seen.host, seen.domain.uuid, seen.observed_at) == ("hv1", a.uuid, T0)
    # Its room still counts: a and nine more VMs of 4 vCPUs fill the 40.
    store.claim_placements([want(f"vm{i}") for i in range(9)], now=T0)
    with pytest.raises(Conflict, match="40 used or claimed"):
        store.claim_placements([want("vm9")], now=T0)
    store.forget_vm("hv1", "a", a.uuid)
    assert store.fleet_vms(name="a") == []
    store.claim_placements([want("vm9")], now=T0)  # a's room is free again
    # forget also drops a claim still held under that name there, and nothing elsewhere
    store.claim_placements([want("b", "hv2")], now=T0)
    store.forget_vm("hv1", "b")
    assert [c.vm for c in store.placement_claims(host="hv2", now=T0)] == ["b"]
    store.forget_vm("hv2", "b")
    assert store.placement_claims(host="hv2", now=T0) == []
    assert store.settle_placement("hv2", a, observed_at=T0) is False  # there was no claim
    with pytest.raises(NotFound):
        store.forget_vm("hv9", "a")
