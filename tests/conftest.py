"""Shared fixtures.

store_url: a database URL for a fresh, empty store, once on SQLite (a file in tmp_path) and once
on PostgreSQL (a new database per test on the server named by VIRTFLEET_TEST_PG_URL; see
scripts/start-services.sh). Without that variable the PostgreSQL case is skipped, unless
VIRTFLEET_REQUIRE_PG=1 (as in CI), where it fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

PG_URL_ENV = "VIRTFLEET_TEST_PG_URL"
REQUIRE_PG_ENV = "VIRTFLEET_REQUIRE_PG"


def _postgres_url() -> Iterator[str]:
    base = os.environ.get(PG_URL_ENV, "")
    if not base:
        hint = f"{PG_URL_ENV} is not set (run `make services`, then `. ./.test-env`)"
        if os.environ.get(REQUIRE_PG_ENV) == "1":
            pytest.fail(f"{REQUIRE_PG_ENV}=1 but {hint}", pytrace=False)
        pytest.skip(hint)
    url = make_url(base)
    # A database of its own per test: clean schema, and test runs that overlap cannot collide.
    name = f"vft_{os.getpid()}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        except SQLAlchemyError as exc:
            pytest.fail(f"cannot create a test database on {PG_URL_ENV}: {exc}", pytrace=False)
        yield url.set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        yield from _postgres_url()
