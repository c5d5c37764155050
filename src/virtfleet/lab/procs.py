"""Finding and ending the lab's processes.

A lab process is found two ways, both of which prove ownership: it lives in one of the lab's
network namespaces (`ip netns pids`), or its command line names a file under the lab's state
directory (libvirtd and virtlogd are started with `-f`/`-p` pointing there, so even one that
lost its namespace is still recognisable). A bare pid from a state file is never trusted alone:
pids are reused.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")


def alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie (a zombie has already stopped running)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may itself contain ')'.
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def stopped(pid: int) -> bool:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] in ("T", "t")


def cmdline(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def pids_mentioning(directory: Path, programs: tuple[str, ...]) -> list[int]:
    """Processes running one of `programs` with an argument that is a path inside `directory`.

    Only the lab's own programs count: someone's `tail -f` of a lab log is not the lab's.
    """
    prefix = str(directory).rstrip("/") + "/"
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        args = cmdline(int(entry.name))
        if not args or Path(args[0]).name not in programs:
            continue
        if any(arg.startswith(prefix) for arg in args[1:]):
            found.append(int(entry.name))
    return found


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _signal(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            continue


def _wait_gone(pids: set[int], seconds: float) -> set[int]:
    deadline = time.monotonic() + seconds
    left = {p for p in pids if alive(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = {p for p in left if alive(p)}
    return left


def terminate(pids: Iterable[int], grace: float = 3.0) -> set[int]:
    """SIGTERM, then SIGKILL after `grace` seconds; return the pids that still would not die."""
    todo = {p for p in pids if alive(p)}
    if not todo:
        return set()
    _signal(todo, signal.SIGCONT)  # a SIGSTOPped daemon cannot act on SIGTERM
    _signal(todo, signal.SIGTERM)
    left = _wait_gone(todo, grace)
    _signal(left, signal.SIGKILL)
    return _wait_gone(left, 5.0)
