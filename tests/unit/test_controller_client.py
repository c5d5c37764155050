"""The CLI's own reading of a controller's HTTP answers (controller/client.py), on answers as
bytes: what it accepts, what it refuses as broken, where a /v1/vms answer's rows stand."""

from __future__ import annotations

import json

import pytest

from virtfleet.controller.client import (
    ROWS_HEADER,
    Answer,
    BrokenAnswer,
    parse_answer,
    request_bytes,
    split_rows,
)
from virtfleet.errors import HostUnavailable

ROWS = [{"host": "hv1", "name": "web01", "state": "running", "id": 1, "note": "caf\u00e9"},
        {"host": "hv2", "name": "db01", "state": "shut off", "id": None, "memory_mib": 1.5}]


def answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_an_answer_with_its_length_is_read_with_status_reason_and_headers() -> None:
    got = parse_answer(answer(b'{"a":1}', "Content-Length: 7", "Content-Type: application/json",
                              status="404 Not Found"))
    assert (got.status, got.reason, got.body) == (404, "Not Found", b'{"a":1}')
    assert got.headers["content-type"] == "application/json"


@pytest.mark.parametrize("raw, why", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n", "no end of headers"),
    (answer(b'{"a":', "Content-Length: 7"), "5 bytes of body, Content-Length 7"),
    (answer(b'{"a":1}x', "Content-Length: 7"), "8 bytes of body, Content-Length 7"),
    (answer(b"7\r\n{\"a\":1}\r\n0\r\n\r\n", "Transfer-Encoding: chunked"), "transfer-encoding"),
    (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "status line"),
    (answer(b"", "no colon here"), "header line"),
])
def test_a_broken_answer_is_refused(raw: bytes, why: str) -> None:
    with pytest.raises(BrokenAnswer, match=why):
        parse_answer(raw)


def vms_answer(rows: bytes, span: str | None) -> Answer:
    prefix = b'{"generated_at":"2026-12-01T00:00:00+00:00","failed":[],"vms":'
    headers = {} if span is None else {ROWS_HEADER.lower(): span}
    return Answer(200, "OK", headers, prefix + rows + b"}")


def test_the_rows_are_cut_out_where_the_header_says_and_the_rest_parsed() -> None:
    rows = json.dumps(ROWS).encode()
    start = len(b'{"generated_at":"2026-12-01T00:00:00+00:00","failed":[],"vms":')
    rest, got = split_rows(vms_answer(rows, f"{start}-{start + len(rows)}"))
    assert got == rows and rest == {"generated_at": "2026-12-01T00:00:00+00:00", "failed": []}


@pytest.mark.parametrize("span", [None, "", "3-9", "0-5", "12", "x-y", "60-99999999"])
def test_without_a_right_header_the_whole_answer_is_parsed(span: str | None) -> None:
    """An older controller sends no header; a header that does not point at the rows is not
    trusted: the rows then come parsed, never cut at the wrong place."""
    rest, got = split_rows(vms_answer(json.dumps(ROWS).encode(), span))
    assert got is None and rest["vms"] == ROWS and rest["failed"] == []


def test_a_token_that_would_break_the_request_is_not_sent() -> None:
    assert b"Authorization: Bearer abc\r\n" in request_bytes("GET", "/v1/vms", "abc")
    with pytest.raises(HostUnavailable, match="not printable"):
        request_bytes("GET", "/v1/vms", "abc\r\nX-Evil: 1")
