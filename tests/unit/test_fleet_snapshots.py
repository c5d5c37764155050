"""The snapshot service in process, on a test-driver hypervisor: typed results, and the
snapshots the hypervisor then really has."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from virtfleet.errors import InvalidInput, NotFound
from virtfleet.fleet.snapshots import SnapshotRequest, SnapshotService

from .fleets import one_host_store


@pytest.fixture
def snaps(tmp_path: Path) -> Iterator[SnapshotService]:
    with one_host_store(tmp_path) as store, SnapshotService(store) as service:
        yield service


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
