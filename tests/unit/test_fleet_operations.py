"""The operations service in process: the journal's operations with their states, and cleaning
up interrupted ones on a test-driver hypervisor (the volume it made is really gone)."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from virtfleet.errors import Busy, InvalidInput, NotFound
from virtfleet.fleet.operations import CleanupRequest, OperationService
from virtfleet.inventory.records import Made, OperationRecord
from virtfleet.virt import storage

from .fleets import one_host_store


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[OperationService]:
    with one_host_store(tmp_path) as store, OperationService(store) as service:
        yield service


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _op(ops: OperationService, op_id: str, pid: int, steps: tuple[Made, ...] = ()) -> None:
    ops.store.begin_operation(OperationRecord(
        id=op_id, kind="clone", target=f"hv1/{op_id[:4]}", hostname=socket.gethostname(),
        pid=pid, started_at=datetime.now(UTC), state="running", steps=steps))


def test_states_and_cleaning_up_what_an_interrupted_operation_made(
        ops: OperationService) -> None:
    [hv1] = ops.store.hypervisors()
    path = storage.create_volume(ops.pool.get(hv1), "default", "half.qcow2", 2**20, "qcow2")
    _op(ops, "aa11" + "0" * 28, _dead_pid(), (Made("volume", "hv1", path),))
    _op(ops, "aa22" + "0" * 28, os.getpid())
    assert sorted((o.record.id[:4], o.state) for o in ops.operations()) == [
        ("aa11", "interrupted"), ("aa22", "running")]
    made = {o.record.id[:4]: o.as_json()["made"] for o in ops.operations()}
    assert made == {"aa11": [f"volume {path} on hv1"], "aa22": []}
    with pytest.raises(InvalidInput) as exc:
        ops.clean_up(CleanupRequest("aa"))
    assert exc.value.field == "id" and "matches 2 operations" in exc.value.rule
    with pytest.raises(NotFound, match="no operation 'feed'"):
        ops.clean_up(CleanupRequest("feed"))
    with pytest.raises(Busy, match="still running"):
        ops.clean_up(CleanupRequest("AA22"))
    [cleaned] = ops.clean_up(CleanupRequest())  # every interrupted one: not the live one
    assert cleaned.record.id.startswith("aa11") and cleaned.ok
    assert cleaned.as_json()["undone"] == [f"volume {path} on hv1"]
    assert storage.volume_at(ops.pool.get(hv1), path) is None
    assert [o.record.id[:4] for o in ops.operations()] == ["aa22"]
