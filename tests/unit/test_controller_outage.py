"""The store going down, said once by the controller (controller/outage.py), not by every pass
of every worker (about three lines a second before)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtfleet.controller.outage import StoreOutage
from virtfleet.controller.service import Controller
from virtfleet.errors import StoreError
from virtfleet.inventory.store import Store


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ctl(tmp_path: Path) -> Iterator[Controller]:
    with Store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        c = Controller(store, interval=60)
        try:
            yield c
        finally:
            c.pool.close()


def fail(ctl: Controller, worker: str) -> None:
    with ctl._pass(ctl.workers[worker]):
        raise StoreError("read the operations journal: connection failed: refused")


def ok(ctl: Controller, worker: str) -> None:
    with ctl._pass(ctl.workers[worker]):
        pass


def test_a_store_outage_is_said_once_then_at_most_every_minute_and_once_when_over(
        ctl: Controller, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    ctl.outage = StoreOutage(logging.getLogger("virtfleet.controller"), every=60, clock=clock)
    with caplog.at_level("INFO", logger="virtfleet.controller"):
        for _ in range(30):  # ten seconds of three workers failing every second
            for worker in ("heartbeat", "takeover", "ha"):
                fail(ctl, worker)
            clock.now += 1 / 3
        assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
            "store unavailable"]
        assert "connection failed: refused" in caplog.text
        clock.now += 60
        fail(ctl, "ha")
        fail(ctl, "ha")
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 2 and lines[1].startswith("store still unavailable after 70 s")
        ok(ctl, "heartbeat")
        ok(ctl, "ha")
        ok(ctl, "events")  # a worker that never failed on the store proves nothing
        assert len(caplog.records) == 2  # takeover has not had a good pass yet
        ok(ctl, "takeover")
        assert caplog.records[-1].getMessage() == "store available again after 70 s"
        assert ctl.workers["ha"].faults == 32  # still counted, for the metrics
        fail(ctl, "takeover")  # down again: said again at once
        assert len(caplog.records) == 4
        assert caplog.records[-1].getMessage().startswith("store unavailable")
