"""`virtfleet-ipmitool`: what fence_ipmilan runs instead of ipmitool, so the BMC password never
sits on a command line.

fence_ipmilan builds `ipmitool ... -P PASSWORD ...` (or `-P ''` when it was given no password).
ipmitool blanks its -P argument once it has parsed it, but until then any local user can read
it from /proc/PID/cmdline; sampling `ps` caught it in 2 of 10 fence_ipmilan calls here. So
virtfleet gives fence_ipmilan no password, sets IPMITOOL_PASSWORD in the agent's environment
(readable only by its owner), and points its `ipmitool_path` at this shim, which drops the empty
`-P ''` and runs the real ipmitool with `-E` (password from the environment). It does no IPMI
itself. If a non-empty -P ever reaches it, it refuses rather than pass the password on.
"""

from __future__ import annotations

import os
import sys

TOOL_ENV = "VIRTFLEET_IPMITOOL"
PASSWORD_ENV = "IPMITOOL_PASSWORD"
DEFAULT_TOOL = "/usr/bin/ipmitool"


def rewrite(args: list[str]) -> list[str]:
    """ipmitool's arguments with `-P ''` removed and `-E` added; ValueError if a password is
    on them."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-P":
            if i + 1 < len(args) and args[i + 1] == "":
                i += 2
                continue
            raise ValueError("a password reached the command line; refusing to pass it on")
        if arg[:2] in ("-P", "-f", "-a"):  # inline password, password file, prompt
            raise ValueError(f"option {arg[:2]} is not accepted: the password comes from "
                             f"{PASSWORD_ENV}")
        out.append(arg)
        i += 1
    return ["-E", *out]


def main() -> int:
    tool = os.environ.get(TOOL_ENV, DEFAULT_TOOL)
    if not os.path.isabs(tool):
        sys.stderr.write(f"virtfleet-ipmitool: {TOOL_ENV} must be an absolute path\n")
        return 1
    if PASSWORD_ENV not in os.environ:
        sys.stderr.write(f"virtfleet-ipmitool: {PASSWORD_ENV} is not set\n")
        return 1
    try:
        args = rewrite(sys.argv[1:])
    except ValueError as exc:
        sys.stderr.write(f"virtfleet-ipmitool: {exc}\n")
        return 1
    os.execv(tool, [tool, *args])
    return 1  # not reached: execv replaces this process


if __name__ == "__main__":
    sys.exit(main())
