"""The snapshot service in process, on a test-driver hypervisor: typed results, and the
snapshots the hypervisor then really has."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from virtfleet.errors import InvalidInput, NotFound
from virtfleet.fleet.snapshots import SnapshotRequest, SnapshotService
from virtfleet.inventory.fleetfile import load_fleet
from virtfleet.inventory.store import Store

from .nodes import node_uri


@pytest.fixture
def snaps(tmp_path: Path) -> Iterator[SnapshotService]:
    p = tmp_path / "fleet.yaml"
    p.write_text(yaml.safe_dump({"sites": [{"name": "oregon", "pods": [{"name": "p1",
        "hypervisors": [{"name": "hv1", "uri": node_uri(tmp_path, "with-template.xml")}]}]}]}))
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.apply(load_fleet(p))
    with SnapshotService(store) as service:
        yield service
    store.close()


def test_snapshots_as_a_tree_revert_and_delete(snaps: SnapshotService) -> None:
    assert snaps.create(SnapshotRequest("old", name="before")) == "before"
    assert snaps.create(SnapshotRequest("old", name="after")) == "after"
    tree = snaps.snapshots("old")
    assert [(i.name, i.parent, i.current) for i in tree] == [("before", None, False),
                                                             ("after", "before", True)]
    assert snaps.info("old", None).name == "after"
    assert "<name>before</name>" in snaps.dumpxml("old", "before")
    assert snaps.revert("old", "before") == "before"
    assert snaps.delete("old", "before", children=True) == "before"
    assert snaps.snapshots("old") == []
    with pytest.raises(InvalidInput) as exc:
        snaps.create(SnapshotRequest("old", name="no good"))
    assert exc.value.field == "name"
    with pytest.raises(NotFound, match="no snapshot 'before'"):
        snaps.revert("old", "before")
