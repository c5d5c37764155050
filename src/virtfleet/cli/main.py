"""The `virtfleet` command: the quick forms first, else typer; one place that turns errors into
exit codes.

Start-up is most of what a warm `list` or a `--help` costs, so nothing is imported here that
every command does not need: cli/quick.py answers the root's help, `list` and `boot status`
without typer, and cli/app.py (the typer root) imports only the module of the command named.
Both are wrapped by the audit hook (cli/audithook.py), which imports nothing more unless the
command may write.
"""

from __future__ import annotations

import sys

from virtfleet.cli.audithook import audited
from virtfleet.errors import VirtfleetError


@audited
def main() -> None:
    from virtfleet.cli import quick

    argv = sys.argv[1:]
    try:
        code = quick.run(argv)
        if code is None:
            from virtfleet.cli import app

            code = app.run(argv)
    except VirtfleetError as exc:
        sys.stderr.write(f"virtfleet: error: {exc.message}\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("virtfleet: interrupted\n")
        sys.exit(130)
    sys.exit(code)


if __name__ == "__main__":
    main()
