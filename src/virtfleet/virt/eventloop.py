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
        # Errors here are transient (a callback raised); keep the loop alive for every host.
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
        # libvirt prints errors to stderr by default; virtfleet reports them itself.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        threading.Thread(target=_run, name="libvirt-events", daemon=True).start()
        _started = True
