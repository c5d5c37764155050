"""The VM service in process, on test-driver hypervisors: typed requests in,
typed per-VM and per-host results out, and what each hypervisor then really holds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from virtfleet.cli.fields import options_named
from virtfleet.cli.vm import CREATE_FLAGS
from virtfleet.errors import Conflict, InvalidInput, NotFound
from virtfleet.fleet.scope import Scope, Step
from virtfleet.fleet.vms import (
    ActRequest,
    ConsoleRequest,
    CreateRequest,
    UndefineRequest,
    VMResult,
    VMService,
)
from virtfleet.virt.fanout import ConnectionPool
from virtfleet.virt.guest import Guest

from .fleets import fleet_store, hv


@pytest.fixture
def vms(tmp_path: Path) -> Iterator[VMService]:
    """hv1: a sealed template and shut-off VMs, a pool and a network; hv2: a running, a paused
    and a shut-off VM; `dead`: nothing listens. The pool is the test's, so what the service
    did can be read back through the same test-driver connections."""
    store = fleet_store(tmp_path, {
        "p1": [hv(tmp_path, "hv1", "with-template.xml"), hv(tmp_path, "hv2", "two-vms.xml")],
        "p2": [hv(tmp_path, "dead", None)]})
    with ConnectionPool() as pool, VMService(store, pool) as service:
        yield service
    store.close()


def state(vms: VMService, host: str, name: str) -> str:
    [rec] = vms.store.hypervisors(host=host)
    return Guest.lookup(vms.pool.get(rec), name).state


def test_one_vm_is_found_by_name_and_acted_on(vms: VMService) -> None:
    done = vms.act(ActRequest("destroy", vm="vm1.example.com"))
    assert done.vms == (VMResult("hv2", "vm1.example.com", "destroyed", True),) and done.ok
    assert state(vms, "hv2", "vm1.example.com") == "shut off"
    assert done.as_json()["vms"] == [{"host": "hv2", "name": "vm1.example.com",
                                      "result": "destroyed", "ok": True}]
    with pytest.raises(Conflict) as exc:  # one VM: what refused it is raised
        vms.act(ActRequest("start", vm="tpl"))
    assert "templates are never started" in exc.value.message
    assert state(vms, "hv1", "tpl") == "shut off"
    with pytest.raises(NotFound):
        vms.act(ActRequest("start", vm="nosuch", scope=Scope(host="hv1")))


def test_many_vms_a_result_each_and_the_dead_host_as_a_failure(vms: VMService) -> None:
    steps: list[Step] = []
    done = vms.act(ActRequest("start"), progress=steps.append)
    started = sorted((v.host, v.name) for v in done.vms)
    # every shut-off VM but the template, which `start` on many leaves alone
    assert started == [("hv1", "old"), ("hv1", "plain"), ("hv1", "plain2"),
                       ("hv2", "centos.template")]
    assert all(v.ok and v.result == "started" for v in done.vms)
    assert [(f.host, f.kind) for f in done.failed] == [("dead", "host-unavailable")]
    assert not done.ok and done.asked == 3
    assert [(s.what, s.done, s.total) for s in steps] == [("start", i, 3) for i in (1, 2, 3)]
    assert state(vms, "hv1", "old") == "running" and state(vms, "hv1", "tpl") == "shut off"
    resumed = vms.act(ActRequest("resume", scope=Scope(pod="p1")))
    assert [(v.name, v.result) for v in resumed.vms] == [("vm2.example.com", "resumed")]
    assert resumed.ok and resumed.failed == ()


def test_bad_requests_name_their_fields(vms: VMService) -> None:
    for req, field in [
        (ActRequest("poweroff", vm="x"), "verb"),
        (ActRequest("start", vm="bad name"), "vm"),
        (ActRequest("start", vm="x", scope=Scope(pod="p1")), "scope"),
        (ActRequest("shutdown", vm="x", timeout=-1), "timeout"),
    ]:
        with pytest.raises(InvalidInput) as exc:
            vms.act(req)
        assert exc.value.field == field, exc.value
    with pytest.raises(InvalidInput) as exc:
        UndefineRequest("old", remove_all_storage=True, storage=("vda",)).check()
    assert exc.value.field == "storage"
    with pytest.raises(InvalidInput) as exc:
        ConsoleRequest("old", start=True, force=True).check()
    assert exc.value.field == "force"


def test_info_stats_xml_and_autostart(vms: VMService) -> None:
    found = vms.info("vm2.example.com")
    assert (found.host, found.info.state) == ("hv2", "paused")
    assert found.as_json()["host"] == "hv2" and found.as_json()["name"] == "vm2.example.com"
    stats = vms.stats("vm1.example.com")
    assert stats.host == "hv2" and stats.as_json()["state.state"] == 1
    assert "<name>old</name>" in vms.dumpxml("old")
    vms.set_autostart("old", True)
    assert vms.info("old").info.autostart


def test_create_and_undefine(vms: VMService) -> None:
    req = CreateRequest(name="web01", memory="512M", vcpus=1, disks=("size=1G",),
                        networks=("network=default",), pxe=True, host="hv1", start=False,
                        app="web")
    made = vms.create(req)
    assert (made.host, made.name, made.started) == ("hv1", "web01", False)
    assert made.disks == ("/var/lib/libvirt/images/web01.qcow2",)
    assert state(vms, "hv1", "web01") == "shut off"
    gone = vms.undefine(UndefineRequest("web01", remove_all_storage=True))
    assert gone.as_json() == {"host": "hv1", "name": "web01", "removed": list(made.disks)}
    [rec] = vms.store.hypervisors(host="hv1")
    assert not vms.pool.get(rec).has_domain("web01")


@pytest.mark.parametrize(("change", "field"), [
    ({"host": None}, "host/pod/site"),
    ({"pod": "p1"}, "host/pod/site"),
    ({"app": "no good"}, "app"),
    ({"disks": ("size=10T",)}, "disks[0].size"),  # more than hv1's pool has
    ({"networks": ("network=default", "network=nosuch")}, "networks[1]"),
    ({"disks": ("path=/etc/shadow",)}, "disks[0].path"),
])
def test_create_refusals_name_the_request_field(vms: VMService, change: dict[str, object],
                                                field: str) -> None:
    base = {"name": "web01", "memory": "512M", "vcpus": 1, "disks": ("size=1G",),
            "networks": ("network=default",), "pxe": True, "host": "hv1"}
    with pytest.raises(InvalidInput) as exc:
        vms.create(CreateRequest(**{**base, **change}))  # type: ignore[arg-type]
    assert exc.value.field == field, exc.value
    [rec] = vms.store.hypervisors(host="hv1")
    assert not vms.pool.get(rec).has_domain("web01")  # nothing half-made


def test_a_taken_mac_is_named_by_its_field_and_worded_as_the_option(vms: VMService) -> None:
    req = CreateRequest(name="web01", memory="512M", vcpus=1, disks=("size=1G",), pxe=True,
                        networks=("network=default", "network=default,mac=52:54:00:00:00:02"),
                        host="hv1")
    with pytest.raises(Conflict) as exc:
        vms.create(req)
    assert exc.value.detail.startswith("`networks[1].mac` 52:54:00:00:00:02 is already used")
    with pytest.raises(Conflict) as exc, options_named(CREATE_FLAGS):
        vms.create(req)
    assert exc.value.detail.startswith("--network mac 52:54:00:00:00:02 is already used in pod")


def test_a_vnc_display_is_found_in_the_live_xml_as_the_controller_reaches_it(
        tmp_path: Path) -> None:
    """What the web console's screen relay connects to (controller/ui/console.py)."""
    store = fleet_store(tmp_path, {"p1": [hv(tmp_path, "hv-vnc", "vnc.xml")]})
    with ConnectionPool() as pool, VMService(store, pool) as vms:
        shown = vms.graphics_display("on-address")
        assert (shown.host, shown.vm, shown.kind, shown.address, shown.port) == (
            "hv-vnc", "on-address", "vnc", "10.9.0.5", 5905)
        # on every address: reached on the hypervisor's own (a test:/// one is this machine)
        everywhere = vms.graphics_display("everywhere")
        assert (everywhere.address, everywhere.port) == ("127.0.0.1", 5906)
        with pytest.raises(NotFound, match="no VNC display"):
            vms.graphics_display("blind")
        with pytest.raises(Conflict, match="no VNC display running"):
            vms.graphics_display("off")
        with pytest.raises(InvalidInput):
            vms.graphics_display("../etc")
        with pytest.raises(InvalidInput, match="one of vnc, spice"):
            vms.graphics_display("on-address", kind="rdp")
        # SPICE the same way; asking one kind of a VM that has the other says which it has,
        # short enough for a websocket's close reason (123 bytes)
        spice = vms.graphics_display("spicy", kind="spice")
        assert (spice.kind, spice.address, spice.port) == ("spice", "10.9.0.7", 5907)
        with pytest.raises(NotFound) as other:
            vms.graphics_display("spicy")
        assert other.value.message == ("hv-vnc/spicy has no VNC display: its screen is SPICE "
                                       "(/console/spice)")
        with pytest.raises(NotFound, match="its screen is VNC"):
            vms.graphics_display("on-address", kind="spice")
        with pytest.raises(Conflict, match="takes TLS only"):
            vms.graphics_display("spicy-tls", kind="spice")
    store.close()
