"""Writing one benchmark's figures into its own marked section of docs/benchmarks.md."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"


def stamp() -> str:
    """Now, as a recorded section's preamble says when its figures were taken."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def report(name: str, preamble: str, text: str, *, quick: bool) -> None:
    """Print the figures; record them too, unless this was a quick (smoke) run."""
    print("\n" + text)
    if not quick:
        record(name, preamble, text)


def record(name: str, preamble: str, text: str) -> None:
    """Replace the section between <!-- NAME:start --> and <!-- NAME:end -> (or append it)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = f"{start}\n## {name}\n\n{preamble}\n\n{text}\n{end}"
    doc = DOC.read_text() if DOC.exists() else "# Benchmarks\n\n"
    if start in doc:
        doc = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _m: section, doc,
                     flags=re.S)
    else:
        doc = doc.rstrip("\n") + "\n\n" + section + "\n"
    DOC.write_text(doc)
    print(f"\nrecorded in {DOC.relative_to(ROOT)}")
