"""The console's sessions (controller/ui/sessions.py): expiry, the bound on how many, sign-out,
and an open events stream going quiet when its session is closed."""

from __future__ import annotations

from datetime import UTC, datetime

from virtfleet.controller.events import Event, Visible
from virtfleet.controller.ui.session_auth import Caller, stream_visible
from virtfleet.controller.ui.sessions import Sessions, same_token
from virtfleet.fleet.roles import Grant, Principal


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_session_ends_when_unused_too_long_or_too_old() -> None:
    clock = Clock()
    s = Sessions(idle=10, longest=25, clock=clock)
    cookie, session = s.open("alice", "vf_token")
    assert s.get(cookie) is session and session.bearer == "vf_token"
    clock.now = 9
    assert s.get(cookie) is session  # used: idle counts from here
    clock.now = 18
    assert s.get(cookie) is session
    clock.now = 26  # used 8 s ago, but older than 25 s in all
    assert s.get(cookie) is None
    cookie, _ = s.open("alice", "vf_token")
    clock.now += 11
    assert s.get(cookie) is None and len(s) == 0


def test_only_the_cookie_opens_its_session_and_sign_out_closes_it() -> None:
    s = Sessions()
    cookie, _ = s.open("alice", "t")
    other, _ = s.open("alice", "t")
    assert cookie != other
    assert s.get("") is None and s.get(cookie + "x") is None
    assert s.close(cookie) and not s.close(cookie)
    assert s.get(cookie) is None and s.get(other) is not None


def test_the_oldest_sessions_go_past_the_limit() -> None:
    clock = Clock()
    s = Sessions(limit=2, clock=clock)
    first, _ = s.open("a", "t")
    clock.now = 1
    second, _ = s.open("b", "t")
    clock.now = 2
    third, _ = s.open("c", "t")
    assert s.get(first) is None and s.get(second) and s.get(third) and len(s) == 2


def test_csrf_tokens_compare_whole_and_never_empty() -> None:
    assert same_token("abc", "abc")
    assert not same_token("", "")
    assert not same_token("ab", "abc")


def test_an_open_stream_carries_nothing_once_signed_out() -> None:
    s = Sessions()
    cookie, session = s.open("alice", "t")
    scoped = Principal("alice", "token x", (Grant("viewer", "site", "oregon"),))
    caller = Caller(scoped, session, cookie)

    def by_site(p: Principal) -> Visible | None:
        return lambda e: e.site == "oregon"

    visible = stream_visible(s, caller, by_site)
    here = Event("vm.state", datetime.now(UTC), 1, "e", site="oregon", vm="web01")
    there = Event("vm.state", datetime.now(UTC), 2, "e", site="texas", vm="db01")
    assert visible(here) and not visible(there)
    s.close(cookie)
    assert not visible(here)
