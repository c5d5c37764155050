"""The README's quick start, run on the session lab as a new user would run it after `make demo`,
so that its commands cannot rot.

Every command of the quick start's `sh` blocks is run, in order, with the demo lab's names
(`lab-pod1`, `lab-hv1`, its state and image directories) mapped to the session lab's. Each must
exit 0, or with the code its comment promises (`refused (exit 4)`). `make demo` stands for the
demo's setup on the lab (apply its fleet file, make each pod's pool); `serve &` ... `kill %1`
run a real controller; `vm console` is driven through a pseudo-terminal. Only `lab down` is
left out: the session lab is the fixture's to take down. What the commands made is removed.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.conftest import LabFixture
from tests.unit.cli import Result, run, running_controller
from virtfleet.lab import guest
from virtfleet.lab.names import DEFAULT_LAB_ROOT

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
CLI = ".venv/bin/virtfleet"
DEMO_LAB = "lab"  # the name `make demo` gives its lab, which the README's commands use


@dataclass
class Command:
    words: list[str]
    background: bool = False
    exit_code: int = 0  # what the README's comment promises


def quickstart(readme: str) -> list[Command]:
    """The commands of the quick start's `sh` blocks, in order (`a; b` is two, `a &` runs in
    the background), each with the exit code its comment promises."""
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    out: list[Command] = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            promised = re.search(r"#.*\brefused \(exit (\d)\)", line)
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&")
            lexer.whitespace_split = True
            current: list[str] = []
            for word in [*lexer, ";"]:
                if word in (";", "&"):
                    if current:
                        out.append(Command(current, background=word == "&",
                                           exit_code=int(promised.group(1)) if promised else 0))
                    current = []
                else:
                    current.append(word)
    return out


def localize(word: str, lab: LabFixture) -> str:
    """A word of the README, for the session lab instead of the demo's lab `lab`."""
    word = word.replace(f"{DEFAULT_LAB_ROOT / DEMO_LAB}/", f"{lab.lab.state_dir}/")
    word = word.replace(f"{guest.DEFAULT_CACHE}/", f"{guest.cache_dir()}/")
    return re.sub(rf"\b{DEMO_LAB}-(pod|hv)", rf"{lab.name}-\1", word)


@dataclass
class Session:
    """The shell the reader types into: a store, exported variables, a background job."""

    lab: LabFixture
    db: Path
    env: dict[str, str] = field(default_factory=dict)
    jobs: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    ran: list[str] = field(default_factory=list)

    def cli(self, *args: str, timeout: float = 900) -> Result:
        return run(self.db, *args, env=self.env, timeout=timeout)


def _ok(r: Result, what: str, code: int = 0) -> Result:
    assert r.code == code, f"{what}: exit {r.code}, wanted {code}\n{r.out}\n{r.err}"
    return r


def make_demo(s: Session) -> None:
    """What `make demo` does before its own VMs: the lab's fleet file applied (inventory and
    networks) and each pod's storage made a pool."""
    _ok(s.cli("apply", "-f", str(s.lab.fleet_file)), "apply")
    _ok(s.cli("pool", "apply-pod", "--all"), "pool apply-pod")


def leases_show(s: Session, args: list[str], names: list[str]) -> None:
    """`net dhcp-leases`: the README says the clones show up a few seconds later; wait for it."""
    deadline = time.monotonic() + 180
    while True:
        r = _ok(s.cli(*args, "--json"), " ".join(args))
        got = {x["hostname"] for x in r.json()}
        if set(names) <= got or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert set(names) <= got, f"no lease for {sorted(set(names) - got)}: {r.out}"
    _ok(s.cli(*args), " ".join(args))  # and the table a reader sees


def console(s: Session, args: list[str], name: str, ask: str = "") -> str:
    """`vm console NAME` in a pseudo-terminal: the guest's shell answers `hostname` with the
    name the clone was given, then `ask` if given; Ctrl+] leaves with exit 0. Returns what
    the terminal showed."""
    env = {**os.environ, "VIRTFLEET_DB": str(s.db), **s.env}
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI on the terminal
        os.execve(sys.executable, [sys.executable, "-m", "virtfleet.cli.main", *args], env)
    seen = b""

    def until(text: bytes, seconds: float) -> bool:
        nonlocal seen
        deadline = time.monotonic() + seconds
        while text not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(fd, 4096)
                except OSError:  # the CLI has gone
                    return text in seen
        return text in seen

    try:
        assert until(b"Escape character", 60), seen.decode(errors="replace")
        for _ in range(20):  # the shell may still be starting: ask until it answers
            os.write(fd, b"hostname\r")
            if until(f"\n{name}\r".encode(), 3):
                break
        assert f"\n{name}\r".encode() in seen, seen.decode(errors="replace")
        if ask:
            os.write(fd, f"{ask}; echo asked\r".encode())
            assert until(b"\nasked\r", 30), seen.decode(errors="replace")
        os.write(fd, b"\x1d")
        until(b"\0", 10)  # drain until it exits
    finally:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == 0:  # still attached: this test failed above; do not leave it behind
            os.kill(pid, signal.SIGTERM)
            _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, seen.decode(errors="replace")
    return seen.decode(errors="replace")


def step(s: Session, cmd: Command, clones: list[str]) -> None:
    words = [localize(w, s.lab) for w in cmd.words]
    s.ran.append(" ".join(words))
    if words == ["make", "demo"]:
        make_demo(s)
    elif words[0] == "export":
        key, _, value = words[1].partition("=")
        s.env[key] = value
    elif words == ["kill", "%1"]:
        s.jobs.close()  # SIGTERM to the controller, then wait for it
    elif words[0] != CLI:
        raise AssertionError(f"the quick start runs {words[0]!r}; teach this test about it")
    elif words[1:] == ["serve"]:
        assert cmd.background, "serve without & would never return"
        s.jobs.enter_context(running_controller(s.db))
    elif words[1:3] == ["lab", "down"]:
        s.ran.pop()  # the session lab is the fixture's to take down
    elif words[1:3] == ["vm", "clone"]:
        r = _ok(s.cli(*words[1:], "--json"), " ".join(words))
        clones.extend(c["name"] for c in r.json())
    elif words[1:3] == ["net", "dhcp-leases"]:
        leases_show(s, words[1:], clones)
    elif words[1:3] == ["vm", "console"]:
        console(s, words[1:], words[3])
    else:
        _ok(s.cli(*words[1:]), " ".join(words), cmd.exit_code)


@pytest.fixture
def session(lab: LabFixture, tmp_path: Path) -> Iterator[Session]:
    s = Session(lab, tmp_path / "store.db")
    pools_before = {(h.name, p) for h in lab.hosts for p in _pools(s, h.name)}
    try:
        yield s
    finally:
        s.jobs.close()
        _clean(s, pools_before)


def _pools(s: Session, host: str) -> set[str]:
    r = s.cli("pool", "list", "--host", host, "--json")
    return {p["name"] for p in r.json()} if r.code == 0 else set()


def _clean(s: Session, pools_before: set[tuple[str, str]]) -> None:
    """Remove what the quick start made: its VMs and their disks, the template, and the pods'
    pools if they were not there before."""
    names = [vm["name"] for vm in s.cli("list", "--json").json()]
    made = [n for n in names if n.startswith("web-")]
    for vm in sorted(made, key=lambda n: n in ("web-base", "web-tpl")):
        if vm == "web-tpl":
            continue
        s.cli("vm", "destroy", vm)
        s.cli("vm", "undefine", vm, "--remove-all-storage", "--remove-snapshots")
    if "web-tpl" in names:
        s.cli("template", "delete", "web-tpl")
    for h in s.lab.hosts:
        for pool in _pools(s, h.name) - {p for host, p in pools_before if host == h.name}:
            s.cli("pool", "destroy", pool, "--host", h.name)
            s.cli("pool", "undefine", pool, "--host", h.name)
    left = [vm["name"] for vm in s.cli("list", "--json").json() if vm["name"].startswith("web-")]
    assert not left, f"the quick start's VMs were not all removed: {left}"


def test_readme_quick_start_runs_on_the_lab(session: Session) -> None:
    commands = quickstart(README.read_text())
    assert commands[0].words == ["make", "demo"]
    clones: list[str] = []
    for cmd in commands:
        step(session, cmd, clones)
    assert clones == ["web-1", "web-2", "web-3"]
    # Every line was run but `lab down`, which is the session fixture's.
    assert len(session.ran) == len(commands) - 1

    # What the seal was for: the template's machine-id is empty, so each clone made its own at
    # first boot, and none has the source VM's.
    pod_dir = Path(session.lab.state.pods[f"{session.lab.name}-pod1"])
    assert machine_id(pod_dir / "web-tpl.qcow2", session.db.parent) == ""
    base = machine_id(pod_dir / "web-base.qcow2", session.db.parent)
    ids = set()
    for vm in clones:
        shown = console(session, ["vm", "console", vm], vm,
                        ask="mount /dev/vda /mnt; cat /mnt/etc/machine-id; umount /mnt")
        ids |= set(re.findall(r"^([0-9a-f]{32})\r?$", shown, re.M))
    assert len(ids) == len(clones) and base not in ids and re.fullmatch("[0-9a-f]{32}", base)


def machine_id(image: Path, work: Path) -> str:
    """/etc/machine-id of an ext4-on-the-whole-disk image, read with debugfs from a raw copy."""
    raw = work / f"{image.stem}.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(image), str(raw)],
                   check=True, timeout=120)
    try:
        out = subprocess.run(["debugfs", "-R", "cat /etc/machine-id", str(raw)],
                             capture_output=True, text=True, check=True, timeout=60).stdout
    finally:
        raw.unlink()
    return out.strip()


def test_quick_start_parsing() -> None:
    text = """intro
## Quick start
```sh
make demo   # a comment; with & and ;
.venv/bin/virtfleet a 'b c' \\
    d; .venv/bin/virtfleet e &
.venv/bin/virtfleet f   # refused (exit 4): why
```
## Next
```sh
not this
```
"""
    got = [(c.words, c.background, c.exit_code) for c in quickstart(text)]
    assert got == [(["make", "demo"], False, 0),
                   ([CLI, "a", "b c", "d"], False, 0), ([CLI, "e"], True, 0),
                   ([CLI, "f"], False, 4)]
