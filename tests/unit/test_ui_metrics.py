"""The sample ring behind a VM page's sparklines (controller/samples.py) and the charts' model
(controller/ui/metrics.py), fed with what a real QEMU domain's bulk stats parse into; the page
against a real controller is in tests/unit/test_ui.py."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from virtfleet.controller.samples import SLOTS, SampleRing
from virtfleet.controller.ui import metrics
from virtfleet.controller.ui.render import ENV
from virtfleet.virt.stats import DomainStats, HostStats, NodeStats, parse_domain

QEMU = json.loads((Path(__file__).parent / "fixtures" / "stats" / "qemu-domain.json").read_text())
NODE = NodeStats(cpus=4, memory_bytes=16 * 2**30, cpu_seconds={}, memory_free_bytes=None)
T0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


def _later(d: DomainStats, k: int) -> DomainStats:
    """The captured domain `k` passes later: half a CPU busy over each 10 s, 1 MiB more read
    from its disk and 10 KiB more received per pass."""
    [b], [n] = d.blocks, d.nets
    assert d.cpu_seconds is not None and b.read_bytes is not None and n.rx_bytes is not None
    return dataclasses.replace(
        d, cpu_seconds=d.cpu_seconds + 5.0 * k,
        blocks=(dataclasses.replace(b, read_bytes=b.read_bytes + 2**20 * k),),
        nets=(dataclasses.replace(n, rx_bytes=n.rx_bytes + 10240 * k),))


def _answer(k: int, *domains: DomainStats) -> HostStats:
    return HostStats(NODE, domains, T0 + timedelta(seconds=10 * k))


def _qemu(name: str = "vm1") -> DomainStats:
    return parse_domain(name, QEMU["uuid"], QEMU["stats"])


def test_rates_come_from_the_growth_between_two_answers() -> None:
    ring = SampleRing()
    for k in range(3):
        ring.record([("hv1", _answer(k, _later(_qemu(), k)))])
    got = ring.series("hv1", "vm1")
    assert got is not None and got.samples == 3
    assert math.isnan(got.values["cpu"][0])  # the first answer has nothing to differ from
    assert got.values["cpu"][1:] == [50.0, 50.0]
    # float32 in the ring: a chart's precision, not a counter's
    assert got.values["disk"][1:] == pytest.approx([2**20 / 10] * 2, rel=1e-6)
    assert got.values["net"][1:] == [1024.0] * 2
    assert got.values["rss"] == [208152 * 1024] * 3 and got.values["up"] == [1.0] * 3
    assert ring.series("hv1", "other") is None and ring.series("hv2", "vm1") is None


def test_a_restart_a_silent_host_and_a_vanished_vm_break_or_drop_the_series() -> None:
    ring = SampleRing()
    ring.record([("hv1", _answer(0, _later(_qemu(), 5), _qemu("vm2")))])
    ring.record([("hv1", _answer(1, _qemu(), _qemu("vm2")))])  # vm1's counters began again
    ring.record([("hv1", None)])  # hv1 did not answer: a gap, the VMs kept
    got = ring.series("hv1", "vm1")
    assert got is not None and got.samples == 3
    assert math.isnan(got.values["cpu"][1]) and math.isnan(got.values["rss"][2])
    ring.record([("hv1", _answer(3, _qemu()))])  # vm2 is no longer there
    assert ring.series("hv1", "vm2") is None and ring.vms() == 1
    ring.record([("hv2", _answer(4, _qemu()))])  # hv1 left the inventory
    assert ring.series("hv1", "vm1") is None and ring.vms() == 1


def test_a_vm_that_is_not_running_has_gaps_whatever_libvirt_says() -> None:
    """A shut-off domain still has its defined balloon, and the lab's page once drew 1.0 % CPU
    for a VM that was never started: no figure of a VM without QEMU is its use."""
    off = dataclasses.replace(_qemu(), state="shut off")
    ring = SampleRing()
    for k in range(3):
        ring.record([("hv1", _answer(k, _later(off, k)))])
    ring.record([("hv1", _answer(3, _later(_qemu(), 3)))])  # started: no rate yet
    ring.record([("hv1", _answer(4, _later(_qemu(), 4)))])
    got = ring.series("hv1", "vm1")
    assert got is not None and got.values["up"] == [0.0, 0.0, 0.0, 1.0, 1.0]
    for name in ("cpu", "rss", "balloon", "disk", "net"):
        assert all(math.isnan(v) for v in got.values[name][:3]), name
    assert math.isnan(got.values["cpu"][3]) and got.values["cpu"][4] == 50.0


def test_the_ring_holds_the_last_slots_passes_and_its_cost_per_vm_is_bounded() -> None:
    ring = SampleRing()
    vms = [_qemu(f"vm{i}") for i in range(200)]
    for k in range(SLOTS + 15):
        ring.record([("hv1", _answer(k, *(_later(d, k) for d in vms)))])
    got = ring.series("hv1", "vm7")
    assert got is not None and got.samples == SLOTS and len(got.values["cpu"]) == SLOTS
    assert got.values["cpu"] == [50.0] * SLOTS  # the oldest 15 passes overwritten
    # what docs/ui.md says a VM costs: about 1.8 KiB once its ring is full
    tracemalloc.start()
    fresh = SampleRing()
    before = tracemalloc.get_traced_memory()[0]
    for k in range(SLOTS + 1):
        fresh.record([("hv1", _answer(k, *(_later(d, k) for d in vms)))])
    per_vm = (tracemalloc.get_traced_memory()[0] - before) / len(vms)
    tracemalloc.stop()
    assert 1440 < per_vm < 2300, per_vm


def test_the_charts_points_are_the_passes_scaled_to_the_window() -> None:
    ring = SampleRing()
    for k in range(4):
        ring.record([("hv1", _answer(k, _later(_qemu(), k)))])
    ring.record([("hv1", None)])
    ring.record([("hv1", _answer(5, _later(_qemu(), 7)))])  # 20 s of CPU over 20 s: 100 %
    m = metrics.build(ring.series("hv1", "vm1"), 15.0)
    charts = {s.key: s for s in m.sparks}
    [cpu] = charts["cpu"].lines
    # passes 1..3 (pass 0 has no rate) then the gap; the last one alone is a dot
    [run] = cpu.segments
    assert [p.x for p in run] == [round((SLOTS - 6 + k) * metrics.WIDTH / (SLOTS - 1), 1)
                                  for k in (1, 2, 3)]
    # 100 % is the window's top (y 1, a pixel from the edge): 50 % halfway down
    assert {p.y for p in run} == {metrics.HEIGHT / 2}
    assert [(p.x, p.y) for p in cpu.dots] == [(metrics.WIDTH, 1.0)]
    assert (charts["cpu"].latest, charts["cpu"].peak) == ("100.0 %", "100.0 %")
    assert [line.key for line in charts["memory"].lines] == ["rss", "balloon"]
    assert charts["disk"].latest == "204.8 KiB/s"  # 4 MiB over 20 s


def _render(m: metrics.Metrics, name: str) -> str:
    return ENV.get_template("metrics.html").render(m=m, name=name, host="hv1", error="")


def test_the_svg_is_drawn_by_the_template_and_a_vm_without_samples_has_none() -> None:
    ring = SampleRing()
    for k in range(3):
        ring.record([("hv1", _answer(k, _later(_qemu("<script>alert(1)"), k)))])
    html = _render(metrics.build(ring.series("hv1", "<script>alert(1)"), 15.0),
                   "<script>alert(1)")
    assert html.count('<svg class="spark"') == 5
    assert re.search(r'<polyline class="l-cpu" points="[\d.]+,[\d.]+ [\d.]+,[\d.]+"/>', html)
    assert "/ui/vms/%3Cscript%3Ealert%281%29/metrics" in html and "<script>" not in html
    none = _render(metrics.build(None, 15.0), "<script>alert(1)")
    assert "<svg" not in none and 'data-samples="0"' in none
    assert "no samples of &lt;script&gt;alert(1) on hv1 yet" in none and "<script>" not in none
