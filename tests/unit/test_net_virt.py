"""Per-host network operations on libvirt's test driver (a private node file per test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from virtfleet.errors import Conflict, InvalidInput, NotFound
from virtfleet.inventory.networks import NetworkSpec, build_network
from virtfleet.virt import networks
from virtfleet.virt.errors import or_none
from virtfleet.virt.host import Host

from .nodes import node_uri


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Host]:
    with Host.open(node_uri(tmp_path, "with-networks.xml"), keepalive=False) as host:
        yield host


def nat(name: str = "lab", subnet: str = "10.77.0.0/24") -> NetworkSpec:
    return NetworkSpec(name=name, mode="nat", subnet=subnet)


def test_list_shows_state_autostart_persistence_bridge_and_subnet(h: Host) -> None:
    [default] = networks.list_networks(h)
    assert (default.name, default.active, default.autostart, default.persistent,
            default.bridge, default.mode, default.subnets) == (
        "default", True, False, True, "virbr0", "nat", ("192.168.122.0/24",))


def test_define_start_autostart_destroy_undefine(h: Host) -> None:
    made = networks.define(h, build_network(nat()))
    assert (made.name, made.active, made.persistent) == ("lab", False, True)
    networks.start(h, "lab")
    networks.set_autostart(h, "lab", True)
    info = networks.info(h, "lab")
    assert info.active and info.autostart and info.subnets == ("10.77.0.0/24",)
    with pytest.raises(Conflict, match="already running"):
        networks.start(h, "lab")
    networks.set_autostart(h, "lab", False)
    networks.destroy(h, "lab")
    assert not networks.info(h, "lab").active
    networks.undefine(h, "lab")
    assert not networks.has_network(h, "lab")
    with pytest.raises(NotFound, match="has no network 'lab'"):
        networks.info(h, "lab")


def test_define_refuses_a_taken_name_and_an_overlapping_subnet(h: Host) -> None:
    with pytest.raises(Conflict, match="'default' already exists"):
        networks.define(h, build_network(nat("default")))
    with pytest.raises(InvalidInput) as exc:
        networks.define(h, build_network(nat("big", "192.168.0.0/16")), "--nat")
    assert exc.value.field == "--nat" and "overlaps network 'default'" in exc.value.rule
    assert [n.name for n in networks.list_networks(h)] == ["default"]


def test_ensure_defines_starts_autostarts_then_does_nothing(h: Host) -> None:
    spec = nat()
    assert networks.ensure(h, spec, "f", dry_run=True) == ["define", "start", "autostart"]
    assert not networks.has_network(h, "lab")  # a dry run changes nothing
    assert networks.ensure(h, spec, "f") == ["define", "start", "autostart"]
    assert networks.ensure(h, spec, "f") == []
    networks.destroy(h, "lab")
    assert networks.ensure(h, spec, "f") == ["start"]


def test_ensure_never_rewrites_a_network_that_differs(h: Host) -> None:
    with pytest.raises(Conflict, match="differs from the fleet file"):
        networks.ensure(h, nat("default", "192.168.123.0/24"), "f")
    assert networks.info(h, "default").subnets == ("192.168.122.0/24",)


def test_or_none_turns_only_its_own_missing_code_into_none(h: Host) -> None:
    def lookup() -> object:
        return h.conn.networkLookupByName("no-such-net")

    assert or_none(lookup, libvirt.VIR_ERR_NO_NETWORK) is None
    with pytest.raises(libvirt.libvirtError):  # another kind of absence is not this answer
        or_none(lookup, libvirt.VIR_ERR_NO_STORAGE_POOL)
    assert or_none(lambda: h.conn.networkLookupByName("default"), libvirt.VIR_ERR_NO_NETWORK)
