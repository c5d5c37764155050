"""HTML from Jinja2 templates (templates/), autoescaped: every value a page shows (a VM name with
`<script>` in it, an error message) is text, never markup. No HTML is built in Python.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.responses import HTMLResponse

from virtfleet.controller.ui.assets import ASSETS

# Scripts and styles only from the controller itself; no inline script, no eval (htmx is
# configured without it in base.html), no framing by other sites.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
# The serial console's page only: xterm.js sizes and colours its rows through <style> elements
# it makes at run time, which 'self' alone refuses. Scripts stay 'self' only, and every value
# the page shows is still escaped, so no markup can bring a style of its own.
TERMINAL_CSP = CSP.replace("style-src 'self';", "style-src 'self' 'unsafe-inline';")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
           "X-Frame-Options": "DENY"}


def _mib(value: object) -> str:
    n = int(value) if isinstance(value, (int, float)) else 0
    return f"{n / 1024:.1f} GiB" if n >= 1024 else f"{n} MiB"


def _ago(value: object) -> str:
    """An ISO time as how long ago (the age of the controller's data)."""
    if not isinstance(value, str) or not value:
        return "now"
    seconds = (datetime.now(UTC) - datetime.fromisoformat(value)).total_seconds()
    if seconds < 60:
        return f"{max(0, int(seconds))} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    return f"{int(seconds // 3600)} h"


def _asset(name: str) -> str:
    return f"/ui/static/{name}?v={ASSETS[name].etag}"


def _epoch(value: object) -> str:
    """Seconds since the epoch (libvirt's snapshot creation time) as a UTC time."""
    if not isinstance(value, int) or value <= 0:
        return ""
    return f"{datetime.fromtimestamp(value, UTC):%Y-%m-%d %H:%M:%S}"


ENV = Environment(loader=PackageLoader("virtfleet.controller.ui", "templates"),
                  autoescape=True, undefined=StrictUndefined, trim_blocks=True,
                  lstrip_blocks=True)
ENV.filters["mib"] = _mib
ENV.filters["ago"] = _ago
ENV.filters["epoch"] = _epoch
ENV.globals["asset"] = _asset


def page(template: str, code: int = 200, headers: dict[str, str] | None = None,
         **context: Any) -> HTMLResponse:
    """The template rendered with `context`, answered with HTTP status `code`."""
    html = ENV.get_template(template).render(**context)
    return HTMLResponse(html, code, headers={**HEADERS, **(headers or {})})
