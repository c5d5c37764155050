"""Errors as the API answers them: the status for each kind of VirtfleetError, and the body,
which is always the error's own `as_json()` (`error`, `message`, and the subject: `field`,
`host`, `vm`, `permission`). Bad request bodies and parameters come out the same way, naming
the field as the request names it (`disks[0].path`), never a traceback.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from virtfleet.errors import (
    Busy,
    Cancelled,
    Conflict,
    Forbidden,
    HostUnavailable,
    HypervisorError,
    InvalidInput,
    NotFound,
    OperationTimeout,
    StoreError,
    ToolFailed,
    Unauthorized,
    VirtfleetError,
)
from virtfleet.pydantic_errors import rule

log = logging.getLogger("virtfleet.controller.api")

_STATUS: tuple[tuple[type[VirtfleetError], int], ...] = (
    (Unauthorized, 401), (Forbidden, 403), (InvalidInput, 400), (NotFound, 404),
    (Busy, 409), (Cancelled, 409), (Conflict, 409), (HostUnavailable, 503),
    (OperationTimeout, 504), (HypervisorError, 502), (ToolFailed, 502), (StoreError, 503),
)


def status_of(exc: VirtfleetError) -> int:
    return next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)


def json_response(status: int, body: object, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":"), default=str), status,
                    headers=headers, media_type="application/json")


def error_response(exc: VirtfleetError) -> Response:
    status = status_of(exc)
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="virtfleet"'
    elif isinstance(exc, Busy) or exc.retryable:
        headers["Retry-After"] = "5"
    return json_response(status, exc.as_json(), headers)


def field_path(loc: tuple[Any, ...] | list[Any], kind: str = "") -> str:
    """('body', 'disks', 0, 'path') -> 'disks[0].path'; ('query', 'limit') -> 'limit'; a
    body that is not JSON at all is `body` (its loc is the character where parsing stopped)."""
    if kind == "json_invalid":
        return "body"
    out = ""
    for part in list(loc)[1:] if loc and loc[0] in ("body", "query", "path") else list(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


_RULES = {
    "extra_forbidden": "unknown field: not accepted here",
    "missing": "missing: this field is required",
    "json_invalid": "not valid JSON",
}


def validation_error(exc: RequestValidationError) -> InvalidInput:
    """The first problem pydantic found, as one InvalidInput naming its field."""
    errors = list(exc.errors())
    if not errors:
        return InvalidInput("body", "invalid request")
    first = errors[0]
    words = _RULES.get(str(first.get("type")), rule(first))
    return InvalidInput(field_path(tuple(first.get("loc", ())), str(first.get("type"))), words)


def install(app: FastAPI) -> None:
    """Every error the app can raise, answered as JSON with its status."""

    @app.exception_handler(VirtfleetError)
    async def virtfleet_error(_request: Request, exc: VirtfleetError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> Response:
        err = validation_error(exc)
        body = {**err.as_json(), "errors": [
            {"field": field_path(tuple(e.get("loc", ())), str(e.get("type"))),
             "rule": _RULES.get(str(e.get("type")), rule(e))}
            for e in exc.errors()]}
        return json_response(422, body)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> Response:
        kind = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return json_response(exc.status_code, {"error": kind, "message": str(exc.detail)},
                             dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed: %s: %s", request.method, request.url.path,
                  type(exc).__name__, exc, exc_info=exc)
        return json_response(500, {"error": "internal-error",
                                   "message": "the controller failed on this request; its "
                                   "log has the details"})
