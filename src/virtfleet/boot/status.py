"""The `boot status` of an install as its rows are shown: by `virtfleet boot status` and by the
web console's installs page, the same columns in the same words.

Light on purpose (no SQLAlchemy, no typer): `boot status` runs it on the CLI's quick path.
"""

from __future__ import annotations

from datetime import datetime

from virtfleet.boot.text import printable
from virtfleet.inventory.records import InstallRecord

COLUMNS = ("Host", "MAC", "Site", "Pod", "State", "Since (UTC)", "Check", "Refused", "429s",
           "Error")


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value is not None else "-"


def _since(r: InstallRecord) -> datetime | None:
    return getattr(r, f"{r.state}_at")  # type: ignore[no-any-return]


def _check(r: InstallRecord) -> str:
    if r.check_ok is None:
        return "-"
    return "ok" if r.check_ok else f"failed: {r.check_detail}"


def status_row(r: InstallRecord) -> list[str]:
    """One install under COLUMNS; what came from the network is escaped (rows written before
    escaping was stored)."""
    return [printable(str(v)) for v in (
        r.host, r.mac, r.site, r.pod, r.state, _when(_since(r)), _check(r), r.refused,
        r.limited, r.error or "-")]
