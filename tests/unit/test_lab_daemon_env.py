"""The lab's daemons log where their own libvirtd.conf says, whatever virtfleet set for itself."""

from __future__ import annotations

import pytest

import virtfleet.virt  # noqa: F401  (what sets the client-side silence, as any CLI run does)
from virtfleet.config import QUIET_CLIENT_LOG
from virtfleet.lab.run import daemon_env


def test_the_client_side_silence_is_not_passed_to_a_daemon(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIBVIRT_LOG_OUTPUTS", QUIET_CLIENT_LOG)
    assert "LIBVIRT_LOG_OUTPUTS" not in daemon_env()


def test_an_operators_own_log_setting_is_passed_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIBVIRT_LOG_OUTPUTS", "1:file:/tmp/all.log")
    assert daemon_env()["LIBVIRT_LOG_OUTPUTS"] == "1:file:/tmp/all.log"


def test_the_daemon_can_import_virtfleet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    path = daemon_env()["PYTHONPATH"].split(":")
    assert path[-1] == "/elsewhere" and path[0].endswith("/src")
