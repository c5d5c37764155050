"""Roles and scopes, tokens and the audit log, below the HTTP layer: fleet/roles.py,
fleet/access.py and fleet/audit.py on a real store (SQLite here; PostgreSQL too where set)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from virtfleet.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from virtfleet.fleet.access import AccessService, AddUser, CreateToken, GrantRequest, split_token
from virtfleet.fleet.audit import MASK, AuditQuery, AuditService, PruneRequest, Write, mask
from virtfleet.fleet.roles import Grant, Principal, Target, parse_scope
from virtfleet.inventory.fleetfile import parse_fleet
from virtfleet.inventory.store import Store

from .nodes import host

WEB = host("hv1", "test:///x", site="oregon", pod="or-pod1", groups=("web",))
DB = host("hv2", "test:///y", site="oregon", pod="or-pod1", groups=("db",))
OTHER = host("hv3", "test:///z", site="texas", pod="tx-pod1", groups=("web",))


# ------------------------------------------------------------------ roles (pure)


def test_a_group_grant_covers_that_groups_vms_only() -> None:
    alice = Principal("alice", "token x", (Grant("operator", "group", "web"),))
    assert alice.can("vm.lifecycle", Target.of_vm("web01", WEB))
    assert alice.can("vm.lifecycle", Target.of_vm("web09", OTHER))  # any site, same group
    assert not alice.can("vm.lifecycle", Target.of_vm("db01", DB))
    with pytest.raises(Forbidden) as err:
        alice.check("vm.lifecycle", Target.of_vm("db01", DB))
    assert err.value.permission == "vm.lifecycle" and err.value.target == "vm:db01"
    assert "operator on group:web" in err.value.message
    # an operator is no admin, anywhere
    assert not alice.holds("user.manage") and alice.holds("vm.create")


def test_viewer_reads_but_never_writes_and_site_and_pod_scopes_hold() -> None:
    bob = Principal("bob", "token y", (Grant("viewer", "all"),))
    assert bob.can("vm.read", Target.of_vm("db01", DB))
    assert not bob.holds("vm.lifecycle")
    carol = Principal("carol", "t", (Grant("admin", "site", "texas"),
                                     Grant("operator", "pod", "or-pod1")))
    assert carol.can("user.manage", Target.of_host(OTHER))
    assert not carol.can("user.manage", Target.of_host(WEB))  # operator there, not admin
    assert carol.can("vm.lifecycle", Target.of_vm("db01", DB))
    assert not carol.can("user.manage", Target.estate())  # only grants on `all` cover it
    reach = carol.reach("vm.lifecycle")
    assert reach.covers_host(OTHER) and reach.covers_host(DB) and not reach.everywhere


@pytest.mark.parametrize("bad", ["", "everything", "site:", "zone:x", "pod:a b", "group"])
def test_a_bad_scope_names_the_field(bad: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_scope(bad)
    assert err.value.field == "scope"


# ------------------------------------------------------------------ tokens on a store


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A fresh store (SQLite, then PostgreSQL: tests/conftest.py) with two hosts, web and db."""
    s = Store(store_url)
    s.apply(parse_fleet({"sites": [{"name": "oregon", "pods": [{"name": "or-pod1", "hypervisors": [
        {"name": "hv1", "uri": "test:///x", "groups": ["web"]},
        {"name": "hv2", "uri": "test:///y", "groups": ["db"]}]}]}]}))
    try:
        yield s
    finally:
        s.close()


def test_a_token_is_shown_once_stored_hashed_and_stops_when_revoked(store: Store,
                                                                   store_url: str) -> None:
    access = AccessService(store)
    access.add_user(AddUser("alice"))
    access.add_grant(GrantRequest("alice", "operator", "group:web"))
    made = access.create_token(CreateToken("alice", "ci"))
    token_id, secret = split_token(made.token) or ("", "")
    with create_engine(store_url).connect() as conn:  # the table itself, not the store's view
        stored = conn.execute(text("SELECT secret_hash FROM api_tokens")).scalar_one()
    assert secret not in stored and made.token not in stored and len(stored) == 64
    assert "token" not in made.record.as_json()  # listings never carry it

    auth = access.authenticator()
    who = auth.authenticate(made.token)
    assert who.name == "alice" and who.grants == (Grant("operator", "group", "web"),)
    for wrong in ("", "nonsense", made.token[:-1] + ("A" if made.token[-1] != "A" else "B"),
                  f"vf_{'0' * 12}_{secret}"):
        with pytest.raises(Unauthorized):
            auth.authenticate(wrong)
    access.revoke_token(token_id)
    with pytest.raises(Unauthorized):
        auth.authenticate(made.token)
    assert access.revoke_token(token_id)[1] is False  # already revoked: said so


def test_expired_tokens_and_disabled_users_are_refused(store: Store) -> None:
    access = AccessService(store)
    access.add_user(AddUser("dave"))
    made = access.create_token(CreateToken("dave", expires_in=timedelta(minutes=5)))
    auth = access.authenticator()
    assert auth.authenticate(made.token).name == "dave"
    with pytest.raises(Unauthorized):
        auth.authenticate(made.token, at=datetime.now(UTC) + timedelta(minutes=6))
    access.set_disabled("dave")
    with pytest.raises(Unauthorized):
        auth.authenticate(made.token)
    with pytest.raises(Conflict):
        access.create_token(CreateToken("dave"))
    access.set_disabled("dave", False)
    assert auth.authenticate(made.token).name == "dave"


def test_grants_name_what_exists(store: Store) -> None:
    access = AccessService(store)
    access.add_user(AddUser("erin"))
    with pytest.raises(NotFound):
        access.add_grant(GrantRequest("erin", "viewer", "group:nope"))
    with pytest.raises(InvalidInput) as err:
        access.add_grant(GrantRequest("erin", "superuser", "all"))
    assert err.value.field == "role"
    with pytest.raises(NotFound):
        access.add_grant(GrantRequest("nobody", "viewer", "all"))
    access.add_grant(GrantRequest("erin", "viewer", "pod:or-pod1"))
    with pytest.raises(Conflict):
        access.add_grant(GrantRequest("erin", "viewer", "pod:or-pod1"))
    assert [g.scope for g in access.grants("erin")] == ["pod:or-pod1"]
    access.remove_grant(GrantRequest("erin", "viewer", "pod:or-pod1"))
    assert access.grants("erin") == []


# ------------------------------------------------------------------ the audit log


def test_secrets_are_masked_whatever_the_caller_passed() -> None:
    token = "vf_0123456789ab_" + "x" * 43
    got = mask({"graphics_password": "hunter2", "body": {"bmc": {"password": "p"},
                "note": f"used {token} by mistake"}, "api_key": ["a", "b"], "force": True,
                "tokens": None})
    assert got == {"graphics_password": MASK, "body": {"bmc": {"password": MASK},
                   "note": f"used {MASK} by mistake"}, "api_key": [MASK, MASK], "force": True,
                   "tokens": None}


def test_the_audit_log_is_append_only_and_pruned_only_by_retention(store: Store,
                                                                   store_url: str) -> None:
    audit = AuditService(store)
    old = datetime.now(UTC) - timedelta(days=400)
    audit.record(Write("alice", "api", "vm.start", "vm:web01", {"password": "s3cret"}),
                 result="ok", status=200, at=old)
    audit.record(Write("bob", "cli", "vm destroy", "vm:db01"), result="denied", status=2)
    [first, second] = audit.entries(AuditQuery())
    assert first.params == {"password": MASK} and second.actor == "bob"
    assert [e.actor for e in audit.entries(AuditQuery(target="web01"))] == ["alice"]
    with pytest.raises(DBAPIError), create_engine(store_url).begin() as conn:
        conn.execute(text("UPDATE audit_log SET actor = 'mallory'"))
    assert {e.actor for e in audit.entries(AuditQuery())} == {"alice", "bob"}
    with pytest.raises(InvalidInput):
        audit.prune(PruneRequest(datetime.now(UTC) + timedelta(days=1)))
    assert audit.prune(PruneRequest(datetime.now(UTC) - timedelta(days=365))).removed == 1
    assert [e.actor for e in audit.entries(AuditQuery())] == ["bob"]
