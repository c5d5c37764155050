"""Every program src/, tests/ and bench/ run is in scripts/programs.txt, so `make deps` installs
its package and checks it is there. The scan reads the code, not this machine: a forgotten
package is caught on any machine, including one that happens to have it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.unit import external_programs as ep
from tests.unit.tools import VALIDATORS_ENV, require_tool

INSTALLER = ep.ROOT / "scripts" / "install-deps.sh"

# Programs known to be run, and one place each is run from: each needs a different part of the
# scan (a literal argv, a module constant, a dict of commands behind a function's return value,
# wrappers of wrappers, a which() loop, a helper that returns which()'s answer).
KNOWN = {
    ("qemu-img", "src/virtfleet/fleet/images.py"),        # QEMU_IMG constant, local argv
    ("dhcpd", "src/virtfleet/boot/validators.py"),      # COMMANDS[kind][0] via binary()
    ("kea-dhcp4", "src/virtfleet/boot/validators.py"),
    ("haproxy", "src/virtfleet/boot/validators.py"),
    ("ip", "src/virtfleet/lab/netns.py"),               # _ip() -> lab.run.run()
    ("nsenter", "src/virtfleet/lab/daemon.py"),         # argv variable -> _run_boot() -> run()
    ("virtlogd", "src/virtfleet/lab/nsboot.py"),        # _start() wrapper
    ("unshare", "src/virtfleet/lab/daemon.py"),         # comprehension over a tuple, which()
    ("virt-sysprep", "src/virtfleet/provision/guestfs.py"),
    ("getsebool", "src/virtfleet/fleet/storage_check.py"),
    ("virt-xml-validate", "tests/unit/test_pool_xml.py"),  # [require_tool(...), ...]
    ("mkfs.xfs", "tests/integration/test_storage.py"),
    ("qemu-system-x86_64", "tests/integration/test_netboot.py"),
    ("guestfish", "tests/integration/test_templates.py"),
    ("virsh", "tests/integration/test_lab.py"),
    ("virt-clone", "bench/clone.py"),                   # sh() wrapper in bench/
}

# Calls whose program the scan cannot read, each checked by hand. Keep this short: a new entry
# needs a reason, and an entry that no longer matches fails the test below.
OPAQUE_OK = {
    ("bench/common.py", "VF"): "virtfleet's own CLI in .venv/bin",
    ("bench/fleet_query.py", "VF"): "virtfleet's own CLI in .venv/bin",
    ("bench/controller_failover.py", "VF"): "virtfleet's own CLI in .venv/bin",
    ("bench/transport.py", "VF"): "virtfleet's own CLI in .venv/bin",
    ("bench/cli_startup.py", "VF"): "virtfleet's own CLI in .venv/bin",
    ("bench/cli_startup.py", "argv"): "one of the forms above it: VF, or python -c",
    ("bench/metrics.py", "VF"): "virtfleet's own CLI in .venv/bin",
    ("bench/metrics.py", "*argv"): "virtfleet serve (VF) or the bench's own python",
    ("bench/api.py", "VF"): "virtfleet's own CLI in .venv/bin",
    ("bench/ui.py", "VF"): "virtfleet's own CLI in .venv/bin",
    ("bench/scale.py", "VF"): "virtfleet's own CLI in .venv/bin",
    ("tests/unit/test_transport.py", "str(wrapper)"): "virtfleet's ssh wrapper: ssh -F (listed)",
    ("tests/unit/test_external_programs.py", "e.program"): "each program of the manifest",
    ("tests/unit/test_external_programs.py", "absent"): "a name that is on no machine",
    ("src/virtfleet/ha/fence.py", "agent"): "fence_ipmilan or fence_redfish (AGENTS)",
    ("src/virtfleet/ha/fence.py", "path"): "the agent that _which(agent) found",
    ("src/virtfleet/ha/ipmitool_env.py", "tool"): "ipmitool, named by fence.py in the shim's env",
}


@pytest.fixture(scope="module")
def scan() -> tuple[list[ep.Use], list[ep.Opaque]]:
    return ep.collect()


@pytest.fixture(scope="module")
def manifest() -> list[ep.Entry]:
    return ep.read_manifest()


def test_every_program_the_code_runs_is_in_the_manifest(
        scan: tuple[list[ep.Use], list[ep.Opaque]], manifest: list[ep.Entry]) -> None:
    listed = {e.program for e in manifest} | ep.own_scripts()
    missing = [u for u in scan[0] if u.program not in listed]
    assert not missing, ("programs run by the code but not in scripts/programs.txt (add each "
                         "with its Debian package):\n" + "\n".join(map(str, missing)))


def test_every_code_entry_of_the_manifest_is_still_run(
        scan: tuple[list[ep.Use], list[ep.Opaque]], manifest: list[ep.Entry]) -> None:
    found = {u.program for u in scan[0]}
    stale = [f"programs.txt:{e.line}: {e.program}" for e in manifest
             if e.by == "code" and e.program not in found]
    assert not stale, ("marked `code` but nothing in src/, tests/ or bench/ runs it (remove it, "
                       "or name who does run it):\n" + "\n".join(stale))
    wrong = [f"programs.txt:{e.line}: {e.program} ({e.by})" for e in manifest
             if e.by != "code" and e.program in found]
    assert not wrong, "run by the code, so mark it `code`:\n" + "\n".join(wrong)


def test_the_scan_finds_the_programs_known_to_be_run(
        scan: tuple[list[ep.Use], list[ep.Opaque]]) -> None:
    found = {(u.program, u.file) for u in scan[0]}
    assert KNOWN - found == set()
    assert len({u.program for u in scan[0]}) >= 30  # the whole estate, not a handful


def test_only_reviewed_calls_are_unreadable(scan: tuple[list[ep.Use], list[ep.Opaque]]) -> None:
    opaque = {(o.file, o.source) for o in scan[1]}
    new = sorted(str(o) for o in scan[1] if (o.file, o.source) not in OPAQUE_OK)
    assert not new, ("the scan cannot tell which program these run; name the program with a "
                     "literal or a constant, or review and add to OPAQUE_OK:\n" + "\n".join(new))
    assert set(OPAQUE_OK) <= opaque, f"OPAQUE_OK entries that no longer occur: " \
                                     f"{sorted(set(OPAQUE_OK) - opaque)}"


def test_the_manifest_is_well_formed(manifest: list[ep.Entry]) -> None:
    programs = [e.program for e in manifest]
    assert len(programs) == len(set(programs)), "a program is listed twice"
    for e in manifest:
        assert re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", e.package), f"line {e.line}: {e.package}"
        assert re.fullmatch(r"[A-Za-z0-9_.+-]+|/[^\s]+", e.program), f"line {e.line}"
        assert e.why.strip(), f"line {e.line}: say why it is needed"
    # the packages of the bug that started this list
    assert {("dnsmasq", "dnsmasq-base"), ("xmllint", "libxml2-utils")} \
        <= {(e.program, e.package) for e in manifest}


# --- the collector itself, on code written for it ---------------------------------------------

SNIPPETS = {
    "src/pkg/__init__.py": "",
    "src/pkg/runner.py": """\
        import subprocess
        from collections.abc import Sequence

        TOOL = "tool-const"

        def run(argv: Sequence[str], what: str) -> None:
            subprocess.run(list(argv), check=True)

        def run_twice(cmd: list[str]) -> None:
            run(cmd, "again")

        def prog_of(kind: str) -> str:
            return {"a": ("tool-dict-a", 1), "b": ("tool-dict-b", 2)}[kind][0]

        class Box:
            def exec(self, argv: list[str]) -> None:
                subprocess.run(argv, check=True)

            def go(self) -> None:
                self.exec(["tool-via-self"])
        """,
    "src/pkg/user.py": """\
        import os
        import shutil
        import subprocess as sp
        import sys
        from pkg import runner
        from pkg.runner import TOOL, run_twice

        def go(path: str) -> None:
            sp.check_output(["tool-literal", path])
            argv = [TOOL, "-x"]
            sp.Popen(argv)
            runner.run(("tool-via-wrapper", path), "w")
            run_twice(["tool-via-two-wrappers"])
            sp.run([runner.prog_of(path), path])
            for t in ("tool-loop-a", "tool-loop-b"):
                shutil.which(t)
            sp.run([sys.executable, "-c", "pass"])
            print(["not-a-program", path])
            sp.run(path.split())
            box = runner.Box()
            box.exec(["tool-via-method"])
            os.system("tool-in-shell --flag")
        """,
}


def test_the_collector_on_a_small_tree(tmp_path: Path) -> None:
    for rel, text in SNIPPETS.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(textwrap.dedent(text))
    uses, opaque = ep.collect(tmp_path, ("src",))
    assert {(u.program, u.file, u.line) for u in uses} == {
        ("tool-literal", "src/pkg/user.py", 9),
        ("tool-const", "src/pkg/user.py", 11),
        ("tool-via-wrapper", "src/pkg/user.py", 12),
        ("tool-via-two-wrappers", "src/pkg/user.py", 13),
        ("tool-dict-a", "src/pkg/user.py", 14),
        ("tool-dict-b", "src/pkg/user.py", 14),
        ("tool-loop-a", "src/pkg/user.py", 16),
        ("tool-loop-b", "src/pkg/user.py", 16),
        ("tool-via-method", "src/pkg/user.py", 21),
        ("tool-in-shell", "src/pkg/user.py", 22),
        ("tool-via-self", "src/pkg/runner.py", 20),
    }  # not "not-a-program" (printed, never run), nor sys.executable (ourselves)
    assert [str(o) for o in opaque] == ["src/pkg/user.py:19: path.split()"]


def test_a_scripts_helpers_beside_it_are_followed(tmp_path: Path) -> None:
    """A script's own directory is on sys.path: in bench/x.py, `from helpers import sh` is
    bench/helpers.py, so what x.py runs through sh() is seen."""
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "helpers.py").write_text(
        "import subprocess\n\n\ndef sh(argv: list[str]) -> None:\n"
        "    subprocess.run(argv, check=True)\n")
    (tmp_path / "bench" / "x.py").write_text("from helpers import sh\n\nsh([\"tool-beside\"])\n")
    uses, opaque = ep.collect(tmp_path, ("bench",))
    assert [(u.program, u.file) for u in uses] == [("tool-beside", "bench/x.py")]
    assert opaque == []


# --- this machine ------------------------------------------------------------------------------

def test_every_program_in_the_manifest_is_on_this_machine(manifest: list[ep.Entry]) -> None:
    """What `make deps` promises, checked again here; CI (VIRTFLEET_REQUIRE_VALIDATORS=1) fails
    on a gap, a developer's machine is told which packages it lacks."""
    absent = [f"{e.program} (package {e.package})" for e in manifest if not ep.resolve(e.program)]
    if absent:
        why = "not on this machine: " + ", ".join(absent) + " (run make deps as root)"
        if os.environ.get(VALIDATORS_ENV) == "1":
            pytest.fail(f"{VALIDATORS_ENV}=1 but {why}", pytrace=False)
        pytest.skip(why)


def _installer_copy(tmp_path: Path, extra: str) -> Path:
    scripts = tmp_path / "scripts"
    scripts.mkdir(parents=True)
    shutil.copy(INSTALLER, scripts)
    (scripts / "programs.txt").write_text("sh  dash  code  the shell\n" + extra)
    return scripts / "install-deps.sh"


def test_the_installers_check_names_a_missing_program_and_its_package(tmp_path: Path) -> None:
    bash = require_tool("bash", "bash")
    script = _installer_copy(tmp_path, "vf-no-such-program  coreutils  code  a test\n"
                                       "/no/such/dir/*.rom  ipxe-qemu  qemu  a test\n")
    r = subprocess.run([bash, str(script), "--check"], capture_output=True, text=True,
                       check=False, timeout=60)
    assert r.returncode == 1
    assert "missing vf-no-such-program (package coreutils)" in r.stderr
    assert "missing /no/such/dir/*.rom (package ipxe-qemu)" in r.stderr
    assert "sh " not in r.stderr

    ok = _installer_copy(tmp_path / "ok", "")
    r = subprocess.run([bash, str(ok), "--check"], capture_output=True, text=True, check=False,
                       timeout=60)
    assert (r.returncode, r.stderr) == (0, "")


def test_require_tool_fails_under_its_variable_and_skips_otherwise(
        monkeypatch: pytest.MonkeyPatch) -> None:
    absent = f"vf-absent-{os.getpid()}"
    monkeypatch.setenv("VIRTFLEET_REQUIRE_LAB", "1")
    with pytest.raises(pytest.fail.Exception, match=f"{absent} is not installed \\(nothing\\)"):
        require_tool(absent, "nothing", "VIRTFLEET_REQUIRE_LAB")
    monkeypatch.delenv("VIRTFLEET_REQUIRE_LAB")
    with pytest.raises(pytest.skip.Exception):
        require_tool(absent, "nothing", "VIRTFLEET_REQUIRE_LAB")
    assert require_tool("bash", "bash", "VIRTFLEET_REQUIRE_LAB").endswith("/bash")
