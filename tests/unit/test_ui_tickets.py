"""One-time console tickets (controller/ui/tickets.py): single use, short-lived, and only for
the session, VM and console kind they were issued for."""

from __future__ import annotations

import pytest

from virtfleet.controller.ui.tickets import CONNECTS, Tickets
from virtfleet.errors import Forbidden


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _tickets() -> tuple[Tickets, Clock]:
    clock = Clock()
    return Tickets(ttl=30.0, clock=clock), clock


def test_a_ticket_opens_its_console_once() -> None:
    t, _clock = _tickets()
    secret = t.issue("cookie-a", "webop", "web01", "hv-web", "serial")
    got = t.redeem(secret, "cookie-a", "web01", "serial")
    assert (got.user, got.vm, got.host, got.kind) == ("webop", "web01", "hv-web", "serial")
    with pytest.raises(Forbidden, match="unknown, used, expired"):
        t.redeem(secret, "cookie-a", "web01", "serial")
    assert len(t) == 0


def test_an_expired_ticket_is_refused() -> None:
    t, clock = _tickets()
    secret = t.issue("cookie-a", "webop", "web01", "hv-web", "serial")
    clock.now += 30.5
    with pytest.raises(Forbidden) as refused:
        t.redeem(secret, "cookie-a", "web01", "serial")
    assert refused.value.permission == "console.ticket" and refused.value.target == "vm:web01"


def test_a_ticket_still_fresh_just_inside_its_life_is_accepted() -> None:
    t, clock = _tickets()
    secret = t.issue("cookie-a", "webop", "web01", "hv-web", "serial")
    clock.now += 29.9
    assert t.redeem(secret, "cookie-a", "web01", "serial").vm == "web01"


@pytest.mark.parametrize(("cookie", "vm", "kind"), [
    ("cookie-b", "web01", "serial"),  # another session's
    ("", "web01", "serial"),  # no session at all
    ("cookie-a", "web02", "serial"),  # another VM
    ("cookie-a", "web01", "vnc"),  # another kind of console
])
def test_a_ticket_is_only_for_its_session_vm_and_kind(cookie: str, vm: str, kind: str) -> None:
    t, _clock = _tickets()
    secret = t.issue("cookie-a", "webop", "web01", "hv-web", "serial")
    with pytest.raises(Forbidden):
        t.redeem(secret, cookie, vm, kind)
    # a misdirected try uses it up: whoever stole it gets one guess, then it is gone
    with pytest.raises(Forbidden):
        t.redeem(secret, "cookie-a", "web01", "serial")


@pytest.mark.parametrize("secret", ["", "x", "A" * 43])
def test_an_unknown_or_empty_ticket_is_refused(secret: str) -> None:
    t, _clock = _tickets()
    t.issue("cookie-a", "webop", "web01", "hv-web", "serial")
    with pytest.raises(Forbidden):
        t.redeem(secret, "cookie-a", "web01", "serial")


def test_tickets_are_bounded_and_expired_ones_are_swept() -> None:
    clock = Clock()
    t = Tickets(ttl=30.0, limit=3, clock=clock)
    first = t.issue("c", "u", "vm1", "h", "serial")
    for n in range(2, 5):
        t.issue("c", "u", f"vm{n}", "h", "serial")
    assert len(t) == 3
    with pytest.raises(Forbidden):  # the oldest went first
        t.redeem(first, "c", "vm1", "serial")
    clock.now += 31
    t.issue("c", "u", "vm9", "h", "serial")
    assert len(t) == 1


def test_a_spice_ticket_opens_each_channel_of_one_screen_and_no_more() -> None:
    """spice-html5 opens a websocket per SPICE channel to the same address, so its page's
    ticket is good for CONNECTS["spice"] connects, each for its session and VM only."""
    t, clock = _tickets()
    secret = t.issue("cookie-a", "webop", "web01", "hv-web", "spice")
    for _channel in range(CONNECTS["spice"]):
        clock.now += 0.1
        assert t.redeem(secret, "cookie-a", "web01", "spice").kind == "spice"
    with pytest.raises(Forbidden):
        t.redeem(secret, "cookie-a", "web01", "spice")
    assert len(t) == 0


@pytest.mark.parametrize(("cookie", "vm", "kind", "later"), [
    ("cookie-b", "web01", "spice", 0.0),  # another session's
    ("cookie-a", "web02", "spice", 0.0),  # another VM
    ("cookie-a", "web01", "vnc", 0.0),  # another kind
    ("cookie-a", "web01", "spice", 30.5),  # past its life, channels left or not
])
def test_a_spice_ticket_misused_once_is_gone_with_its_channels_left(
        cookie: str, vm: str, kind: str, later: float) -> None:
    t, clock = _tickets()
    secret = t.issue("cookie-a", "webop", "web01", "hv-web", "spice")
    assert t.redeem(secret, "cookie-a", "web01", "spice").vm == "web01"  # the main channel
    clock.now += later
    with pytest.raises(Forbidden):
        t.redeem(secret, cookie, vm, kind)
    clock.now -= later
    with pytest.raises(Forbidden):
        t.redeem(secret, "cookie-a", "web01", "spice")
