"""Alembic environment for the virtfleet store.

virtfleet runs this itself (Store() upgrades to head): it passes an open connection, already
inside a transaction that holds the migration lock, as config.attributes["connection"]. For
writing a new revision by hand, `alembic -x url=sqlite:///dev.db revision --autogenerate` also
works with a Config whose script_location is this directory.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from virtfleet.inventory.tables import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER much
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("give a database URL: alembic -x url=sqlite:///path.db ...")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("virtfleet migrations run online only")
run_migrations_online()
