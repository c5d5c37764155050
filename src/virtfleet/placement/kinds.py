"""The placement words the CLI needs at import time, kept free of pydantic (a warm `list`
should not pay for importing the placement models)."""

from __future__ import annotations

from enum import StrEnum


class Spread(StrEnum):
    """Which hosts win: `spread` the emptiest (room to grow, less blast radius), `pack` the
    fullest that still fit (whole hypervisors left free for big VMs or maintenance)."""

    spread = "spread"
    pack = "pack"


class Scope(StrEnum):
    host = "host"
    pod = "pod"
