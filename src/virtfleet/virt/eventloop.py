"""The process-wide libvirt event loop.

Keepalive probes, close callbacks and domain events only work when an event implementation is
registered *before* connections are opened and something runs it. libvirt allows one per
process, so this module owns it: the first caller starts a daemon thread that runs the default
implementation for the rest of the process's life.
"""

from __future__ import annotations

import threading

import libvirt

_lock = threading.Lock()
_started = False


def _run() -> None:
    while True:
        # An error from one iteration must not stop the loop every long-lived connection needs.
        try:
            libvirt.virEventRunDefaultImpl()
        except libvirt.libvirtError:
            continue


def ensure_event_loop() -> None:
    global _started
    with _lock:
        if _started:
            return
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run, name="libvirt-events", daemon=True).start()
        _started = True
