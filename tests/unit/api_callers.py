"""The callers the API and console tests act as, each with the grant its tests rely on."""

from __future__ import annotations

from pathlib import Path

from .cli import run

# (user, role, scope): an admin, a viewer of everything, and an operator of group web only.
CALLERS = (("root", "admin", "all"), ("viewer", "viewer", "all"),
           ("webop", "operator", "group:web"))


def add_callers(db: Path) -> None:
    """Add each of CALLERS to the store at `db`, with its grant."""
    for user, role, scope in CALLERS:
        assert run(db, "user", "add", user).code == 0
        assert run(db, "grant", "add", user, role, "--scope", scope).code == 0
