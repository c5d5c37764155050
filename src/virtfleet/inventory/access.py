"""The store's part for API access: users, their tokens (hashed) and their grants.

One concern of the Store over StoreBase's transactions (store.py lists them all). Nothing
here decides who may do what: roles and scopes are fleet/roles.py's; this keeps the rows and
reads them back, each public method one transaction. A token is looked up by its public id
and read afresh on every request (`credential`), so a revoke or a disabled user takes effect
on the next call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, select, update

from virtfleet.errors import Conflict, NotFound
from virtfleet.inventory import tables as t
from virtfleet.inventory.base import StoreBase, utc


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class UserRecord:
    name: str
    display_name: str
    source: str  # local, ldap, oidc
    disabled: bool
    created_at: datetime
    disabled_at: datetime | None = None

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "display_name": self.display_name, "source": self.source,
                "disabled": self.disabled, "created_at": self.created_at.isoformat(),
                "disabled_at": _iso(self.disabled_at)}


@dataclass(frozen=True)
class TokenRecord:
    """A token as listed: never its secret, nor the secret's hash."""

    id: str
    user: str
    description: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def state(self, at: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= at:
            return "expired"
        return "active"

    def as_json(self, at: datetime | None = None) -> dict[str, object]:
        return {"id": self.id, "user": self.user, "description": self.description,
                "created_at": self.created_at.isoformat(), "expires_at": _iso(self.expires_at),
                "revoked_at": _iso(self.revoked_at),
                "state": self.state(at or datetime.now(UTC))}


@dataclass(frozen=True)
class GrantRecord:
    user: str
    role: str
    scope_kind: str  # all, site, pod, group
    scope_name: str  # '' for all
    created_at: datetime

    @property
    def scope(self) -> str:
        """As the command line writes it: all, site:oregon, pod:or-pod1, group:web."""
        return "all" if self.scope_kind == "all" else f"{self.scope_kind}:{self.scope_name}"

    def as_json(self) -> dict[str, object]:
        return {"user": self.user, "role": self.role, "scope": self.scope,
                "created_at": self.created_at.isoformat()}


@dataclass(frozen=True)
class Credential:
    """What one token stands for right now: its hash to compare, its user and grants."""

    secret_hash: str
    token: TokenRecord
    user: UserRecord
    grants: tuple[GrantRecord, ...]


def _user(row: Row[Any]) -> UserRecord:
    return UserRecord(row.name, row.display_name, row.source, bool(row.disabled),
                      row.created_at, row.disabled_at)


def _token(row: Row[Any], user: str) -> TokenRecord:
    return TokenRecord(row.id, user, row.description, row.created_at, row.expires_at,
                       row.revoked_at)


def _grant(row: Row[Any], user: str) -> GrantRecord:
    return GrantRecord(user, row.role, row.scope_kind, row.scope_name, row.created_at)


class AccessStore(StoreBase):
    """users, api_tokens and grants."""

    @staticmethod
    def _user_row(conn: Connection, name: str) -> Row[Any]:
        row = conn.execute(select(t.users).where(t.users.c.name == name)).first()
        if row is None:
            raise NotFound(f"user {name!r} does not exist (see 'virtfleet user list')")
        return row

    # -- users --------------------------------------------------------------------------------

    def add_user(self, name: str, at: datetime, *, display_name: str = "",
                 source: str = "local") -> UserRecord:
        when = utc(at, "at")
        with self._tx(f"add user {name!r}", write=True) as conn:
            if conn.execute(select(t.users.c.id).where(t.users.c.name == name)).first():
                raise Conflict(f"user {name!r} already exists")
            conn.execute(t.users.insert().values(name=name, display_name=display_name,
                                                 source=source, disabled=False,
                                                 created_at=when))
            return _user(self._user_row(conn, name))

    def users(self) -> list[UserRecord]:
        with self._tx("read users", write=False) as conn:
            return [_user(r) for r in conn.execute(select(t.users).order_by(t.users.c.name))]

    def user(self, name: str) -> UserRecord:
        with self._tx(f"read user {name!r}", write=False) as conn:
            return _user(self._user_row(conn, name))

    def set_user_disabled(self, name: str, disabled: bool, at: datetime) -> UserRecord:
        """Disable (every token of the user stops working) or enable again."""
        when = utc(at, "at")
        with self._tx(f"{'disable' if disabled else 'enable'} user {name!r}",
                      write=True) as conn:
            self._user_row(conn, name)
            conn.execute(update(t.users).where(t.users.c.name == name).values(
                disabled=disabled, disabled_at=when if disabled else None))
            return _user(self._user_row(conn, name))

    # -- tokens -------------------------------------------------------------------------------

    def add_token(self, user: str, token_id: str, secret_hash: str, at: datetime, *,
                  description: str = "", expires_at: datetime | None = None) -> TokenRecord:
        when = utc(at, "at")
        expires = utc(expires_at, "expires_at") if expires_at is not None else None
        with self._tx(f"add a token for {user!r}", write=True) as conn:
            row = self._user_row(conn, user)
            if row.disabled:
                raise Conflict(f"user {user!r} is disabled; enable it before giving it a token")
            conn.execute(t.api_tokens.insert().values(
                id=token_id, user_id=row.id, secret_hash=secret_hash, description=description,
                created_at=when, expires_at=expires))
            made = conn.execute(select(t.api_tokens)
                                .where(t.api_tokens.c.id == token_id)).one()
            return _token(made, user)

    def tokens(self, user: str | None = None) -> list[TokenRecord]:
        tk, u = t.api_tokens, t.users
        stmt = (select(tk, u.c.name.label("user_name")).join(u, u.c.id == tk.c.user_id)
                .order_by(u.c.name, tk.c.created_at))
        with self._tx("read tokens", write=False) as conn:
            if user is not None:
                self._user_row(conn, user)
                stmt = stmt.where(u.c.name == user)
            return [_token(r, r.user_name) for r in conn.execute(stmt)]

    def revoke_token(self, token_id: str, at: datetime) -> tuple[TokenRecord, bool]:
        """The token, revoked from `at` on; and whether it was this call that revoked it."""
        when = utc(at, "at")
        tk, u = t.api_tokens, t.users
        with self._tx(f"revoke token {token_id!r}", write=True) as conn:
            changed = conn.execute(update(tk).where(tk.c.id == token_id,
                                                    tk.c.revoked_at.is_(None))
                                   .values(revoked_at=when)).rowcount
            row = conn.execute(select(tk, u.c.name.label("user_name"))
                               .join(u, u.c.id == tk.c.user_id)
                               .where(tk.c.id == token_id)).first()
            if row is None:
                raise NotFound(f"no token {token_id!r} (see 'virtfleet token list')")
            return _token(row, row.user_name), bool(changed)

    def credential(self, token_id: str) -> Credential | None:
        """The token `token_id`, its user and grants, read now; None if there is none."""
        tk, u, g = t.api_tokens, t.users, t.grants
        with self._tx("check a token", write=False) as conn:
            row = conn.execute(
                select(tk, u.c.name.label("user_name"), u.c.display_name, u.c.source,
                       u.c.disabled, u.c.created_at.label("user_created_at"),
                       u.c.disabled_at).join(u, u.c.id == tk.c.user_id)
                .where(tk.c.id == token_id)).first()
            if row is None:
                return None
            grants = conn.execute(select(g).where(g.c.user_id == row.user_id)).all()
        user = UserRecord(row.user_name, row.display_name, row.source, bool(row.disabled),
                          row.user_created_at, row.disabled_at)
        return Credential(row.secret_hash, _token(row, row.user_name), user,
                          tuple(_grant(r, row.user_name) for r in grants))

    # -- grants -------------------------------------------------------------------------------

    def add_grant(self, user: str, role: str, scope_kind: str, scope_name: str,
                  at: datetime) -> GrantRecord:
        when = utc(at, "at")
        g = t.grants
        with self._tx(f"grant {role} to {user!r}", write=True) as conn:
            uid = self._user_row(conn, user).id
            if conn.execute(select(g.c.id).where(
                    g.c.user_id == uid, g.c.role == role, g.c.scope_kind == scope_kind,
                    g.c.scope_name == scope_name)).first() is not None:
                scope = "all" if scope_kind == "all" else f"{scope_kind}:{scope_name}"
                raise Conflict(f"user {user!r} already has {role} on {scope}")
            conn.execute(g.insert().values(user_id=uid, role=role, scope_kind=scope_kind,
                                           scope_name=scope_name, created_at=when))
        return GrantRecord(user, role, scope_kind, scope_name, when)

    def grants(self, user: str | None = None) -> list[GrantRecord]:
        g, u = t.grants, t.users
        stmt = (select(g, u.c.name.label("user_name")).join(u, u.c.id == g.c.user_id)
                .order_by(u.c.name, g.c.role, g.c.scope_kind, g.c.scope_name))
        with self._tx("read grants", write=False) as conn:
            if user is not None:
                self._user_row(conn, user)
                stmt = stmt.where(u.c.name == user)
            return [_grant(r, r.user_name) for r in conn.execute(stmt)]

    def remove_grant(self, user: str, role: str, scope_kind: str,
                     scope_name: str) -> GrantRecord:
        g = t.grants
        with self._tx(f"remove a grant of {user!r}", write=True) as conn:
            uid = self._user_row(conn, user).id
            where = (g.c.user_id == uid, g.c.role == role, g.c.scope_kind == scope_kind,
                     g.c.scope_name == scope_name)
            row = conn.execute(select(g).where(*where)).first()
            if row is None:
                scope = "all" if scope_kind == "all" else f"{scope_kind}:{scope_name}"
                raise NotFound(f"user {user!r} has no {role} grant on {scope} (see "
                               "'virtfleet grant list')")
            conn.execute(delete(g).where(*where))
            return _grant(row, user)
