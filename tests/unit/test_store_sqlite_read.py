"""The CLI's quick reads of a SQLite store (inventory/sqlite_read.py and the modules over it)
return what the Store returns, refuse what they cannot read so the Store answers instead, and
keep SQLAlchemy out of a cold `list`."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from virtfleet.errors import NotFound
from virtfleet.inventory.fleetfile import load_fleet
from virtfleet.inventory.store import Store
from virtfleet.inventory.topology_sqlite import hypervisors_from_sqlite

from .nodes import refused_port
from .test_cli_startup import heavy, probe

SCOPES = [{}, {"site": "oregon"}, {"site": "texas"}, {"pod": "or-p2"}, {"host": "tx1"},
          {"group": "web"}, {"group": "db"}, {"site": "oregon", "group": "web"},
          {"pod": "or-p1", "host": "tx1"}, {"site": "texas", "pod": "or-p1"}]
MISSING = [{"site": "nowhere"}, {"pod": "nopod"}, {"host": "nohost"}, {"group": "nogroup"},
           {"site": "oregon", "pod": "nopod"}]


PORT = refused_port()
ADDRESSES = {"or1": 11, "or2": 12, "or3": 13, "or9": 19, "tx1": 21}


def _hv(name: str, *groups: str, maintenance: bool = False) -> dict[str, object]:
    """A hypervisor on a loopback address where nothing listens."""
    return {"name": name, "uri": f"qemu+tcp://127.0.0.{ADDRESSES[name]}:{PORT}/system",
            "groups": list(groups), "maintenance": maintenance}


@pytest.fixture
def db(tmp_path: Path) -> str:
    fleet = tmp_path / "fleet.yaml"
    def pod(name: str, *hosts: dict[str, object]) -> dict[str, object]:
        return {"name": name, "insecure_transport": True, "hypervisors": list(hosts)}

    fleet.write_text(yaml.safe_dump({"sites": [
        {"name": "texas", "pods": [pod("tx-p1", _hv("tx1", "db"))]},
        {"name": "oregon", "pods": [
            pod("or-p2", _hv("or9", "web", "db"), _hv("or3")),
            pod("or-p1", _hv("or2", "db", "web", maintenance=True), _hv("or1", "web"))]}]}))
    url = f"sqlite:///{tmp_path / 's.db'}"
    with Store(url) as store:
        store.apply(load_fleet(fleet))
        store.start_maintenance("or3", datetime(2026, 12, 1, tzinfo=UTC), "here", 1, "disk")
    return url


@pytest.mark.parametrize("scope", SCOPES, ids=str)
def test_the_hypervisors_are_the_stores(db: str, scope: dict[str, str]) -> None:
    with Store(db) as store:
        expected = store.hypervisors(**scope)
    assert hypervisors_from_sqlite(db, **scope) == expected
    if not scope:  # the fixture's facts are in it: order, groups in order, both maintenances
        assert [(h.name, h.groups, h.maintenance) for h in expected] == [
            ("or1", ("web",), False), ("or2", ("db", "web"), True), ("or3", (), True),
            ("or9", ("web", "db"), False), ("tx1", ("db",), False)]


@pytest.mark.parametrize("scope", MISSING, ids=str)
def test_a_filter_naming_nothing_is_the_stores_error(db: str, scope: dict[str, str]) -> None:
    with Store(db) as store, pytest.raises(NotFound) as expected:
        store.hypervisors(**scope)
    with pytest.raises(NotFound) as got:
        hypervisors_from_sqlite(db, **scope)
    assert got.value.message == expected.value.message


def test_what_it_cannot_read_is_left_to_the_store(db: str, tmp_path: Path) -> None:
    for url in ("postgresql+psycopg://u@127.0.0.1:1/x", f"sqlite:///{tmp_path / 'none.db'}"):
        with pytest.raises(sqlite3.Error):
            hypervisors_from_sqlite(url)
    path = db.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:  # a store one migration behind
        conn.execute("UPDATE alembic_version SET version_num = '0001'")
    with pytest.raises(sqlite3.Error, match="not at migration"):
        hypervisors_from_sqlite(db)


def test_a_cold_list_never_imports_sqlalchemy(db: str) -> None:
    """Each host is refused (nothing listens there), so this is the whole cold path."""
    path = db.removeprefix("sqlite:///")
    code, out, err, mods = probe(["--db", path, "list", "--live", "--json", "--pod", "or-p2"],
                                 {"VIRTFLEET_CONNECT_TIMEOUT": "1"})
    assert code == 1 and out.strip() == "[]" and "or9" in err and "or3" in err
    assert "sqlalchemy" not in {m.split(".")[0] for m in heavy(mods)}
