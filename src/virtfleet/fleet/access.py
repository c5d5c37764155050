"""The access service: users, their API tokens and grants, and who a bearer token stands for.

    with AccessService(store) as access:
        access.add_user(AddUser("alice"))
        made = access.create_token(CreateToken("alice", expires_in=timedelta(days=90)))
        made.token                                   # vf_<id>_<secret>: shown once, never again
        access.add_grant(GrantRequest("alice", "operator", "group:web"))
        principal = access.authenticator().authenticate(made.token)

A token is `vf_<id>_<secret>`: the id is public (listed, revoked by it); only the SHA-256 of
the secret is stored (a random 256-bit secret, so a slow hash buys nothing), compared in
constant time. Every authentication reads the token, its user and grants from the store, so a
revoke, a disabled user or a removed grant counts from the next request on: nothing is cached.

Where identities come from is an `IdentityProvider`: local tokens here, the controller's own
CLI token in controller/auth.py. A directory (LDAP, an OIDC issuer) plugs in as one more
provider that maps its credential to a user row of source `ldap` or `oidc`, whose grants live
in the same table; nothing else changes.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from virtfleet.errors import InvalidInput, Unauthorized
from virtfleet.fleet.roles import Grant, Principal, check_role, parse_scope
from virtfleet.inventory.access import GrantRecord, TokenRecord, UserRecord
from virtfleet.inventory.store import Store
from virtfleet.validate import check_name

__all__ = ["AccessService", "AddUser", "Authenticator", "CreateToken", "GrantRequest",
           "IdentityProvider", "LocalTokens", "NewToken", "hash_secret", "split_token"]

TOKEN_PREFIX = "vf_"
_TOKEN = re.compile(r"vf_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
MAX_TOKEN_LIFE = timedelta(days=3650)
MAX_DESCRIPTION = 200


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token; None for anything else."""
    m = _TOKEN.fullmatch(token)
    return (m[1], m[2]) if m else None


def _now() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------ identity providers


class IdentityProvider(Protocol):
    """Turns a bearer credential into a principal: None if the credential is not its kind;
    Unauthorized if it is but is not (or no longer) good."""

    def identify(self, bearer: str, at: datetime) -> Principal | None: ...


class LocalTokens:
    """Tokens made by `virtfleet token create`, checked against the store on every call."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def identify(self, bearer: str, at: datetime) -> Principal | None:
        parts = split_token(bearer)
        if parts is None:
            return None
        token_id, secret = parts
        cred = self.store.credential(token_id)
        # Same answer whatever is wrong, so a guesser learns nothing; the hash is compared even
        # for an unknown id, so timing does not tell ids apart either.
        expected = cred.secret_hash if cred is not None else hash_secret("")
        good = secrets.compare_digest(hash_secret(secret), expected)
        if cred is None or not good or cred.user.disabled or cred.token.state(at) != "active":
            raise Unauthorized("bad, expired or revoked token")
        return Principal(cred.user.name, f"token {token_id}",
                         tuple(Grant(g.role, g.scope_kind, g.scope_name) for g in cred.grants))


class Authenticator:
    """Asks each provider in turn; the first that knows the credential decides."""

    def __init__(self, providers: Sequence[IdentityProvider]) -> None:
        self.providers = tuple(providers)

    def authenticate(self, bearer: str, at: datetime | None = None) -> Principal:
        if not bearer:
            raise Unauthorized("missing token: send 'Authorization: Bearer TOKEN'")
        when = at or _now()
        for provider in self.providers:
            found = provider.identify(bearer, when)
            if found is not None:
                return found
        raise Unauthorized("bad, expired or revoked token")


# ------------------------------------------------------------------ requests and results


@dataclass(frozen=True)
class AddUser:
    name: str
    display_name: str = ""

    def check(self) -> None:
        check_name("name", self.name)
        if len(self.display_name) > MAX_DESCRIPTION or not self.display_name.isprintable():
            raise InvalidInput("display_name", f"at most {MAX_DESCRIPTION} printable characters")


@dataclass(frozen=True)
class CreateToken:
    """A new token for `user`, good for `expires_in` (None: until revoked)."""

    user: str
    description: str = ""
    expires_in: timedelta | None = timedelta(days=90)

    def check(self) -> None:
        check_name("user", self.user)
        if len(self.description) > MAX_DESCRIPTION or not self.description.isprintable():
            raise InvalidInput("description",
                               f"at most {MAX_DESCRIPTION} printable characters")
        if self.expires_in is not None and not (
                timedelta(minutes=1) <= self.expires_in <= MAX_TOKEN_LIFE):
            raise InvalidInput("expires_in", "must be from 1 minute to 10 years (or never)")


@dataclass(frozen=True)
class NewToken:
    """A token just made: `token` is the only time the secret is seen."""

    record: TokenRecord
    token: str

    def as_json(self) -> dict[str, object]:
        return {**self.record.as_json(), "token": self.token}


@dataclass(frozen=True)
class GrantRequest:
    """`role` for `user` on `scope`: all, site:NAME, pod:NAME or group:NAME."""

    user: str
    role: str
    scope: str

    def check(self) -> tuple[str, str]:
        check_name("user", self.user)
        check_role(self.role)
        return parse_scope(self.scope)


# ------------------------------------------------------------------ the service


class AccessService:
    def __init__(self, store: Store) -> None:
        self.store = store

    def __enter__(self) -> AccessService:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def authenticator(self, *more: IdentityProvider) -> Authenticator:
        """Local tokens, then `more` (the controller's own token, a directory)."""
        return Authenticator((LocalTokens(self.store), *more))

    # -- users --------------------------------------------------------------------------------

    def add_user(self, req: AddUser) -> UserRecord:
        req.check()
        return self.store.add_user(req.name, _now(), display_name=req.display_name)

    def users(self) -> list[UserRecord]:
        return self.store.users()

    def set_disabled(self, name: str, disabled: bool = True) -> UserRecord:
        """Disable a user (none of its tokens works from now on), or enable it again."""
        check_name("name", name)
        return self.store.set_user_disabled(name, disabled, _now())

    # -- tokens -------------------------------------------------------------------------------

    def create_token(self, req: CreateToken) -> NewToken:
        req.check()
        token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        at = _now()
        expires = at + req.expires_in if req.expires_in is not None else None
        rec = self.store.add_token(req.user, token_id, hash_secret(secret), at,
                                   description=req.description, expires_at=expires)
        return NewToken(rec, f"{TOKEN_PREFIX}{token_id}_{secret}")

    def tokens(self, user: str | None = None) -> list[TokenRecord]:
        if user is not None:
            check_name("user", user)
        return self.store.tokens(user)

    def revoke_token(self, token_id: str) -> tuple[TokenRecord, bool]:
        """The token, revoked now (or already); whether this call revoked it."""
        if not re.fullmatch(r"[0-9a-f]{12}", token_id):
            raise InvalidInput("id", "a token id is 12 hexadecimal digits (see 'virtfleet "
                               "token list'); never give the token itself")
        return self.store.revoke_token(token_id, _now())

    # -- grants -------------------------------------------------------------------------------

    def add_grant(self, req: GrantRequest) -> GrantRecord:
        """The scope must name a site, pod or host group of the inventory."""
        kind, name = req.check()
        if kind != "all":
            self.store.hypervisors(**{kind: name})  # NotFound naming it if it is not there
        return self.store.add_grant(req.user, req.role, kind, name, _now())

    def grants(self, user: str | None = None) -> list[GrantRecord]:
        if user is not None:
            check_name("user", user)
        return self.store.grants(user)

    def remove_grant(self, req: GrantRequest) -> GrantRecord:
        kind, name = req.check()
        return self.store.remove_grant(req.user, req.role, kind, name)
