"""A service's field names, worded as the options a user typed.

Services name what was wrong by their request's own fields (`disks[1].size`, `max_downtime_ms`),
so the API can return the field as is. Only the CLI knows which option set a field; each command
gives a table of them and wraps its service call:

    with options_named({"vm": "NAME", "disks": "--disk", "max_downtime_ms": "--max-downtime"}):
        service.create(request)

A field the table does not know is left as the service named it. An error's text may name a
field too, in backquotes ("destroy it first (or give `destroy`)"); the CLI words those as
options as well, in a raised error and in a failed host's row (`reword`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from virtfleet.errors import InvalidInput, VirtfleetError

# `disks[1].size` -> ("disks", "[1]", "size"); `name` -> ("name", "", "")
_PATH = re.compile(r"^(?P<head>[A-Za-z_][A-Za-z0-9_]*)(?P<index>\[\d+\])?(?:\.(?P<rest>.+))?$")
# A field named inside an error's text: `destroy`, `scope.all`
_NAMED = re.compile(r"`([A-Za-z_][^`\s]*)`")


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


def in_text(text: str, flags: Mapping[str, str]) -> str:
    """Each field `text` names in backquotes, worded as its option if the table has one."""
    def option(m: re.Match[str]) -> str:
        found = option_for(m[1], flags)
        return m[0] if found == m[1] else found
    return _NAMED.sub(option, text)


def reword(exc: VirtfleetError, flags: Mapping[str, str]) -> None:
    """Word the fields `exc` names as options, in place: for an error a result holds (a failed
    host's row), which only this command shows."""
    if isinstance(exc, InvalidInput):
        exc.field = option_for(exc.field, flags)
    _reword_text(exc, flags)


def _reword_text(exc: VirtfleetError, flags: Mapping[str, str]) -> None:
    detail = in_text(exc.detail, flags)
    if detail != exc.detail:
        exc.detail = detail
        exc.args = (detail,)
        if isinstance(exc, InvalidInput):
            exc.rule = detail


@contextmanager
def options_named(flags: Mapping[str, str]) -> Iterator[None]:
    """Re-raise a service's error with the fields it names worded as this command's options."""
    try:
        yield
    except InvalidInput as exc:
        new = worded(exc, flags)
        _reword_text(new, flags)
        if new is exc:
            raise
        raise new from None
    except VirtfleetError as exc:
        _reword_text(exc, flags)
        raise
