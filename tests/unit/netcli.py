"""Run `virtfleet` with the `net` commands mounted, whether or not cli/main.py has them yet.

Until the lead wires `net` into cli/main.py, tests mount it the same way main.py will; the
command then runs exactly as a user's would (same error handling, exit codes, output).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .cli import Result

_MAIN = (
    "from virtfleet.cli import main, net\n"
    "if not any(g.name == 'net' for g in main.app.registered_groups):\n"
    "    main.app.add_typer(net.app, name='net')\n"
    "main.main()\n"
)


def run_net(db: Path | str, *args: str, timeout: float = 120) -> Result:
    env = {**os.environ, "VIRTFLEET_DB": str(db)}
    env.pop("COLUMNS", None)
    p = subprocess.run([sys.executable, "-c", _MAIN, *args], env=env, capture_output=True,
                       text=True, timeout=timeout, check=False)
    return Result(p.returncode, p.stdout, p.stderr)
