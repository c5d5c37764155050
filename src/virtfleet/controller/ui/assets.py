"""The console's static files (static/), read once and served from memory under /ui/static/.

Only the files listed here are served: a name from the URL is a key into this table, never a
path, so nothing outside static/ can be reached.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

_TYPES = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}
FILES = ("htmx.min.js", "live.js", "screen.js", "serial.js", "spice.js", "ui.css", "vnc.js",
         "xterm.js", "xterm.css")


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str  # also the ?v= the pages link it with, so a new build is fetched at once


def _load() -> dict[str, Asset]:
    root = resources.files("virtfleet.controller.ui") / "static"
    out = {}
    for name in FILES:
        body = (root / name).read_bytes()
        out[name] = Asset(body, _TYPES[name.rsplit(".", 1)[1]],
                          hashlib.sha256(body).hexdigest()[:16])
    return out


ASSETS = _load()
