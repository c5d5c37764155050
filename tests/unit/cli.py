"""Run the real `virtfleet` command in a subprocess, as a user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run(db: Path | str, *args: str, env: dict[str, str] | None = None,
        timeout: float = 120) -> Result:
    full_env = {**os.environ, "VIRTFLEET_DB": str(db), **(env or {})}
    full_env.pop("COLUMNS", None)
    p = subprocess.run([sys.executable, "-m", "virtfleet.cli.main", *args], env=full_env,
                       capture_output=True, text=True, timeout=timeout, check=False)
    return Result(p.returncode, p.stdout, p.stderr)


def serve_log(db: Path) -> Path:
    return db.with_suffix(".serve.log")


def start_controller(db: Path, *args: str, interval: float = 1.0,
                     module: str = "virtfleet.cli.main",
                     env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`virtfleet serve` on `db`, its socket in a private directory beside the store, its
    output in serve_log(db) (a file, not a pipe nobody drains)."""
    with serve_log(db).open("a") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module, "serve", "--interval", str(interval), *args],
            env={**os.environ, "VIRTFLEET_DB": str(db), "VIRTFLEET_RUN_DIR": str(run_dir(db)),
                 **(env or {})},
            stdout=out, stderr=subprocess.STDOUT, text=True)


def run_dir(db: Path) -> Path:
    return db.parent / "run"


def wait_registered(db: Path, proc: subprocess.Popen[str]) -> None:
    from virtfleet.inventory.store import Store

    with Store(f"sqlite:///{db}") as store:
        deadline = time.monotonic() + 60
        while (rec := store.controller()) is None or rec.pid != proc.pid:
            assert proc.poll() is None, serve_log(db).read_text()
            assert time.monotonic() < deadline, "controller did not register"
            time.sleep(0.1)


@contextmanager
def running_controller(db: Path, *args: str, interval: float = 1.0,
                       module: str = "virtfleet.cli.main",
                       env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """`virtfleet serve` on `db`, yielded once it has registered; stopped with SIGTERM after."""
    proc = start_controller(db, *args, interval=interval, module=module, env=env)
    try:
        wait_registered(db, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a test may have stopped it
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
