"""How a CLI talks to a running controller: found through the store, asked over loopback HTTP."""

from __future__ import annotations

import json
import socket
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any

from virtfleet.errors import HostUnavailable, NotFound
from virtfleet.inventory.records import ControllerRecord

# A controller heartbeats every 5 s; three missed beats and it is presumed gone.
STALE_AFTER = 15.0


def is_live(rec: ControllerRecord | None, at: datetime | None = None) -> bool:
    """Registered, heart-beating, and reachable from here.

    The API listens on loopback only, so a controller registered by another machine (a shared
    PostgreSQL store) is not ours to ask: its 127.0.0.1 is not this machine's, and sending the
    token there would hand it to whatever listens on that port here.
    """
    if rec is None or rec.hostname != socket.gethostname():
        return False
    age = ((at or datetime.now(UTC)) - rec.heartbeat_at).total_seconds()
    return age < STALE_AFTER


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: it would carry the bearer token somewhere else."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def registration_from_sqlite(db_url: str) -> ControllerRecord | None:
    """Read the controller row of a SQLite store with the stdlib driver, without SQLAlchemy.

    Importing SQLAlchemy costs a third of a second, more than the whole warm query otherwise
    takes. Raises sqlite3.Error when the file is missing or not migrated; callers then ask the
    Store, which knows how to create and migrate it. The columns are those of tables.Controller.
    """
    path = db_url.removeprefix("sqlite:///")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
        row = conn.execute("SELECT url, token, pid, hostname, started_at, heartbeat_at "
                           "FROM controller WHERE id = 1").fetchone()
    if row is None:
        return None
    def utc(text: str) -> datetime:  # stored naive UTC, as tables.UTCDateTime writes it
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    return ControllerRecord(url=row[0], token=row[1], pid=int(row[2]), hostname=row[3],
                            started_at=utc(row[4]), heartbeat_at=utc(row[5]))


class ControllerClient:
    def __init__(self, rec: ControllerRecord, timeout: float = 30.0) -> None:
        self.rec = rec
        self.timeout = timeout

    def _call(self, method: str, path: str, params: dict[str, str | None] | None = None) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v})
        url = f"{self.rec.url}/v1/{path}" + (f"?{query}" if query else "")
        req = urllib.request.Request(url, method=method,
                                     headers={"Authorization": f"Bearer {self.rec.token}"})
        try:
            with _OPENER.open(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = _detail(exc)
            if exc.code == 404:
                raise NotFound(detail) from None
            raise HostUnavailable(f"controller at {self.rec.url}: HTTP {exc.code}: {detail}") \
                from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise HostUnavailable(f"controller at {self.rec.url} did not answer ({exc})") \
                from None

    def vms(self, **filters: str | None) -> dict[str, Any]:
        return dict(self._call("GET", "vms", filters))

    def sync(self) -> dict[str, Any]:
        return dict(self._call("POST", "sync"))


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read()).get("detail", exc.reason))
    except (ValueError, OSError):
        return str(exc.reason)
