"""The estate map's model (controller/ui/estate.py): each hypervisor's colour and its bars."""

from __future__ import annotations

from virtfleet.controller.ui.estate import build
from virtfleet.inventory.records import HostRecord

GIB = 1024 ** 3


def _h(name: str, pod: str = "p1", maintenance: bool = False) -> HostRecord:
    return HostRecord(name, f"test:///{name}.xml", "s1", pod, ("web",), maintenance)


def _vm(host: str, state: str, vcpus: int = 4, mib: int = 32 * 1024) -> dict[str, object]:
    return {"host": host, "name": f"vm-{host}-{state}", "state": state, "vcpus": vcpus,
            "memory_mib": mib}


def test_states_in_order_of_what_an_operator_must_know_first() -> None:
    hosts = [_h("ok1"), _h("down1"), _h("sus1"), _h("maint1", maintenance=True),
             _h("fenced1")]
    est = build(hosts, [], ["down1", "sus1", "maint1"], {},
                {"sus1": "suspect", "fenced1": "fenced", "ok1": "ok"})
    cells = {c.name: c.state for s in est.sites for p in s.pods for c in p.hosts}
    assert cells == {"ok1": "ok", "down1": "unreachable", "sus1": "suspect",
                     "maint1": "maintenance", "fenced1": "unreachable"}
    assert dict(est.by_state) == {"ok": 1, "unreachable": 2, "suspect": 1, "maintenance": 1}


def test_bars_count_running_vms_against_capacity() -> None:
    rows = [_vm("a", "running"), _vm("a", "paused"), _vm("a", "shut off")]
    est = build([_h("a"), _h("b", pod="p2")], rows, [], {"a": (40, 384 * GIB)}, {})
    [site] = est.sites
    assert [p.name for p in site.pods] == ["p1", "p2"]
    a, b = site.pods[0].hosts[0], site.pods[1].hosts[0]
    assert (a.cpu, a.mem) == (2, 2)  # 8 of 40 vCPUs, 64 of 384 GiB: two tenths each
    assert "vCPUs 8/40" in a.title and "64 of 384 GiB" in a.title
    assert (b.cpu, b.mem) == (0, 0) and "vCPUs 0/?" in b.title  # no stats yet
    assert est.hosts == 2 and est.vms == 3


def test_an_overcommitted_host_fills_its_bar_and_no_more() -> None:
    rows = [_vm("a", "running", vcpus=64)]
    [cell] = build([_h("a")], rows, [], {"a": (40, 384 * GIB)}, {}).sites[0].pods[0].hosts
    assert cell.cpu == 10
