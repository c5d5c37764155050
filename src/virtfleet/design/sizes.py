"""Sizes as operators write them: 32G, 512M, 80GiB, 1T; a bare number is MiB, like virt-install."""

from __future__ import annotations

import re

from virtfleet.errors import InvalidInput

_UNITS = {
    "": 2**20, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20,
    "mib": 2**20, "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_bytes(field: str, text: str, *, default_unit: str = "") -> int:
    """Bytes in `text`; binary units (G = GiB), as virt-install and qemu-img read them."""
    m = _SIZE_RE.match(text)
    if not m:
        raise InvalidInput(field, f"{text!r} is not a size such as 32G, 512M or 80GiB")
    number, unit = m.group(1), (m.group(2) or default_unit).lower()
    if unit not in _UNITS:
        raise InvalidInput(field, f"unknown unit {m.group(2)!r} (use K, M, G or T)")
    value = int(float(number) * _UNITS[unit])
    if value <= 0:
        raise InvalidInput(field, "must be greater than zero")
    return value


def parse_mib(field: str, text: str) -> int:
    """A memory size in MiB (a bare number is MiB); must be whole MiB."""
    size = parse_bytes(field, text)
    if size % 2**20:
        raise InvalidInput(field, f"{text!r} is not a whole number of MiB")
    return size // 2**20
