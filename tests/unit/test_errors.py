"""The error kinds scripts and the API's JSON bodies match on."""

from __future__ import annotations

from virtfleet.errors import HostUnavailable, InvalidInput, NotFound, StaleLease
from virtfleet.fleet.locate import VMNotFound


def test_kinds_are_the_class_names_words_with_an_acronym_kept_whole() -> None:
    """Regression (new-user trial): GET /api/v1/vms/nosuch answered "v-m-not-found"."""
    assert VMNotFound("VM 'x' is not defined on or-pod1", "").kind == "vm-not-found"
    assert NotFound("x").kind == "not-found"
    assert HostUnavailable("x").kind == "host-unavailable"
    assert InvalidInput("name", "x").kind == "invalid-input"
    assert StaleLease("x").kind == "stale-lease"
