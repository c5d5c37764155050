"""`virtfleet user|token|grant ...`: who may use the controller's API and what they may do
there, through the access service (fleet/access.py), on the store directly (no controller
needed). A token is printed once, on stdout alone (so `T=$(virtfleet token create alice)`
works); only its hash is kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.fields import options_named
from virtfleet.cli.options import Json
from virtfleet.cli.output import emit, emit_json, table, warn
from virtfleet.errors import InvalidInput

if TYPE_CHECKING:
    from virtfleet.fleet.access import AccessService

user_app = typer.Typer(no_args_is_help=True, help="API users (local; a directory later).")
token_app = typer.Typer(no_args_is_help=True, help="API tokens: shown once, stored hashed.")
grant_app = typer.Typer(no_args_is_help=True,
                        help="Roles (viewer, operator, admin) on all, a site, a pod or a group.")

FLAGS = {"name": "NAME", "user": "USER", "role": "ROLE", "scope": "--scope",
         "expires_in": "--expires", "description": "--description",
         "display_name": "--display-name", "id": "ID"}
UserArg = Annotated[str, typer.Argument(metavar="USER", help="The user's name.")]
UserOpt = Annotated[str | None, typer.Option("--user", help="Only this user's.")]
RoleArg = Annotated[str, typer.Argument(metavar="ROLE", help="viewer, operator or admin.")]
ScopeOpt = Annotated[str, typer.Option(
    "--scope", help="all, site:NAME, pod:NAME or group:NAME (an application group: a host "
    "group's hypervisors and their VMs).")]
_DURATION = re.compile(r"(\d+)([mhdw])")
_UNIT = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@contextmanager
def _access(ctx: typer.Context) -> Iterator[AccessService]:
    from virtfleet.fleet.access import AccessService

    with AccessService(app_context(ctx).store()) as service, options_named(FLAGS):
        yield service


def duration(text: str, field: str) -> timedelta | None:
    """'90d', '12h', '30m', '2w'; 'never' is None."""
    if text == "never":
        return None
    m = _DURATION.fullmatch(text)
    if m is None:
        raise InvalidInput(field, f"{text!r} is not a duration such as 30m, 12h, 90d, 2w or "
                           "never")
    return timedelta(**{_UNIT[m[2]]: int(m[1])})


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value is not None else "-"


# ------------------------------------------------------------------ users


@user_app.command("add")
def user_add(ctx: typer.Context, name: UserArg, display_name: Annotated[str, typer.Option(
        "--display-name", help="A full name, for people reading `user list`.")] = "",
             json: Json = False) -> None:
    """Add a local user (then give it grants and a token)."""
    from virtfleet.fleet.access import AddUser

    with _access(ctx) as access:
        made = access.add_user(AddUser(name, display_name))
    if json:
        emit_json(made.as_json())
    else:
        emit(f"User '{made.name}' added\n")


@user_app.command("list")
def user_list(ctx: typer.Context, json: Json = False) -> None:
    """Every user, and whether it is disabled."""
    with _access(ctx) as access:
        users = access.users()
    if json:
        emit_json([u.as_json() for u in users])
        return
    emit(table(["Name", "Display name", "Source", "State", "Created (UTC)"],
               [(u.name, u.display_name or "-", u.source,
                 "disabled" if u.disabled else "enabled", _when(u.created_at))
                for u in users]))


@user_app.command("disable")
def user_disable(ctx: typer.Context, name: UserArg) -> None:
    """Disable a user: none of its tokens works from the next request on."""
    with _access(ctx) as access:
        access.set_disabled(name, True)
    emit(f"User '{name}' disabled; its tokens no longer work\n")


@user_app.command("enable")
def user_enable(ctx: typer.Context, name: UserArg) -> None:
    """Enable a disabled user again (its tokens that are not revoked or expired work again)."""
    with _access(ctx) as access:
        access.set_disabled(name, False)
    emit(f"User '{name}' enabled\n")


# ------------------------------------------------------------------ tokens


@token_app.command("create")
def token_create(ctx: typer.Context, user: UserArg,
                 description: Annotated[str, typer.Option(
                     "--description", help="What it is for (a script, a host).")] = "",
                 expires: Annotated[str, typer.Option(
                     "--expires", help="How long it works: 30m, 12h, 90d, 2w, or never.")]
                 = "90d",
                 json: Json = False) -> None:
    """Make a token for USER. It is printed once, on stdout alone; keep it safe."""
    from virtfleet.fleet.access import CreateToken

    with options_named(FLAGS):
        life = duration(expires, "expires_in")
    with _access(ctx) as access:
        made = access.create_token(CreateToken(user, description, life))
    if json:
        emit_json(made.as_json())
        return
    rec = made.record
    warn(f"token {rec.id} for {rec.user}, "
         + (f"expires {_when(rec.expires_at)} UTC" if rec.expires_at else "never expires")
         + "; it is shown only now")
    emit(made.token + "\n")


@token_app.command("list")
def token_list(ctx: typer.Context, user: UserOpt = None, json: Json = False) -> None:
    """Tokens by id, with their user and state (never the token itself)."""
    with _access(ctx) as access:
        tokens = access.tokens(user)
    now = datetime.now(UTC)
    if json:
        emit_json([t.as_json(now) for t in tokens])
        return
    emit(table(["Id", "User", "State", "Created (UTC)", "Expires (UTC)", "Description"],
               [(t.id, t.user, t.state(now), _when(t.created_at), _when(t.expires_at),
                 t.description or "-") for t in tokens]))


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, token_id: Annotated[str, typer.Argument(
        metavar="ID", help="The token's id (see `token list`).")]) -> None:
    """Revoke a token: the next request with it is refused."""
    with _access(ctx) as access:
        rec, now_revoked = access.revoke_token(token_id)
    emit(f"Token {rec.id} of {rec.user} "
         + ("revoked\n" if now_revoked else f"was already revoked at {_when(rec.revoked_at)}\n"))


# ------------------------------------------------------------------ grants


@grant_app.command("add")
def grant_add(ctx: typer.Context, user: UserArg, role: RoleArg, scope: ScopeOpt) -> None:
    """Give USER the ROLE on a scope ("web operators may restart VMs of group web" is
    `grant add alice operator --scope group:web`)."""
    from virtfleet.fleet.access import GrantRequest

    with _access(ctx) as access:
        made = access.add_grant(GrantRequest(user, role, scope))
    emit(f"Granted {made.role} on {made.scope} to '{made.user}'\n")


@grant_app.command("list")
def grant_list(ctx: typer.Context, user: UserOpt = None, json: Json = False) -> None:
    """Every grant (or one user's): user, role, scope."""
    with _access(ctx) as access:
        grants = access.grants(user)
    if json:
        emit_json([g.as_json() for g in grants])
        return
    emit(table(["User", "Role", "Scope", "Granted (UTC)"],
               [(g.user, g.role, g.scope, _when(g.created_at)) for g in grants]))


@grant_app.command("remove")
def grant_remove(ctx: typer.Context, user: UserArg, role: RoleArg, scope: ScopeOpt) -> None:
    """Take a grant back: from the next request on it no longer counts."""
    from virtfleet.fleet.access import GrantRequest

    with _access(ctx) as access:
        gone = access.remove_grant(GrantRequest(user, role, scope))
    emit(f"Removed {gone.role} on {gone.scope} from '{gone.user}'\n")
