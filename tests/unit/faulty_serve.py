"""`virtfleet serve` whose store fails on demand: the fault injector for the controller tests.

    python -m tests.unit.faulty_serve serve ...      (with VIRTFLEET_TEST_FAULT=/path/to/file)

It runs the real CLI in a real process; the only change is that Store.hypervisors (read by the
maintenance worker on every pass) misbehaves while the file exists, as its content says:
  raise   raise RuntimeError, an error virtfleet never expects (a bug, a driver surprise)
  exit    raise SystemExit, which ends only the thread it is raised in: the worker dies
  hang    block until the file is removed: the worker is stuck
Nothing of this is in src/: production code has no test hooks.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from virtfleet.cli.main import main
from virtfleet.inventory.records import HostRecord
from virtfleet.inventory.store import Store

FAULT_ENV = "VIRTFLEET_TEST_FAULT"


def install(trigger: Path) -> None:
    real = Store.hypervisors

    def faulty(self: Store, *args: object, **kwargs: object) -> list[HostRecord]:
        mode = trigger.read_text().strip() if trigger.exists() else ""
        if mode == "raise":
            raise RuntimeError("injected fault: the store read blew up")
        if mode == "exit":
            raise SystemExit("injected fault: this thread ends here")
        if mode == "hang":
            while trigger.exists():
                time.sleep(0.1)
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    Store.hypervisors = faulty  # type: ignore[method-assign]


if __name__ == "__main__":
    install(Path(os.environ[FAULT_ENV]))
    main()
