"""A service's field names, worded as the options a user typed.

Services name what was wrong by their request's own fields (`disks[1].size`, `max_downtime_ms`),
so the API can return the field as is. Only the CLI knows which option set a field; each command
gives a table of them and wraps its service call:

    with options_named({"vm": "NAME", "disks": "--disk", "max_downtime_ms": "--max-downtime"}):
        service.create(request)

A field the table does not know is left as the service named it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from virtfleet.errors import InvalidInput

# `disks[1].size` -> ("disks", "[1]", "size"); `name` -> ("name", "", "")
_PATH = re.compile(r"^(?P<head>[A-Za-z_][A-Za-z0-9_]*)(?P<index>\[\d+\])?(?:\.(?P<rest>.+))?$")


def option_for(field: str, flags: Mapping[str, str]) -> str:
    """`field` as the command line names it: the whole field if the table has it, else its
    first part's option followed by the rest (`disks[1].size` -> `--disk size`)."""
    if field in flags:
        return flags[field]
    m = _PATH.match(field)
    if m is None or m["head"] not in flags:
        return field
    option = flags[m["head"]]
    return f"{option} {m['rest']}" if m["rest"] else option


def worded(exc: InvalidInput, flags: Mapping[str, str]) -> InvalidInput:
    option = option_for(exc.field, flags)
    if option == exc.field:
        return exc
    out = InvalidInput(option, exc.rule, host=exc.host, vm=exc.vm)
    out.__cause__ = exc.__cause__
    return out


@contextmanager
def options_named(flags: Mapping[str, str]) -> Iterator[None]:
    """Re-raise a service's bad-input error with the field worded as this command's option."""
    try:
        yield
    except InvalidInput as exc:
        new = worded(exc, flags)
        if new is exc:
            raise
        raise new from None
