"""Text from the network, made safe to store and show: one line, no control characters.

A callback's `error`, a URL path, a host check's message can carry ESC sequences, carriage
returns or bidirectional overrides that would rewrite an operator's terminal or forge log
lines. They are escaped (`\\x1b`, `\\u202e`) where they are stored and again where shown.
"""

from __future__ import annotations

MAX_LINE = 500


def printable(text: str) -> str:
    """`text` with every character that is not printable (control, format, line and paragraph
    separators, unassigned) written as a Python-style escape."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else
                       f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def one_line(text: str, limit: int = MAX_LINE) -> str:
    """Whitespace runs (newlines included) as one space, the rest escaped, at most `limit`."""
    flat = printable(" ".join(text.split()))
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."
