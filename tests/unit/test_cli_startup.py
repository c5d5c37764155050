"""The CLI's start-up: commands imported only when named, the quick paths (cli/quick.py) kept
equal to the typer commands they stand for, and the root's help equal to typer's own.

The figures are bench/cli_startup.py's; these tests check what is imported and that every
path answers alike, never how fast.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import re
import subprocess
import sys
import typing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from virtfleet.cli import app as cli_app
from virtfleet.cli.commands import COMMANDS, mount
from virtfleet.cli.quick import QUICK
from virtfleet.inventory.records import InstallPlan
from virtfleet.inventory.store import Store

from .cli import run
from .nodes import node_uri, refused_port

# Run the CLI in a fresh interpreter and report what it imported, on stderr, as JSON.
PROBE = """\
import json, sys
from virtfleet.cli.main import main
try:
    main()
finally:
    sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
"""
# Loading typer, rich's help, the store or libvirt is what a quick path exists to avoid.
HEAVY = ("typer", "click", "rich", "pydantic", "sqlalchemy", "alembic", "libvirt", "lxml",
         "yaml", "fastapi", "uvicorn", "gi")


def probe(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str, set[str]]:
    full = {**os.environ, **(env or {})}
    full.pop("COLUMNS", None)
    p = subprocess.run([sys.executable, "-c", PROBE, *args], env=full, capture_output=True,
                       text=True, timeout=120, check=False)
    err, _, mods = p.stderr.rpartition("\nMODULES ")
    return p.returncode, p.stdout, err, set(json.loads(mods))


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in HEAVY}


def commands_of(modules: set[str]) -> set[str]:
    """The command modules (cli/ modules named by the table) among `modules`."""
    named = {e.module for e in COMMANDS.values()} | {
        m for e in COMMANDS.values() for _s, m, _f in e.extra}
    return {m.removeprefix("virtfleet.cli.") for m in modules} & named


# --------------------------------------------------------------------------- the table


def test_each_root_help_line_is_the_commands_own() -> None:
    for name, entry in COMMANDS.items():
        command = cli_app._build(name)
        assert (command.short_help or command.help) == entry.help, name


def test_groups_carry_the_commands_added_to_them() -> None:
    for name, entry in COMMANDS.items():
        if entry.extra:
            have = set(cli_app._build(name).commands)
            assert {sub for sub, _m, _f in entry.extra} <= have, name


def _command_functions() -> set[object]:
    """Every function under cli/ that typer could run as a command: one with a parameter
    declared as a typer option or argument."""
    from typer.models import ArgumentInfo, OptionInfo

    found: set[object] = set()
    for info in pkgutil.iter_modules([str(Path(cli_app.__file__).parent)]):
        module = importlib.import_module(f"virtfleet.cli.{info.name}")
        for fn in vars(module).values():
            if not inspect.isfunction(fn) or fn.__module__ != module.__name__:
                continue
            try:
                hints = typing.get_type_hints(fn, include_extras=True)
            except NameError:  # names only for the type checker: typer could not run it
                continue
            if any(isinstance(meta, OptionInfo | ArgumentInfo)
                   for hint in hints.values() for meta in getattr(hint, "__metadata__", ())):
                found.add(fn)
    return found


def _registered(app: typer.Typer) -> set[object]:
    """The functions a Typer app runs: its commands, its callback, its groups' in turn."""
    got = {c.callback for c in app.registered_commands}
    if app.registered_callback is not None:
        got.add(app.registered_callback.callback)
    for group in app.registered_groups:
        assert group.typer_instance is not None
        got |= _registered(group.typer_instance)
    return got


def test_the_table_names_every_command_module() -> None:
    """A command function under cli/ that the table (cli/commands.py) does not reach is one
    that `virtfleet` no longer offers: a new command module needs its line in COMMANDS."""
    eager = typer.Typer()
    for name in COMMANDS:
        mount(name, eager)
    missing = _command_functions() - _registered(eager) - _registered(cli_app.app)
    assert not missing, sorted(f"{f.__module__}.{f.__qualname__}" for f in missing)  # type: ignore[attr-defined]


def _tree(command: Any, path: tuple[str, ...] = ()) -> list[str]:
    subs = getattr(command, "commands", None)
    if subs is None:
        return [" ".join(path)]
    return [line for name in sorted(subs) for line in _tree(subs[name], (*path, name))]


def test_help_offers_the_commands_it_offered_before() -> None:
    """The lazy root answers the same command paths as the eager root it replaced (the golden
    list was taken from that root); a command added on purpose adds its lines there."""
    import typer.main

    golden = (Path(__file__).parent / "golden" / "cli_commands.txt").read_text().split("\n")
    assert _tree(typer.main.get_command(cli_app.app)) == [g for g in golden if g]


ROOT_HELP_RUN = """\
import sys
sys.argv[0] = "virtfleet"
if sys.argv[1] == "typer":
    import typer.main
    from virtfleet.cli.app import app
    from virtfleet.cli.commands import COMMANDS, mount
    for name in COMMANDS:  # everything imported: typer's help from the real commands
        mount(name, app)
    typer.main.get_command(app)(["--help"], prog_name="virtfleet", standalone_mode=False)
else:
    from virtfleet.cli.roothelp import print_root_help
    print_root_help()
"""


@pytest.mark.parametrize("env", [{"COLUMNS": "80"}, {"COLUMNS": "120"}, {"COLUMNS": "60"},
                                 {"COLUMNS": "100", "FORCE_COLOR": "1"},
                                 {"COLUMNS": "90", "TERMINAL_WIDTH": "70"}])
def test_root_help_is_what_typer_draws_from_the_real_commands(env: dict[str, str]) -> None:
    full = {k: v for k, v in os.environ.items()
            if k not in ("FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS", "TERMINAL_WIDTH")}
    outs = [subprocess.run([sys.executable, "-c", ROOT_HELP_RUN, how], env={**full, **env},
                           capture_output=True, text=True, timeout=120, check=True).stdout
            for how in ("typer", "quick")]
    plain = re.sub(r"\x1b\[[0-9;]*m", "", outs[0])
    assert all(f" {name} " in plain for name in COMMANDS)
    assert ("\x1b[" in outs[0]) == ("FORCE_COLOR" in env)
    assert outs[1] == outs[0]


EVERY_HELP = """\
import sys
import typer.main
from virtfleet.cli.app import app
sys.argv[0] = "virtfleet"
root = typer.main.get_command(app)

def walk(command, path):
    subs = getattr(command, "commands", None)
    yield path, command
    for name in sorted(subs or ()):
        yield from walk(subs[name], [*path, name])

for path, command in walk(root, []):
    opts = sorted(o for p in command.params for o in (*p.opts, *p.secondary_opts)
                  if o.startswith("--"))
    print("\\x00" + " ".join(path) + "\\x00" + " ".join(opts))
    root([*path, "--help"], prog_name="virtfleet", standalone_mode=False)
"""


@pytest.mark.parametrize("env", [{}, {"COLUMNS": "60"}], ids=["no-terminal", "narrow"])
def test_no_help_is_cut(env: dict[str, str]) -> None:
    """Regression: with no terminal, help was drawn at 80 columns and rich ended what did not
    fit with '…' (`--os-variant,--osin…`, `VIRTFLEET_GRAPHICS_…`). Every command's help, the
    root's and each group's, is drawn wide enough (cli/helpwidth.py) and folds rather than
    cuts; with no terminal, every option's name is there whole."""
    full = {k: v for k, v in os.environ.items()
            if k not in ("COLUMNS", "TERMINAL_WIDTH", "FORCE_COLOR")}
    out = subprocess.run([sys.executable, "-c", EVERY_HELP], env={**full, **env},
                         stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=300, check=True).stdout
    parts = out.split("\x00")[1:]
    helps = {parts[i]: (opts.split(), text) for i in range(0, len(parts), 2)
             for opts, _nl, text in [parts[i + 1].partition("\n")]}
    assert len(helps) > 100
    for path, (opts, text) in helps.items():
        assert "…" not in text, (path, text)
        if not env:
            assert max(map(len, text.splitlines())) == 120, path
            assert all(o in text for o in opts), (path, opts)


# --------------------------------------------------------------------------- lazy loading


def test_root_help_imports_no_command_and_no_typer() -> None:
    code, out, _err, mods = probe(["--help"])
    assert code == 0 and all(f" {name} " in out for name in COMMANDS)
    assert commands_of(mods) == set() and "typer" not in mods and "pydantic" not in mods


def test_bare_virtfleet_prints_the_help_with_exit_2() -> None:
    code, out, err, _mods = probe([])
    assert code == 2 and "Usage: " in out and " lab " in out and err == ""


def test_a_command_imports_its_own_module_only(tmp_path: Path) -> None:
    code, out, _err, mods = probe(["vm", "--help"])
    assert code == 0 and " clone " in out and " migrate " in out
    # vm's group carries clone (cli/template.py) and migrate (cli/migrate.py, which needs
    # cli/plan.py's policy option)
    assert commands_of(mods) == {"vm", "template", "migrate", "plan"}
    code, _out, _err, mods = probe(["--db", str(tmp_path / "s.db"), "ops", "list", "--json"])
    assert code == 0 and commands_of(mods) == {"ops"}


def test_the_typer_path_still_answers_a_bad_command() -> None:
    code, _out, err, mods = probe(["lst"])
    assert code == 2 and "No such command 'lst'. Did you mean 'list'?" in err
    assert commands_of(mods) == set()  # suggestions come from the table's names


# --------------------------------------------------------------------------- quick paths


@pytest.mark.parametrize("path", list(QUICK))
def test_quick_table_is_the_typer_commands(path: tuple[str, ...]) -> None:
    command = cli_app._build(path[0])
    for sub in path[1:]:
        command = command.commands[sub]
    options = [p for p in command.params if p.param_type_name == "option"]
    assert not [p for p in command.params if p.param_type_name == "argument"]
    assert {o for p in options if p.is_flag for o in p.opts} == QUICK[path].flags
    assert {o for p in options if not p.is_flag for o in p.opts} == QUICK[path].values
    assert all(not p.secondary_opts and not p.multiple for p in options)
    # the function the quick path calls takes the same parameters typer gives the command
    fn = QUICK[path].function()
    assert set(inspect.signature(fn).parameters) - {"actx"} == {p.name for p in options}


def _fleet(tmp_path: Path) -> Path:
    data = {"sites": [{"name": "oregon", "pods": [{"name": "or-pod1", "insecure_transport": True,
                                                   "hypervisors": [
        {"name": "hv1", "uri": node_uri(tmp_path, "two-vms.xml", "hv1.xml"), "groups": ["web"]},
        {"name": "hv2", "uri": node_uri(tmp_path, "two-vms.xml", "hv2.xml")},
        {"name": "dead", "uri": f"qemu+tcp://127.0.0.1:{refused_port()}/system"}]}]}]}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# The same command with the quick path switched off: typer parses it and calls the same function.
TYPER_RUN = ("from virtfleet.cli import quick\nfrom virtfleet.cli.main import main\n"
             "quick.run = lambda argv: None\nmain()\n")

QUICK_FORMS = [
    ["list", "--json"], ["list"], ["list", "--live", "--json"], ["list", "--cached"],
    ["list", "--cached", "--json", "--site", "oregon"], ["list", "--group=web", "--json"],
    ["list", "--host", "hv2", "--state", "running", "--json"], ["list", "--pod", "nope"],
    ["list", "--state", "bogus"], ["list", "--live", "--cached"], ["list", "--site="],
    ["boot", "status"], ["boot", "status", "--json"],
]


@pytest.mark.parametrize("args", QUICK_FORMS, ids=" ".join)
def test_quick_and_typer_paths_answer_alike(tmp_path: Path, args: list[str]) -> None:
    db = tmp_path / "store.db"
    assert run(db, "apply", "-f", str(_fleet(tmp_path))).code == 0
    assert run(db, "sync").code == 1  # the dead host; the others' VMs go into the store
    with Store(f"sqlite:///{db}") as store:
        store.plan_installs([InstallPlan("hv1", "52:54:00:00:00:01", "oregon", "or-pod1", "el9")],
                            datetime(2026, 12, 1, 1, 2, 3, 456_789, tzinfo=UTC))
    env = {**os.environ, "VIRTFLEET_DB": str(db)}
    env.pop("COLUMNS", None)
    code, out, err, mods = probe(args, {"VIRTFLEET_DB": str(db)})
    typer_run = subprocess.run([sys.executable, "-c", TYPER_RUN, *args], env=env,
                               capture_output=True, text=True, timeout=120, check=False)
    assert "typer" not in mods  # it took the quick path
    assert (code, _no_ages(out), err) == (typer_run.returncode, _no_ages(typer_run.stdout),
                                          typer_run.stderr)
    with_db = subprocess.run([sys.executable, "-c", PROBE, "--db", str(db), *args],
                             env={k: v for k, v in env.items() if k != "VIRTFLEET_DB"},
                             capture_output=True, text=True, timeout=120, check=False)
    assert (with_db.returncode, _no_ages(with_db.stdout)) == (code, _no_ages(out))


def _no_ages(table: str) -> str:
    """A table from the store ends each row with the reading's age, which moves on between
    two runs."""
    return re.sub(r"\s+(<1s|\d+[smh])$", "", table, flags=re.M)


def test_quick_path_leaves_unusual_forms_to_typer(tmp_path: Path) -> None:
    db = str(tmp_path / "store.db")
    for args in (["list", "--json", "--json"], ["list", "--site", "--json"], ["list", "--",
                 "--json"], ["list", "--json=1"], ["list", "extra"], ["list", "--help"],
                 ["boot", "status", "--site", "x"], ["--db", db, "--db", db, "list"]):
        _code, _out, _err, mods = probe(args, {"VIRTFLEET_DB": db})
        assert "typer" in mods, args
