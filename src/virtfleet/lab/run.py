"""Running the system tools the lab needs (ip, unshare, nsenter, apt), with one error style."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import virtfleet
from virtfleet.config import QUIET_CLIENT_LOG
from virtfleet.errors import LabError


def run(argv: Sequence[str], what: str, *, timeout: float = 60.0, check: bool = True,
        cwd: Path | None = None, stdin: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `argv` (never through a shell); on failure raise LabError naming `what`."""
    try:
        proc = subprocess.run(
            list(argv), cwd=cwd, env=env, capture_output=True, timeout=timeout, check=False,
            input=stdin, text=True,
        )
    except FileNotFoundError:
        raise LabError(f"{what}: {argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{what}: {argv[0]} did not finish within {timeout:g}s") from None
    if check and proc.returncode != 0:
        detail = last_line(proc.stderr or proc.stdout) or f"exit status {proc.returncode}"
        raise LabError(f"{what}: {detail}")
    return proc


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def daemon_env() -> dict[str, str]:
    """The environment of a lab daemon (or the Python that starts one): ours, plus the path
    virtfleet is imported from (it may not be installed), without the client-side log silencing
    virtfleet set for itself, which libvirtd would take over the log_outputs of its own
    libvirtd.conf (its log would stay empty)."""
    env = dict(os.environ)
    if env.get("LIBVIRT_LOG_OUTPUTS") == QUIET_CLIENT_LOG:
        del env["LIBVIRT_LOG_OUTPUTS"]
    src = str(Path(virtfleet.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env
