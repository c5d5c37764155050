"""Rules for names that reach hypervisors, files and XML.

One place, so every command refuses the same bad names with the same words.
"""

from __future__ import annotations

import re

from virtfleet.errors import InvalidInput

# A DNS-style name: labels of letters, digits and '-', joined by '.', underscores allowed inside a
# label because real estates use them. Nothing a shell, a path or XML would read specially.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_NAME_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_ANY_LENGTH = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?$")  # _NAME_RE's letters
MAX_NAME = 253
MAX_LABEL = 63  # a DNS label's limit: a hypervisor's or a VM's name may become a host name


def check_name(field: str, value: object) -> str:
    """Return `value` if it is a valid object name, else raise InvalidInput naming `field`."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(field, "must be a non-empty name")
    if len(value) > MAX_NAME:
        raise InvalidInput(field, f"must be at most {MAX_NAME} characters (got {len(value)})")
    if not _NAME_RE.match(value):
        longest = max(len(part) for part in value.split("."))
        if longest > MAX_LABEL and _ANY_LENGTH.match(value) and ".." not in value:
            raise InvalidInput(field, f"each dot-separated part of a name is at most "
                               f"{MAX_LABEL} characters (this one has a part of {longest})")
        raise InvalidInput(
            field,
            f"{value!r} is not a valid name: use letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit",
        )
    return value
