"""The Jinja2 environment for text formats that have no structured library.

Autoescape is off (none of these formats is HTML); safety comes from the fleet file's models,
which hold every interpolated value to a character set the formats do not read specially.
StrictUndefined turns a misspelt variable into an error instead of an empty string.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import jinja2


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("virtfleet.boot", "templates"),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(template: str, **values: Any) -> str:
    return _env().get_template(template).render(**values)
