"""The scheduler: filters, weighers, constraints, and properties that must always hold."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from virtfleet.errors import Conflict, InvalidInput
from virtfleet.placement.headroom import host_fits, loss_cases
from virtfleet.placement.models import HostState, PlacementRequest, Scope, VMShape, parse
from virtfleet.placement.policy import Policy, Ratios
from virtfleet.placement.scheduler import Scheduler

GiB = 1024
NO_RESERVE = Policy(reserve_memory_mib=0)


def hv(name: str, pod: str = "p1", site: str = "s1", cpus: int = 40, mem_gib: int = 384,
       groups: tuple[str, ...] = (), **kw: object) -> HostState:
    return HostState(name, site=site, pod=pod, cpus=cpus, memory_mib=mem_gib * GiB,
                     groups=groups, **kw)  # type: ignore[arg-type]


def req(name: str = "vm", vcpus: int = 4, mem_gib: int = 32, **kw: object) -> PlacementRequest:
    return PlacementRequest(name=name, shape=VMShape(vcpus=vcpus, memory_mib=mem_gib * GiB),
                            **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ examples


def test_reference_host_takes_ten_reference_vms_and_no_more() -> None:
    s = Scheduler([hv("hv1")])  # default policy: ratios 1.0, 16 GiB reserve
    placed = s.place(req(count=10))
    assert [h for _, h in placed.vms] == ["hv1"] * 10
    with pytest.raises(Conflict, match=r"vm: capacity: placed 0 of 1 .*CoreFilter removed 1"):
        s.place(req())


def test_memory_reserve_and_ratios_apply_per_group() -> None:
    pol = Policy(reserve_memory_mib=64 * GiB, groups={"batch": Ratios(cpu=4.0)})
    s = Scheduler([hv("a", groups=("batch",)), hv("b")], pol)
    # a: 160 vCPUs under 4.0, but memory (384 - 64) / 32 = 10 VMs binds.
    assert len(s.place(req(count=10, group="batch")).vms) == 10
    with pytest.raises(Conflict, match="RamFilter removed 1"):
        s.place(req(group="batch"))
    assert len(s.place(req(count=10)).vms) == 10  # b: 40 vCPUs at 1.0 binds


def test_memory_overcommit_needs_the_flag() -> None:
    with pytest.raises(InvalidInput, match=r"default\.memory: ratio 1.5 overcommits") as exc:
        parse(Policy, {"default": {"memory": 1.5}})
    # The field that allows it, in the request's own words (the CLI words it as its option).
    assert "`allow_memory_overcommit`" in exc.value.rule
    with pytest.raises(InvalidInput, match=r"groups\.db\.memory"):
        parse(Policy, {"groups": {"db": {"memory": 2}}})
    pol = parse(Policy, {"default": {"memory": 1.5}, "allow_memory_overcommit": True})
    assert Scheduler([hv("a", cpus=400)], pol).place(req(count=17)).vms


@pytest.mark.parametrize(("data", "field"), [
    ({"name": "x", "shape": {"vcpus": 0, "memory_mib": 1}}, "shape.vcpus"),
    ({"name": "x", "shape": {"vcpus": 1, "memory_mib": -5}}, "shape.memory_mib"),
    ({"name": "x", "shape": {"vcpus": 1, "memory_mib": 1}, "count": 0}, "count"),
    ({"name": "x;rm", "shape": {"vcpus": 1, "memory_mib": 1}}, "name"),
    ({"name": "x", "shape": {"vcpus": 1, "memory_mib": 1}, "anti_affinity": "rack"},
     "anti_affinity"),
    ({"name": "x", "shape": {"vcpus": 1, "memory_mib": 1}, "colour": "red"}, "colour"),
])
def test_bad_requests_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse(PlacementRequest, data)
    assert exc.value.field == field


def test_group_isolation_both_ways() -> None:
    s = Scheduler([hv("web1", groups=("web",)), hv("db1", groups=("db",)), hv("free1")])
    assert {h for _, h in s.place(req(count=5, group="web")).vms} == {"web1"}
    assert {h for _, h in s.place(req(count=5)).vms} == {"free1"}  # ungrouped: ungrouped hosts
    with pytest.raises(InvalidInput, match="group: unknown group 'mail'"):
        s.place(req(group="mail"))


def test_unknown_or_contradictory_constraints_are_invalid_input() -> None:
    s = Scheduler([hv("a", pod="p1"), hv("b", pod="p2", site="s2")])
    for kw, match in [
        ({"site": "nowhere"}, "site: unknown site"),
        ({"pod": "p9"}, "pod: unknown pod"),
        ({"pod": "p2", "site": "s1"}, "pod: pod 'p2' is in site 's2'"),
        ({"count": 2, "pod": "p1", "anti_affinity": Scope.pod}, "anti_affinity: pod anti-aff"),
        ({"count": 2, "affinity": Scope.host, "anti_affinity": Scope.host},
         "anti_affinity: host anti-affinity contradicts host affinity"),
        ({"count": 2, "affinity": Scope.host, "anti_affinity": Scope.pod},
         "contradicts host affinity"),
    ]:
        with pytest.raises(InvalidInput, match=match):
            s.place(req(**kw))


def test_anti_affinity_and_affinity() -> None:
    hosts = [hv(f"h{p}{i}", pod=f"p{p}") for p in range(3) for i in range(2)]
    s = Scheduler(hosts)
    by_host = s.place(req("a", count=6, anti_affinity=Scope.host)).vms
    assert len({h for _, h in by_host}) == 6
    by_pod = s.place(req("b", count=3, anti_affinity=Scope.pod)).vms
    assert len({h[:2] for _, h in by_pod}) == 3
    with pytest.raises(Conflict, match="b2: anti-affinity by pod: placed 3 of 4"):
        s.place(req("b2", count=4, anti_affinity=Scope.pod))
    same = s.place(req("c", count=5, affinity=Scope.host)).vms
    assert len({h for _, h in same}) == 1
    pod = s.place(req("d", count=8, affinity=Scope.pod)).vms
    assert len({h[:2] for _, h in pod}) == 1
    with pytest.raises(Conflict, match="affinity by host"):
        s.place(req("e", count=11, affinity=Scope.host))


def test_a_failed_request_gives_its_room_back() -> None:
    s = Scheduler([hv("a"), hv("b")])
    with pytest.raises(Conflict):
        s.place(req(count=21))
    assert [h.used_vcpus for h in s.hosts] == [0, 0]
    assert len(s.place(req(count=20)).vms) == 20


def test_spread_and_pack() -> None:
    hosts = [hv("a"), hv("b"), hv("c")]
    spread = Scheduler(hosts).place(req(count=3)).vms
    assert sorted(h for _, h in spread) == ["a", "b", "c"]
    packed = Scheduler(hosts, Policy(weigh="pack")).place(req(count=3)).vms  # type: ignore
    assert len({h for _, h in packed}) == 1
    assert [h.used_vcpus for h in hosts] == [0, 0, 0]  # the caller's hosts are not touched


def test_maintenance_and_unreachable_hosts_are_skipped_and_explained() -> None:
    s = Scheduler([hv("m", maintenance=True), hv("u", unreachable=True), hv("ok"),
                   hv("web", groups=("web",)), hv("full", used_vcpus=40), hv("far", pod="p2")])
    assert {h for _, h in s.place(req(count=2, pod="p1")).vms} == {"ok"}
    ex = s.explain(req(pod="p1"))
    removed = {name: dict(hs) for name, hs in ex.removed}
    assert removed["AvailabilityFilter"] == {"m": "in maintenance", "u": "unreachable"}
    assert removed["GroupIsolationFilter"] == {"web": "dedicated to group(s) web"}
    assert removed["PodFilter"] == {"far": "in pod p2, not p1"}
    assert removed["CoreFilter"] == {"full": "0 vCPUs free under its ratio, needs 4"}
    assert ex.passed == 1
    assert "AvailabilityFilter: removed 2" in ex.text()
    assert ex.as_json()["passed"] == 1


def test_headroom_and_loss() -> None:
    hosts = [hv("a", used_vcpus=36, used_memory_mib=9 * 32 * GiB), hv("b"), hv("c", pod="p2")]
    fits = {f.host: f.fits for f in host_fits(hosts, VMShape(vcpus=4, memory_mib=32 * GiB),
                                                Policy())}
    assert fits == {"a": 1, "b": 10, "c": 10}
    shapes = {"a": [(f"v{i}", VMShape(vcpus=4, memory_mib=32 * GiB)) for i in range(9)]}
    cases = {(c.kind, c.lost): c for c in loss_cases(hosts, shapes, Policy())}
    assert cases[("host", "a")].ok and cases[("host", "a")].spare_after == 1
    assert cases[("pod", "p1")].placed == 9 and cases[("pod", "p1")].spare_after == 1


def test_loss_names_the_resource_that_runs_out() -> None:
    big = VMShape(vcpus=2, memory_mib=100 * GiB)
    hosts = [hv("a", used_vcpus=6, used_memory_mib=300 * GiB), hv("b")]
    shapes = {"a": [(f"v{i}", big) for i in range(3)]}
    case = next(c for c in loss_cases(hosts, shapes, Policy()) if c.kind == "host")
    assert (case.lost, case.displaced, case.placed, case.runs_out_first) == ("a", 3, 3,
                                                                             "memory")


def test_fifteen_thousand_reference_vms_fill_the_reference_fleet() -> None:
    hosts = [hv(f"hv{i}", pod=f"p{i // 100}", site=f"s{i // 500}", groups=(f"app{i % 24}",))
             for i in range(1500)]
    s = Scheduler(hosts, Policy(weigh="pack"))  # type: ignore[arg-type]
    per_group = Counter(h.groups[0] for h in hosts)
    for g, n in per_group.items():
        s.place(req(g, count=n * 10, group=g))
    assert all(h.used_vcpus == 40 for h in s.hosts)


# ------------------------------------------------------------------------------ properties

shapes = st.builds(VMShape, vcpus=st.integers(1, 16), memory_mib=st.integers(256, 64 * GiB))
GROUPS = ["web", "db", None]


@st.composite
def fleets(draw: st.DrawFn) -> list[HostState]:
    n = draw(st.integers(1, 12))
    return [HostState(f"h{i}", site=f"s{i % 2}", pod=f"p{i % 4}",
                      cpus=draw(st.integers(1, 64)), memory_mib=draw(st.integers(1, 512)) * GiB,
                      groups=draw(st.sampled_from([(), ("web",), ("db",), ("web", "db")])),
                      maintenance=draw(st.booleans()) and draw(st.booleans()))
            for i in range(n)]


@st.composite
def requests(draw: st.DrawFn) -> list[PlacementRequest]:
    out = []
    for k in range(draw(st.integers(1, 8))):
        out.append(PlacementRequest(
            name=f"r{k}", shape=draw(shapes), count=draw(st.integers(1, 6)),
            group=draw(st.sampled_from(GROUPS)),
            anti_affinity=draw(st.sampled_from([None, Scope.host, Scope.pod])),
            affinity=draw(st.sampled_from([None, None, Scope.pod]))))
    return out


policies = st.builds(
    Policy, default=st.builds(Ratios, cpu=st.sampled_from([1.0, 2.0, 4.0]),
                              memory=st.sampled_from([0.8, 1.0, 1.5])),
    allow_memory_overcommit=st.just(True),
    reserve_memory_mib=st.integers(0, 32 * GiB), weigh=st.sampled_from(["spread", "pack"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets(), requests(), policies)
def test_properties_capacity_isolation_anti_affinity(hosts: list[HostState],
                                                     reqs: list[PlacementRequest],
                                                     policy: Policy) -> None:
    s = Scheduler(hosts, policy, groups=["web", "db"])
    by_name = {h.name: h for h in hosts}
    load: Counter[str] = Counter()
    mem: Counter[str] = Counter()
    for r in reqs:
        try:
            placed = s.place(r)
        except Conflict as exc:
            # A failure names the rule that ran out, and the request.
            assert str(exc).startswith(f"{r.name}: ")
            assert any(w in str(exc) for w in ("capacity", "anti-affinity by", "affinity by"))
            continue
        except InvalidInput as exc:
            assert exc.field in ("anti_affinity",)  # only contradictions are refused here
            continue
        assert len(placed.vms) == r.count
        used = [by_name[h] for _, h in placed.vms]
        for h in used:
            assert not h.maintenance
            # Isolation: a group's VMs only on its hosts; ungrouped VMs only on ungrouped hosts.
            assert (r.group in h.groups) if r.group else not h.groups
            load[h.name] += r.shape.vcpus
            mem[h.name] += r.shape.memory_mib
        if r.anti_affinity == Scope.host:
            assert len({h.name for h in used}) == r.count
        if r.anti_affinity == Scope.pod:
            assert len({h.pod for h in used}) == r.count
        if r.affinity == Scope.pod:
            assert len({h.pod for h in used}) == 1
    for name, cpus in load.items():
        h = by_name[name]
        cpu_limit, mem_limit = policy.limits(h)
        assert cpus <= cpu_limit
        assert mem[name] <= mem_limit
