"""Putting tiny guests on the lab's hypervisors, through the libvirt layer, and watching them boot.

`ensure_guests(state, n)` makes each hypervisor run exactly tiny-<host>-1 .. tiny-<host>-n:
missing ones are defined and started, stopped ones started, ones numbered above n removed.
Other domains on the hosts are never touched.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from virtfleet.config import Timeouts
from virtfleet.errors import LabError, VirtfleetError
from virtfleet.lab import guest
from virtfleet.lab.state import LabHost, LabState

BOOT_TIMEOUT = 120.0


@dataclass
class GuestResult:
    host: str
    name: str
    console_log: Path  # the serial console log, as seen from this machine
    started: bool  # started by this call (False: it was already running)
    boot_seconds: float | None = None  # from start to the marker line; None if not seen

    def as_json(self) -> dict[str, object]:
        return {"host": self.host, "name": self.name, "console_log": str(self.console_log),
                "started": self.started, "boot_seconds": self.boot_seconds}


def outer_log(host: LabHost, name: str) -> Path:
    """The console log path inside the host's namespace, mapped to its private directory."""
    inner = Path(guest.console_log_path(name))
    return host.log_dir / inner.relative_to("/var/log/libvirt")


def _tiny_index(host: LabHost, name: str) -> int | None:
    m = re.fullmatch(rf"tiny-{re.escape(host.name)}-([0-9]+)", name)
    return int(m.group(1)) if m else None


def ensure_guests(state: LabState, per_host: int, wait: bool = True,
                  timeout: float = BOOT_TIMEOUT,
                  progress: Callable[[str], None] = lambda _m: None) -> list[GuestResult]:
    from virtfleet.virt.host import Host

    if per_host < 0:
        raise LabError("guests: --per-host must be 0 or more")
    if not state.hosts:
        raise LabError(f"lab {state.name} has no hypervisors; run virtfleet lab up")
    images = guest.ensure_images(progress) if per_host else None
    results: list[GuestResult] = []
    starts: dict[str, float] = {}
    for host in state.hosts:
        try:
            h = Host.open(host.admin_uri, Timeouts(connect=10.0), label=host.name)
        except VirtfleetError as exc:
            raise LabError(f"guests: {exc.message}") from None
        with h:
            current = {d.name: d for d in h.list_domains()}
            for name, rec in current.items():
                idx = _tiny_index(host, name)
                if idx is not None and idx > per_host:
                    if rec.id is not None:
                        h.destroy_domain(name)
                    h.undefine_domain(name)
                    progress(f"{host.name}: removed {name}")
            for n in range(1, per_host + 1):
                name = guest.guest_name(host.name, n)
                dom = current.get(name)
                log = outer_log(host, name)
                if dom is not None and dom.state == "running":
                    results.append(GuestResult(host.name, name, log, started=False))
                    continue
                if dom is None:
                    assert images is not None
                    h.define_domain(guest.domain_xml(name, images))
                log.unlink(missing_ok=True)  # so the marker we wait for is from this boot
                h.start_domain(name)
                starts[name] = time.monotonic()
                results.append(GuestResult(host.name, name, log, started=True))
                progress(f"{host.name}: started {name}")
    if wait:
        _wait_for_boot(results, starts, timeout)
    return results


def _wait_for_boot(results: list[GuestResult], starts: dict[str, float], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(results)
    while pending:
        now = time.monotonic()
        for r in list(pending):
            if guest.seen_marker(r.console_log):
                r.boot_seconds = now - starts[r.name] if r.name in starts else None
                pending.remove(r)
        if not pending:
            return
        if now >= deadline:
            names = ", ".join(r.name for r in pending)
            raise LabError(f"guests: no '{guest.MARKER}' on the console of {names} within "
                           f"{timeout:g}s; see {pending[0].console_log}")
        time.sleep(0.1)
