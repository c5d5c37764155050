"""Run the real `virtfleet` command in a subprocess, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
