"""Writing one benchmark's figures into its own marked section of docs/benchmarks.md."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"


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
