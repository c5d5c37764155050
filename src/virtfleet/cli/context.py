"""What every command shares: the --db choice and the store it opens (lazily, once)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from virtfleet.config import db_url

if TYPE_CHECKING:  # neither is imported on the quick paths (cli/quick.py)
    import typer

    from virtfleet.inventory.store import Store


@dataclass
class AppContext:
    db: str | None = None
    _store: Store | None = field(default=None, repr=False)

    @property
    def db_url(self) -> str:
        return db_url(self.db)

    def store(self) -> Store:
        if self._store is None:
            from virtfleet.inventory.store import Store  # SQLAlchemy is slow to import

            self._store = Store(self.db_url)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def app_context(ctx: typer.Context) -> AppContext:
    root = ctx.find_root()
    if not isinstance(root.obj, AppContext):
        root.obj = AppContext()
    return root.obj
