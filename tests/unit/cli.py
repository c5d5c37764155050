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


@contextmanager
def running_controller(db: Path, interval: float = 1.0) -> Iterator[subprocess.Popen[str]]:
    """`virtfleet serve` on `db`, yielded once it has registered; stopped with SIGTERM after."""
    from virtfleet.inventory.store import Store

    log = db.with_suffix(".serve.log")  # a file, not a pipe nobody drains
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "virtfleet.cli.main", "serve", "--interval", str(interval)],
            env={**os.environ, "VIRTFLEET_DB": str(db)}, stdout=out, stderr=subprocess.STDOUT,
            text=True)
    store = Store(f"sqlite:///{db}")
    try:
        deadline = time.monotonic() + 60
        while (rec := store.controller()) is None or rec.pid != proc.pid:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "controller did not register"
            time.sleep(0.2)
        yield proc
    finally:
        store.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
