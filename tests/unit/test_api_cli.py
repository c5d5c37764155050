"""`virtfleet user|token|grant|audit`, and the CLI's own audit hook, as a user runs them."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest
import yaml

from .cli import run
from .nodes import node_uri


@pytest.fixture
def db(tmp_path: Path) -> Path:
    fleet = {"sites": [{"name": "oregon", "pods": [{"name": "or-pod1", "hypervisors": [
        {"name": "hv1", "uri": node_uri(tmp_path, "two-vms.xml", "hv1.xml"),
         "groups": ["web"]}]}]}]}
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    path = tmp_path / "store.db"
    assert run(path, "apply", "-f", str(tmp_path / "fleet.yaml")).code == 0
    return path


def test_a_token_is_printed_once_alone_and_never_listed(db: Path) -> None:
    assert run(db, "user", "add", "alice", "--display-name", "Alice A").code == 0
    made = run(db, "token", "create", "alice", "--expires", "2w", "--description", "ci")
    assert made.code == 0
    token = made.out.strip()
    assert made.out == token + "\n" and token.startswith("vf_")  # T=$(virtfleet token create)
    assert "shown only now" in made.err and token not in made.err
    listed = run(db, "token", "list", "--json")
    _vf, token_id, secret = token.split("_", 2)  # the secret may hold "_" itself
    assert token_id == listed.json()[0]["id"]
    assert secret not in listed.out + run(db, "token", "list").out
    assert token not in run(db, "audit", "--json").out  # nor in what the hook recorded
    r = run(db, "token", "revoke", token)
    assert r.code == 2 and "never give the token itself" in r.err


@pytest.mark.parametrize(("args", "named"), [
    (("grant", "add", "alice", "operator", "--scope", "zone:x"), "--scope"),
    (("grant", "add", "alice", "root", "--scope", "all"), "ROLE"),
    (("token", "create", "alice", "--expires", "soon"), "--expires"),
    (("user", "add", "bad name"), "NAME"),
    (("audit", "--since", "yesterday"), "--since"),
])
def test_bad_input_names_the_option(db: Path, args: tuple[str, ...], named: str) -> None:
    assert run(db, "user", "add", "alice").code == 0
    r = run(db, *args)
    assert r.code == 2 and named in r.err and len(r.err.strip().splitlines()) == 1, r.err


def test_cli_writes_are_audited_under_the_os_user_and_reads_are_not(db: Path) -> None:
    me = getpass.getuser()
    before = run(db, "audit", "--json").json()
    for read in (("list",), ("host", "list"), ("user", "list"), ("audit",), ("vm", "dominfo",
                                                                            "vm1.example.com")):
        assert run(db, *read).code in (0, 1)
    assert run(db, "audit", "--json").json() == before

    assert run(db, "vm", "start", "vm1.example.com").code == 4  # already running
    assert run(db, "vm", "destroy", "vm1.example.com").code == 0
    entries = run(db, "audit", "--json", "--user", me, "--target", "vm1.example.com").json()
    assert [(e["action"], e["result"], e["status"], e["via"]) for e in entries] == [
        ("vm start", "failed", 4, "cli"), ("vm destroy", "ok", 0, "cli")]
    assert entries[0]["detail"] == "hv1/vm1.example.com: domain is already running"
    assert entries[1]["target"] == "vm:vm1.example.com"
    assert run(db, "audit", "--json", "--since", "1h").json()[-1]["action"] == "vm destroy"
    assert run(db, "audit", "--json", "--user", "nobody-else").json() == []


def test_prune_removes_only_old_entries_and_is_itself_recorded(db: Path) -> None:
    assert run(db, "user", "add", "bob").code == 0
    r = run(db, "audit", "prune", "--before", "1d", "--json")
    assert r.code == 0 and r.json()["removed"] == 0
    actions = [e["action"] for e in run(db, "audit", "--json").json()]
    assert actions[-2:] == ["user add", "audit prune"]
    r = run(db, "audit", "prune", "--before", "2999-01-01")
    assert r.code == 2 and "--before" in r.err


def test_a_store_that_cannot_be_opened_is_one_line_not_two(tmp_path: Path) -> None:
    r = run("sqlite:////nonexistent-dir/x/store.db", "user", "add", "alice")
    assert r.code != 0 and len(r.err.strip().splitlines()) == 1, r.err


def test_a_bad_option_of_a_write_is_recorded_denied_with_its_message(db: Path) -> None:
    """A usage error is answered by the typer root (cli/app.py), which returns 2 instead of
    raising: the hook still records why."""
    r = run(db, "vm", "start", "--bogus", "x")
    assert r.code == 2 and "No such option: --bogus" in r.err
    entry = run(db, "audit", "--json").json()[-1]
    assert (entry["action"], entry["result"], entry["status"]) == ("vm start", "denied", 2)
    assert entry["detail"].startswith("No such option: --bogus")
