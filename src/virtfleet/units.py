"""Sizes as people read them. Below the services (virt/ words a pool's free space in its errors)
and above them (the CLI's tables), so it sits with neither."""

from __future__ import annotations


def human_bytes(n: int | None) -> str | None:
    """A size as qemu-img and virsh print it: 1.50 GiB."""
    if n is None:
        return None
    for unit, div in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n} B"
