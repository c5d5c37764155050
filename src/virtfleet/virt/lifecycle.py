"""libvirt's lifecycle events in words: what happened to a domain, and how.

The controller follows VIR_DOMAIN_EVENT_ID_LIFECYCLE (virt/host.py) and the events stream says
what libvirt said: `started` / `booted`, `stopped` / `destroyed`, `suspended` / `migrated`.
The words are libvirt's own constant names (VIR_DOMAIN_EVENT_STOPPED_DESTROYED -> stopped,
destroyed), read from the binding, so a newer libvirt's details are named without a change here.
"""

from __future__ import annotations

import libvirt

_EVENTS = ("DEFINED", "UNDEFINED", "STARTED", "SUSPENDED", "RESUMED", "STOPPED", "SHUTDOWN",
           "PMSUSPENDED", "CRASHED")


def _word(constant: str) -> str:
    return constant.lower().replace("_", "-")


def _tables() -> tuple[dict[int, str], dict[tuple[int, int], str]]:
    events: dict[int, str] = {}
    details: dict[tuple[int, int], str] = {}
    for name in _EVENTS:
        number = getattr(libvirt, f"VIR_DOMAIN_EVENT_{name}", None)
        if number is None:
            continue
        events[number] = _word(name)
        prefix = f"VIR_DOMAIN_EVENT_{name}_"
        for attr in dir(libvirt):
            if attr.startswith(prefix) and not attr.endswith("_LAST"):
                details[(number, getattr(libvirt, attr))] = _word(attr.removeprefix(prefix))
    return events, details


EVENT_WORDS, DETAIL_WORDS = _tables()


def lifecycle_words(event: int, detail: int) -> tuple[str, str]:
    """(`started`, `booted`) for a lifecycle callback's numbers; numbers this binding does not
    name are said as such rather than dropped."""
    return (EVENT_WORDS.get(event, f"event-{event}"),
            DETAIL_WORDS.get((event, detail), f"detail-{detail}"))
