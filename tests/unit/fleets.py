"""Small fleets for the services' tests: test-driver hypervisors from node fixtures (and hosts
that do not answer) in pods of one site, applied to a store of the test's own."""

from __future__ import annotations

from pathlib import Path

import yaml

from virtfleet.inventory.fleetfile import load_fleet
from virtfleet.inventory.store import Store

from .nodes import node_uri, refused_port


def hv(tmp_path: Path, name: str, fixture: str | None, *groups: str) -> dict[str, object]:
    """A hypervisor on a private copy of `fixture`; None: one whose port refuses (dead)."""
    uri = (node_uri(tmp_path, fixture, f"{name}.xml") if fixture is not None
           else f"qemu+tcp://127.0.0.1:{refused_port()}/system")
    return {"name": name, "uri": uri, "groups": list(groups)}


def fleet_store(tmp_path: Path, pods: dict[str, list[dict[str, object]]]) -> Store:
    """A SQLite store holding site oregon with these pods."""
    path = tmp_path / "fleet.yaml"
    # insecure_transport: a dead host is a refused qemu+tcp port on loopback.
    path.write_text(yaml.safe_dump({"sites": [{"name": "oregon", "pods": [
        {"name": pod, "insecure_transport": True, "hypervisors": hosts}
        for pod, hosts in pods.items()]}]}))
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.apply(load_fleet(path))
    return store


def one_host_store(tmp_path: Path, fixture: str = "with-template.xml") -> Store:
    """A store whose fleet is hv1 (pod p1) on `fixture`."""
    return fleet_store(tmp_path, {"p1": [hv(tmp_path, "hv1", fixture)]})
