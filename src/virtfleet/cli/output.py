"""How the CLI prints: virsh-like tables for people, JSON for scripts, failures on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from virtfleet.inventory.records import HostFailure


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Columns padded like `virsh list`: a header, a rule of dashes, then the rows."""
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, v in enumerate(row):
            widths[i] = max(widths[i], len(v))
    def line(vals: Sequence[str]) -> str:
        return (" " + "   ".join(v.ljust(widths[i]) for i, v in enumerate(vals))).rstrip()
    out = [line(list(headers)), "-" * (sum(widths) + 3 * (len(widths) - 1) + 2)]
    out.extend(line(r) for r in cells)
    return "\n".join(out) + "\n"


def fields(pairs: Sequence[tuple[str, object]]) -> str:
    """`virsh nodeinfo` style: 'Label:   value' lines."""
    width = max(len(k) for k, _ in pairs) + 2
    return "".join(f"{(k + ':').ljust(width)}{'-' if v is None else v}\n" for k, v in pairs)


def emit(text: str) -> None:
    sys.stdout.write(text)


def emit_json(data: object) -> None:
    # Indented for a person at a terminal; compact for a pipe, where the C encoder is several
    # times faster on a 15,000-VM fleet.
    # json.dumps, not json.dump: dump() streams through the pure-Python encoder.
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(data, indent=indent, default=str) + "\n")


def emit_encoded_json(encoded: bytes) -> None:
    """JSON already encoded as `json.dumps(data)` writes it: to a pipe as it is, which is what
    emit_json would print there; to a terminal indented like emit_json."""
    out = getattr(sys.stdout, "buffer", None)
    if out is None or sys.stdout.isatty():
        emit_json(json.loads(encoded))
        return
    sys.stdout.flush()
    out.write(encoded)
    out.write(b"\n")
    out.flush()


def warn(message: str) -> None:
    sys.stderr.write(f"virtfleet: {message}\n")


def report_failures(failed: Sequence[HostFailure], *, asked: int | None = None,
                    rows: bool = False) -> None:
    """Name each host that failed, one line each, on stderr; then, for several hosts, one line
    on what the output holds. `asked`: how many hosts were asked; `rows`: the output has a
    row for every host, the failed ones included (so it is complete, not partial)."""
    for f in failed:
        sys.stderr.write(f"virtfleet: {f.host}: {f.kind}: {f.message}\n")
    n = len(failed)
    if not n or asked == 1:
        return  # one host: its line says it all
    count = f"{n} of {asked} host(s)" if asked else f"{n} host(s)"
    if rows:
        tail = ""
    elif asked is not None and n >= asked:
        tail = "; there are no results"
    elif asked is not None:
        tail = f"; the results are from the other {asked - n} only"
    else:
        tail = "; the results are partial"
    sys.stderr.write(f"virtfleet: {count} failed{tail}\n")


def age(observed_at: datetime | None, now: datetime | None = None) -> str:
    """'live' or how old a cached reading is, in the largest sensible unit."""
    if observed_at is None:
        return "live"
    secs = ((now or datetime.now(UTC)) - observed_at).total_seconds()
    if secs < 1:
        return "<1s"
    if secs < 120:
        return f"{secs:.0f}s"
    if secs < 7200:
        return f"{secs / 60:.0f}m"
    return f"{secs / 3600:.0f}h"
